"""Where an SAE run's activations come from: the primary model, or files a user brought.

A run picks its source once, from its settings: :func:`plan_source` before any work (the
plan and, where known, the input size, to check the settings against), then
:func:`open_source` once the workdir is locked. Everything after that asks the source:

- ``d_in``; ``origin``, ``held_out`` and ``batch_name`` (how messages name where the
  activations came from, what the evaluation reads and the loop's batches);
- ``record``: check the source against the one the run started on and write ``run.json``;
- ``feed``: the :class:`Feed` the training loop (:mod:`apps.training.engine`) reads its
  blocks of batches from;
- ``evaluate``, ``result_fields``: the held-out evaluation and what ``metrics.json``
  records of the source; ``shared_evaluation``: what the members of a sweep can share
  of the evaluation (the primary's pooled vectors, harvested once);
- ``analysis_inputs``, ``analyze``: the analysis of a finished run.

:class:`PrimarySource` harvests blocks of primary batches (:mod:`bridge.harvest_blocks`)
and evaluates with the primary (loss recovered and the other downstream figures).
:class:`FileSource` reads rows of ``--activations`` (:mod:`sae_jax.activation_files`):
``--eval_rows`` rows held out by seed (:mod:`sae_jax.row_split`), the others read block
by block in each epoch's seeded order of 256-row pieces, in a worker thread one block
ahead; every row is checked finite before anything is written. It evaluates what needs
no model (:mod:`sae_jax.reconstruction_metrics`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from apps.runs.setup import (
    RunInputs,
    check_same_activations,
    demo_primary_config,
    estimate_plan,
    known_input_dim,
    load_inputs,
    plan_run,
    record_run,
)
from runkit.prefetch import made_ahead
from runkit.run_dir import RunDir
from runkit.sharding import block_sharding, from_own_rows
from sae_jax.activation_files import ActivationFiles, open_activations
from sae_jax.config import SAETrainConfig
from sae_jax.row_split import EpochOrder, RowSplit, evaluation_split

BLOCK_ROWS = 4096  # rows read from files per block (as many as a harvest block holds)
FILE_BLOCKS_IN_FLIGHT = 2


@dataclass(frozen=True)
class FedBlock:
    """A block of batches on the devices: ``inputs``, the arrays the chunk reads its
    batches from (``feed.batch_rows(*inputs, i)``), from global batch ``first_batch``."""

    first_batch: int
    inputs: tuple


@dataclass(frozen=True)
class Feed:
    """What the loop reads: blocks of ``batches_per_block`` batches from any global batch
    on (``blocks(first_batch)``, a closable iterator); ``batch_rows(*inputs, i)``, traced in
    the chunk, gives batch ``i`` of a block as ``(B, d_in)`` float32.
    ``blocks_in_flight``: how many blocks the loop may hand the device before it waits for
    the oldest to be done (None: no bound)."""

    batches_per_block: int
    batch_rows: Callable
    blocks: Callable[[int], Iterator[FedBlock]]
    blocks_in_flight: int | None = None


def plan_source(cfg: SAETrainConfig, primary_dir, concepts):
    """``(plan, d_in or None)`` from the data alone, before any work: the run's plan and,
    where already known, the size of its inputs (to check the settings against)."""
    if cfg.activations:
        source = FileSource.open(cfg)
        return source.plan(cfg), source.d_in
    return estimate_plan(cfg, primary_dir, concepts), known_input_dim(primary_dir)


# Rows of a file run's buffer at most (float32): the primary's default buffer of 819,200
# rows holds 64-512-wide vectors; a model's 4096-wide residual stream would need 13 GiB.
FILE_BUFFER_BYTES = 1 << 30


def implied_settings(cfg: SAETrainConfig, unset: frozenset, primary_dir=None) -> SAETrainConfig:
    """``cfg`` with the settings the user left unset (``unset``: their names) chosen to fit
    what the run reads: the architecture's required settings (no resampling where AuxK
    replaces it, Matryoshka's nested groups) once the input size is known, and for
    ``--activations`` the whole file each epoch, rows read 1,024 at a time, a buffer of at
    most the training rows and 1 GiB, and training from half a buffer on. The defaults
    themselves stay the original SplatNLP recipe's."""
    if not unset:
        return cfg
    changes = {}
    d_in = None
    if cfg.activations:
        files = open_activations(cfg.activations)
        d_in = files.d_in
        train_rows = files.num_rows - min(int(cfg.eval_rows), files.num_rows // 10)
        per_row = 4 * d_in  # the buffer's float32 rows (bfloat16 would hold twice as many)
        buffer_size = min(cfg.buffer_size, max(train_rows, 1),
                          max(FILE_BUFFER_BYTES // per_row, cfg.sae_batch_size))
        changes.update(data_fraction=1.0, primary_batch_size=1024,
                       buffer_size=max(buffer_size, cfg.sae_batch_size))
        changes["min_buffer"] = min(cfg.min_buffer, changes["buffer_size"] // 2)
    elif primary_dir is not None:
        if (Path(primary_dir) / "config.json").is_file():  # else open_settings says so
            d_in = known_input_dim(primary_dir)
    else:  # the demo primary, trained first: its width is in its settings
        d_in = demo_primary_config(cfg).hidden_dim
    d_sae = features_of(cfg, d_in)
    if d_sae:
        changes.update(cfg.arch.required_settings(d_sae))
    picked = {k: v for k, v in changes.items() if k in unset}
    return dataclasses.replace(cfg, **picked) if picked else cfg


def features_of(cfg: SAETrainConfig, d_in: int | None) -> int | None:
    """The number of features ``cfg`` gives inputs of ``d_in`` (None: not known yet)."""
    return None if d_in is None else int(d_in * cfg.expansion_factor)


def open_source(cfg: SAETrainConfig, workdir: Path, concepts, *, primary_dir=None,
                primary_cfg=None, devices=None):
    """The run's source, ready to train on (the primary loaded, or every row of the files
    checked finite)."""
    if cfg.activations:
        source = FileSource.open(cfg)
        print(f"checking the activations for NaN and Inf: {source.files.describe()}")
        source.files.check_finite()
        return source
    return PrimarySource(load_inputs(cfg, workdir, concepts, primary_dir=primary_dir,
                                     primary_cfg=primary_cfg, devices=devices))


class PrimarySource:
    """The primary model's pooled vectors of the run's builds."""

    origin = "came out of the primary model"
    held_out = "held-out builds"
    batch_name = "primary batches"

    def __init__(self, inputs: RunInputs):
        self.inputs = inputs

    @property
    def d_in(self) -> int:
        return int(self.inputs.primary.config.hidden_dim)

    def record(self, rundir: Path, cfg: SAETrainConfig, *, write: bool, within=None,
               override: bool = False) -> None:
        record_run(rundir, cfg, self.inputs, write=write, within=within, override=override)

    def feed(self, cfg: SAETrainConfig, plan, mesh) -> Feed:
        from flax import nnx

        from apps.training.chunk import batch_rows
        from bridge.harvest_blocks import (
            BlockLayout,
            create_staging,
            device_blocks,
            fits_example_table,
            gather_block,
            harvest_block,
            harvest_every_example,
            null_pooled_table,
        )
        from runkit.sharding import replicate

        examples, primary = self.inputs.train_examples, self.inputs.primary
        layout = BlockLayout.for_batch_size(cfg.primary_batch_size)

        def blocks(first_batch: int) -> Iterator[FedBlock]:
            graphdef, state = nnx.split(primary)
            state = replicate(state, mesh)
            null_table = null_pooled_table(primary, examples.null_id, mesh)
            staging = create_staging(layout, self.d_in, mesh)
            # Over several epochs each example would be harvested once per epoch, to the
            # same vector.
            table = (harvest_every_example(graphdef, state, examples, layout, mesh, self.d_in)
                     if plan.total_batches > plan.batches_per_epoch
                     and fits_example_table(examples, cfg.buffer_size) else None)
            on_host = device_blocks(examples, layout, mesh, seed=cfg.seed,
                                    batches_per_epoch=plan.batches_per_epoch,
                                    total_batches=plan.total_batches, first_batch=first_batch,
                                    with_groups=table is None)
            with closing(on_host):
                for block in on_host:
                    staging = (harvest_block(graphdef, state, block, staging) if table is None
                               else gather_block(table, block.examples))
                    yield FedBlock(block.first_batch,
                                   (staging, null_table, block.is_null, block.weapons))

        return Feed(layout.batches, batch_rows, blocks)

    def shared_evaluation(self, batch_size: int):
        """The held-out examples' pooled vectors, for several SAEs to share."""
        from bridge.harvest import harvest_array

        return harvest_array(self.inputs.primary, self.inputs.eval_examples, batch_size)

    def evaluate(self, sae, cfg: SAETrainConfig, *, batch_size: int, shared=None) -> dict:
        from apps.runs.evaluation import evaluate_sae

        return evaluate_sae(self.inputs.primary, sae, self.inputs.eval_examples,
                            batch_size=batch_size, original_behaviour=cfg.original_behaviour,
                            pooled=shared)

    def result_fields(self, rundir: Path, within=None) -> dict:
        return {"primary_model_dir": RunDir(rundir).record_path(self.inputs.primary_dir,
                                                                within=within)}

    def analysis_inputs(self, rundir: Path, *, num_builds: int | None):
        from apps.analysis.pipeline import analysis_inputs

        inputs = self.inputs
        return analysis_inputs(rundir, num_builds=num_builds,
                               primary=(inputs.primary, inputs.vocab, inputs.weapon_vocab))

    @staticmethod
    def analyze(rundir: Path, inputs) -> None:
        from apps.analysis.pipeline import analyze

        analyze(rundir, inputs=inputs)


def _one_batch(staging: jax.Array, i) -> jax.Array:
    """Batch ``i`` of a block of rows read from files, as float32 (inside jit)."""
    return jax.lax.dynamic_index_in_dim(staging, i, keepdims=False).astype(np.float32)


class FileSource:
    """Rows of activation files (``--activations``), ``split`` into held-out and training
    rows with the run's seed."""

    def __init__(self, files: ActivationFiles, split: RowSplit):
        self.files, self.split = files, split
        self.origin = f"were read from {files.path}"
        self.held_out = f"{len(split.held_out):,} held-out rows"
        self.batch_name = "batches"
        self.fingerprint = files.fingerprint()

    @classmethod
    def open(cls, cfg: SAETrainConfig) -> FileSource:
        files = open_activations(cfg.activations)
        try:
            split = evaluation_split(files.num_rows, cfg.eval_rows, cfg.seed)
        except ValueError as e:
            raise ValueError(f"--activations {files.path}: {e}") from None
        return cls(files, split)

    @property
    def d_in(self) -> int:
        return self.files.d_in

    def plan(self, cfg: SAETrainConfig):
        batches = self.split.num_train // cfg.primary_batch_size
        if batches <= 0:
            raise ValueError(f"--activations {self.files.path}: its {self.split.num_train} "
                             f"training rows give no full batch of --primary_batch_size "
                             f"{cfg.primary_batch_size}")
        return plan_run(cfg, batches)

    def record(self, rundir: Path, cfg: SAETrainConfig, *, write: bool, within=None,
               override: bool = False) -> None:
        cfg.validate(d_sae=int(self.d_in * cfg.expansion_factor))
        check_same_activations(rundir, self.files.path, self.fingerprint, override=override)
        if write:
            run = RunDir(rundir)
            run.write_run(run.new_activations_record(
                self.files.path, seed=cfg.seed, within=within,
                activations_sha256=self.fingerprint, num_rows=self.files.num_rows,
                d_in=self.d_in, eval_rows=len(self.split.held_out)))

    def feed(self, cfg: SAETrainConfig, plan, mesh) -> Feed:
        size = cfg.primary_batch_size
        per_block = max(1, BLOCK_ROWS // size)
        order = EpochOrder(self.split.num_train, cfg.seed)
        sharding = block_sharding(mesh)

        def read(first: int) -> FedBlock:
            end = min(first + per_block, plan.total_batches)
            positions = [order.rows(g // plan.batches_per_epoch,
                                    (g % plan.batches_per_epoch) * size,
                                    (g % plan.batches_per_epoch + 1) * size)
                         for g in range(first, end)]
            host = np.zeros((per_block * size, self.d_in), np.float32)  # a short block padded
            host[:(end - first) * size] = self.files.read(
                self.split.table_rows(np.concatenate(positions)))
            return FedBlock(first, (from_own_rows(host.reshape(per_block, size, self.d_in),
                                                  sharding),))

        def blocks(first_batch: int) -> Iterator[FedBlock]:
            starts = (range(first_batch - first_batch % per_block, plan.total_batches, per_block)
                      if first_batch < plan.total_batches else range(0))
            return made_ahead(read, starts)

        # Reading a block is much quicker than training on it: unbounded, the loop would
        # queue block after block on the device (each a new array) until its next sync.
        return Feed(per_block, _one_batch, blocks, blocks_in_flight=FILE_BLOCKS_IN_FLIGHT)

    def eval_batches(self, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
        """The held-out rows (the first ``limit``), read ``batch_size`` at a time."""
        rows = self.split.held_out[:limit]
        for start in range(0, len(rows), batch_size):
            yield self.files.read(rows[start:start + batch_size])

    def shared_evaluation(self, batch_size: int):
        return None  # reading the held-out rows again costs less than keeping them

    def evaluate(self, sae, cfg: SAETrainConfig, *, batch_size: int, shared=None) -> dict:
        from sae_jax.reconstruction_metrics import evaluate_rows

        result = evaluate_rows(sae, self.eval_batches(batch_size), batch_size=batch_size)
        return {**result, "original_behaviour": bool(cfg.original_behaviour)}

    def result_fields(self, rundir: Path, within=None) -> dict:
        return {"activations": RunDir(rundir).record_path(self.files.path, within=within)}

    def analysis_inputs(self, rundir: Path, *, num_builds: int | None):
        from apps.analysis.activation_analysis import analysis_rows

        return analysis_rows(rundir, num_rows=num_builds, files=self.files)

    @staticmethod
    def analyze(rundir: Path, inputs) -> None:
        from apps.analysis.activation_analysis import analyze_rows

        analyze_rows(rundir, inputs=inputs)
