"""Training the primary model: set completion with BCE over the vocabulary, data parallel.

``train_primary(cfg, workdir)`` loads builds, splits them 70/10/20 by build,
makes completion examples, and trains a :class:`SetCompletionModel` with AdamW
on binary cross-entropy over the whole vocabulary. The batch is split over a
1-D device mesh and the parameters replicated (XLA adds the gradient
all-reduce). The training step is a pure jitted function of (params, optimiser
state, batch, dropout key) with the state donated.

Exact resume: the data order of an epoch is a pure function of (seed, epoch),
the dropout key of a step is ``fold_in(key(seed), step)``, and checkpoints hold
parameters, optimiser state and step, so a run killed after a checkpoint and
restarted ends with the same parameters as one that never stopped.

Workdir layout: ``train_config.json``, ``metrics.jsonl`` (one line per log
interval and per epoch), ``checkpoints/``, and at the end ``metrics.json`` and
``model/`` (a primary model directory, see :mod:`primary.model_dir`). A workdir
whose ``model/`` and ``metrics.json`` exist for the same config is finished:
``train_primary`` returns its metrics without training again.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from primary import baseline as freq_baseline
from primary.concept_sets import recorded_digest, resolve_concepts
from primary.examples import (
    iterate_batches,
    make_examples,
    num_batches,
    pad_to_width,
    part_layout,
    split_by_length,
)
from primary.model import PrimaryConfig, SetCompletionModel, count_params, create_model
from primary.model_dir import save_primary
from primary.set_metrics import scores_from_counts
from primary.sources import default_vocabs
from primary.splits import data_splits
from primary.vocab import check_id_range
from runkit.checkpoints import Checkpoints
from runkit.errors import RunFault
from runkit.flags import setting
from runkit.hosts import is_writer
from runkit.jsonio import read_json, write_json
from runkit.lock import WorkdirLock
from runkit.metrics_log import MetricsLog
from runkit.progress import show_progress
from runkit.resume import claim_config
from runkit.sharding import (
    check_batch_divisible,
    make_mesh,
    num_data_shards,
    replicate,
    shard_batch,
)


@dataclass(frozen=True)
class PrimaryTrainConfig:
    """Every setting of a primary training run. Model defaults are the original's
    published size (83.0 M parameters with the full vocabulary)."""

    # Model (PrimaryConfig names).
    embedding_dim: int = setting(32, "Ability and weapon embedding size.")
    hidden_dim: int = setting(
        512, "Width of the set transformer; the pooled vector the SAE reads.")
    num_layers: int = setting(3, "Number of set-transformer layers.")
    num_heads: int = setting(8, "Attention heads (must divide hidden_dim).")
    num_inducing_points: int = setting(
        32, "Inducing points of each ISAB and seeds of the PMA.")
    use_layer_norm: bool = setting(True, "Layer norm inside attention blocks and layers.")
    dropout: float = setting(0.0, "Dropout rate in training.")
    # Optimisation.
    lr: float = setting(1e-4, "AdamW learning rate (peak, with --lr_final_fraction).")
    lr_final_fraction: float = setting(
        1.0, "The learning rate falls along a cosine from --lr to this fraction of it over "
        "the run; 1 keeps it constant, as the original does.")
    weight_decay: float = setting(0.01, "AdamW weight decay.")
    batch_size: int = setting(
        1024, "Examples per step, split over all devices (a multiple of their number).")
    epochs: int = setting(10, "Passes over the training examples.")
    # Examples (docs/original.md §2).
    num_instances: int = setting(5, "Completion examples made from each build.")
    skew_factor: float = setting(
        1.2, "An example removes k of its build's tokens with probability ~ "
        "k ** skew_factor.")
    include_null: bool = setting(True, "Add one example per build whose input is <NULL>.")
    # Data.
    data_source: str = setting(
        "synthetic", "Where the builds come from: synthetic (generated), statink (a stat.ink "
        "battle CSV) or splatnlp_tsv (SplatNLP's tokenized TSV).")
    data_path: str = setting("", "File of the data source (unused for synthetic).")
    vocab_path: str = setting(
        "", "splatnlp_tsv only: the vocab.json the file's token ids refer to.")
    weapon_vocab_path: str = setting(
        "", "splatnlp_tsv only: the weapon_vocab.json of the file.")
    num_builds: int = setting(
        200_000, "Builds to load (a seeded random subset of a larger file; synthetic: to "
        "generate).")
    seed: int = setting(0, "Seed of data generation, split, initialisation and order.")
    concepts_file: str = setting(
        "", "synthetic only: JSON concept set to plant (default: the built-in 19).")
    # Filled in by the run from the set it plants ("" = built-in), so that resuming with a
    # changed concept file is caught by the resume policy; not a flag.
    concept_set_sha256: str = ""
    # Bookkeeping (in steps).
    checkpoint_every: int = setting(1000, "Steps between checkpoints.")
    log_every: int = setting(50, "Steps between training-loss lines in metrics.jsonl.")

    def __post_init__(self):
        """Refuse settings that cannot work, naming the flag (``--name``)."""
        for name in ("batch_size", "epochs", "num_instances", "num_builds", "checkpoint_every",
                     "log_every"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        # Finite first: NaN passes every comparison below (nan <= 0 is False).
        for name in ("lr", "lr_final_fraction", "weight_decay", "dropout", "skew_factor"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"--{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if not 0.0 <= self.lr_final_fraction <= 1.0:
            raise ValueError(f"--lr_final_fraction must be in [0, 1], got "
                             f"{self.lr_final_fraction}")
        if self.weight_decay < 0:
            raise ValueError(f"--weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.concepts_file and self.data_source != "synthetic":
            raise ValueError(f"--concepts_file plants concepts in synthetic builds only; "
                             f"--data_source is {self.data_source!r}")

    def model_config(self, vocab_size: int, weapon_vocab_size: int, pad_id: int) -> PrimaryConfig:
        return PrimaryConfig(
            vocab_size=vocab_size, weapon_vocab_size=weapon_vocab_size,
            embedding_dim=self.embedding_dim, hidden_dim=self.hidden_dim,
            num_layers=self.num_layers, num_heads=self.num_heads,
            num_inducing_points=self.num_inducing_points, use_layer_norm=self.use_layer_norm,
            dropout=self.dropout, pad_token_id=pad_id,
        )

    def to_dict(self) -> dict:
        """The recorded settings; the concept set keys only when a custom set is used and
        the learning-rate decay only when there is one, so runs recorded before these
        settings existed still match."""
        d = dataclasses.asdict(self)
        for k in CONCEPT_SET_SETTINGS:
            if not d[k]:
                del d[k]
        if d["lr_final_fraction"] == 1.0:
            del d["lr_final_fraction"]
        return d

    def with_concept_set(self) -> tuple[PrimaryTrainConfig, tuple | None]:
        """``(config with concept_set_sha256 filled in, the concepts)``; None for file data."""
        if self.data_source != "synthetic":
            return self, None
        concepts = resolve_concepts(self.concepts_file)
        return dataclasses.replace(self, concept_set_sha256=recorded_digest(concepts)), concepts


CONCEPT_SET_SETTINGS = ("concepts_file", "concept_set_sha256")


# ----------------------------------------------------------------------------- pure steps


@functools.lru_cache(maxsize=8)
def make_optimizer(lr: float, weight_decay: float, *, total_steps: int = 0,
                   final_fraction: float = 1.0) -> optax.GradientTransformation:
    """AdamW, its learning rate constant or (``final_fraction < 1``) falling along a cosine
    to ``final_fraction * lr`` over ``total_steps``; cached so that runs with equal
    settings share one compiled step."""
    if final_fraction < 1.0:
        lr = optax.cosine_decay_schedule(lr, decay_steps=max(int(total_steps), 1),
                                         alpha=final_fraction)
    return optax.adamw(lr, weight_decay=weight_decay)


# Training batches are cut into at most this many parts by length (split_by_length, at the
# cuts part_layout finds). On the demo primary (2-core CPU) 4 parts take 0.80x the FLOPs
# of 2 equal ones for about 1.7x their compile time (benchmarks/primary_step_bench.py).
TRAIN_PARTS = 4
# ... and no more parts than this many rows each fill on average: a small batch saves too
# little padding to pay for each part's share of the compile.
MIN_PART_ROWS = 48


def train_parts(batch_size: int) -> int:
    """How many length parts at most a training batch of ``batch_size`` rows is cut into."""
    return max(1, min(TRAIN_PARTS, batch_size // MIN_PART_ROWS))


def _bce_sums(model: SetCompletionModel, batch: dict, dropout_key):
    """Summed BCE-with-logits over (example, token) pairs and the logits. ``batch["weight"]``
    (B,) masks padding rows of a partial batch."""
    logits = model(batch["tokens"], batch["weapons"], batch["key_padding_mask"],
                   dropout_key=dropout_key)
    per_pair = optax.sigmoid_binary_cross_entropy(logits, batch["targets"])
    return jnp.sum(per_pair * batch["weight"][:, None]), logits


def train_step(params, opt_state, parts: tuple[dict, ...], dropout_key, *, graphdef, tx):
    """One AdamW step on the mean BCE over all (example, token) pairs of a batch, given
    as ``parts`` (:func:`primary.examples.split_by_length`: its rows in parts of similar
    length, each padded only to its own width; the loss sums over all of them).

    Each part: tokens (b, L) int32, weapons (b, 1) int32, key_padding_mask (b, L) bool,
    targets (b, V) float32, weight (b,) float32. Returns (params, opt_state, loss).
    """

    loss, grads = jax.value_and_grad(batch_loss)(params, parts, dropout_key, graphdef)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def batch_loss(params, parts: tuple[dict, ...], dropout_key, graphdef) -> jax.Array:
    """The mean BCE over all (example, token) pairs of a batch given as length parts."""
    model = nnx.merge(graphdef, params)
    total = sum(_bce_sums(model, part, _part_key(dropout_key, i))[0]
                for i, part in enumerate(parts))
    pairs = sum(jnp.sum(part["weight"]) for part in parts) * parts[0]["targets"].shape[1]
    return total / jnp.maximum(pairs, 1.0)


def _part_key(dropout_key, i: int):
    # Each part draws its own dropout masks (a single part keeps the step's key).
    return dropout_key if dropout_key is None or i == 0 else jax.random.fold_in(dropout_key, i)


train_step_jit = jax.jit(train_step, static_argnames=("graphdef", "tx"), donate_argnums=(0, 1))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def eval_step(params, batch: dict, *, graphdef):
    """Sums over the batch: (BCE, weighted pairs, true positives, false positives,
    false negatives), predictions at sigmoid(logit) > 0.5, i.e. logit > 0."""
    total, logits = _bce_sums(nnx.merge(graphdef, params), batch, None)
    w = batch["weight"][:, None] > 0
    pred, target = (logits > 0) & w, (batch["targets"] > 0.5) & w
    pairs = jnp.sum(batch["weight"]) * batch["targets"].shape[1]
    return jnp.stack([total, pairs, jnp.sum(pred & target), jnp.sum(pred & ~target),
                      jnp.sum(~pred & target)]).astype(jnp.float32)


# ----------------------------------------------------------------------------- input checks


def check_examples(examples, config: PrimaryConfig, *, where: str) -> None:
    """Refuse examples the model cannot take, before anything reaches jit (which would clamp
    out-of-range ids silently): no examples, token or weapon ids out of range."""
    check_id_range(examples.tokens, config.vocab_size, what="token id", where=where)
    check_id_range(examples.weapons, config.weapon_vocab_size, what="weapon id", where=where)
    if examples.pad_id != config.pad_token_id:
        raise ValueError(f"{where}: padded with token id {examples.pad_id}, the model's pad id "
                         f"is {config.pad_token_id}")
    if np.shape(examples.targets)[1:] != (config.vocab_size,):
        raise ValueError(f"{where}: targets have shape {np.shape(examples.targets)}, the model "
                         f"predicts {config.vocab_size} tokens")


# ----------------------------------------------------------------------------- evaluation


def eval_primary(model: SetCompletionModel, examples, batch_size: int, *, mesh=None,
                 where: str = "evaluation examples") -> dict:
    """Mean BCE ("loss") and micro "f1", "precision", "recall" at sigmoid > 0.5 over every
    (example, token) pair of ``examples``."""
    check_examples(examples, model.config, where=where)
    mesh = mesh if mesh is not None else make_mesh()
    check_batch_divisible(batch_size, num_data_shards(mesh), where=f"{where}: eval batch size")
    graphdef, params = nnx.split(model, nnx.Param)
    params = replicate(params, mesh)
    return _evaluate(graphdef, params, examples, batch_size, mesh)


def _evaluate(graphdef, params, examples, batch_size, mesh) -> dict:
    sums = jnp.zeros((5,), jnp.float32)
    width, pad_id = examples.tokens.shape[1], examples.pad_id
    for i, batch in enumerate(iterate_batches(examples, batch_size, seed=0, epoch=0,
                                              shuffle=False, drop_remainder=False)):
        batch = shard_batch(pad_to_width(batch, width, pad_id), mesh, where=f"eval batch {i}")
        sums = sums + eval_step(params, batch, graphdef=graphdef)
    total, pairs, tp, fp, fn = (float(x) for x in np.asarray(sums))
    if pairs == 0:
        raise ValueError("evaluation saw no examples")
    return {"loss": total / pairs, **scores_from_counts(tp, fp, fn)}


# ----------------------------------------------------------------------------- data


@dataclass
class PrimaryData:
    vocab: object
    weapon_vocab: object
    train: object
    val: object
    test: object
    num_builds: int
    concepts: tuple | None = None  # the concept set planted (synthetic data), else None


def prepare_data(cfg: PrimaryTrainConfig, concepts=None) -> PrimaryData:
    """Builds -> vocabularies -> 70/10/20 split by build -> examples for each part.
    ``concepts``: the set to plant (default: ``cfg.concepts_file``'s, for synthetic data)."""
    if concepts is None:
        _, concepts = cfg.with_concept_set()
    splits = data_splits(cfg.data_source, data_path=cfg.data_path, num_builds=cfg.num_builds,
                         seed=cfg.seed, vocab=cfg.vocab_path or None,
                         weapon_vocab=cfg.weapon_vocab_path or None, concepts=concepts)
    builds = splits.builds
    vocab, weapon_vocab = default_vocabs(builds, data_source=cfg.data_source)
    parts = (splits.train, splits.val, splits.test)
    examples = [
        make_examples(builds.subset(idx), vocab, weapon_vocab, num_instances=cfg.num_instances,
                      skew_factor=cfg.skew_factor, include_null=cfg.include_null,
                      seed=cfg.seed + offset)
        for offset, idx in enumerate(parts)
    ]
    return PrimaryData(vocab, weapon_vocab, *examples, num_builds=len(builds.weapons),
                       concepts=concepts)


# ----------------------------------------------------------------------------- the run


class PrimaryTrainingFault(RunFault):
    """Training stopped on a non-finite loss or model; the last checkpoint is good."""


def _finished_metrics(cfg: PrimaryTrainConfig, workdir: Path, override: bool) -> dict | None:
    """The metrics of a finished run in ``workdir`` with these settings (None when there is
    none). Other settings are refused unless ``override`` (then the run goes on)."""
    if not ((workdir / "model" / "config.json").exists() and (workdir / "metrics.json").exists()):
        return None
    if claim_config(workdir, cfg, override=override, write=False):
        return None
    return read_json(workdir / "metrics.json", what="primary run metrics")


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_finite(ok, step: int, what: str, ckpts: Checkpoints) -> None:
    if bool(ok):
        return
    steps = ckpts.steps()
    kept = (f"the last good checkpoint (step {steps[-1]}) in {ckpts.directory} is intact"
            if steps else "no checkpoint had been written yet")
    raise PrimaryTrainingFault(f"primary training stopped: {what} by step {step}; {kept}; "
                               "try a lower --lr")


def _check_eval(result: dict, split: str, step: int) -> dict:
    bad = [k for k, v in result.items() if not np.isfinite(v)]
    if bad:
        raise PrimaryTrainingFault(f"{split} evaluation after step {step} gave non-finite "
                                   f"{bad}; the model is not saved as finished")
    return result


def train_primary(cfg: PrimaryTrainConfig, workdir: str | os.PathLike, *, devices=None,
                  stop_after_steps: int | None = None, override: bool = False) -> dict:
    """Train (or resume, or return the finished run in) ``workdir``; returns the final metrics.

    ``devices``: the data-parallel devices (default: all, of every process).
    ``stop_after_steps``: return as if killed once that many steps are done (for tests of
    resume); no final files are written. ``override``: continue a run whose workdir records
    other settings (see :mod:`runkit.resume`). Nothing is written to ``workdir`` before the
    settings and data have been checked.
    """
    workdir = Path(workdir).absolute()
    cfg, concepts = cfg.with_concept_set()  # the set's digest is part of the settings
    finished = _finished_metrics(cfg, workdir, override)
    if finished is not None:
        return finished

    mesh = make_mesh(devices)
    shards = num_data_shards(mesh)
    check_batch_divisible(cfg.batch_size, shards, where="PrimaryTrainConfig.batch_size")
    data = prepare_data(cfg, concepts)
    model_cfg = cfg.model_config(len(data.vocab), len(data.weapon_vocab), data.vocab.pad_id)
    for name in ("train", "val", "test"):
        check_examples(getattr(data, name), model_cfg, where=f"{name} examples")
    steps_per_epoch = num_batches(data.train, cfg.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data.train.tokens)} training examples make no full batch of "
                         f"batch_size {cfg.batch_size}")
    with ExitStack() as stack:
        if is_writer():
            stack.enter_context(WorkdirLock(workdir))
        claim_config(workdir, cfg, override=override, write=is_writer())
        ckpts = stack.enter_context(Checkpoints(workdir / "checkpoints"))
        return _run(cfg, workdir, data, model_cfg, mesh, steps_per_epoch, ckpts,
                    stop_after_steps)


def _run(cfg, workdir, data, model_cfg, mesh, steps_per_epoch, ckpts, stop_after_steps):
    total_steps = steps_per_epoch * cfg.epochs
    pad_id = model_cfg.pad_token_id
    model = create_model(model_cfg, cfg.seed)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = make_optimizer(cfg.lr, cfg.weight_decay, total_steps=total_steps,
                        final_fraction=cfg.lr_final_fraction)
    state = replicate((params, tx.init(params)), mesh)

    base = freq_baseline.fit_baseline(data.train, len(data.weapon_vocab), pad_id=pad_id,
                                      null_id=data.vocab.null_id)
    base = freq_baseline.choose_threshold(base, data.val)
    base_val = freq_baseline.evaluate_baseline(base, data.val)

    log = MetricsLog(workdir / "metrics.jsonl")
    start, seconds_before = 0, 0.0
    restored = ckpts.restore_latest(state, what=f"this primary run ({model_cfg})")
    # Losses of steps since the last log line: checkpointed with the state so that the first
    # line after a resume averages the same steps as an uninterrupted run's.
    loss_sum, loss_n = jnp.zeros((), jnp.float32), 0
    if restored is not None:
        state, start = restored.tree, restored.step
        seconds_before = float(restored.progress.get("seconds", 0.0))
        loss_sum = jnp.asarray(restored.progress.get("unlogged_loss_sum", 0.0), jnp.float32)
        loss_n = int(restored.progress.get("unlogged_steps", 0))
        print(f"resuming the primary run from its checkpoint at step {start}")
    if is_writer():
        log.restart_at(start if restored is not None else None)

    base_key = jax.random.key(cfg.seed)
    # One part layout for every batch of the run: the step compiles once.
    layout = part_layout(data.train, cfg.batch_size, train_parts(cfg.batch_size), seed=cfg.seed,
                         epochs=range(cfg.epochs), row_step=num_data_shards(mesh))
    params, opt_state = state
    t0 = time.perf_counter()
    finite = jnp.asarray(True)
    bar = show_progress(total=total_steps, initial=start, desc="primary training", unit="step",
                        disable=not is_writer())
    step = start
    val = None
    for epoch in range(start // steps_per_epoch, cfg.epochs):
        skip = start - epoch * steps_per_epoch if epoch == start // steps_per_epoch else 0
        batches = iterate_batches(data.train, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                  shuffle=True, drop_remainder=True)
        for i, batch in enumerate(batches):
            if i < skip:
                continue
            where = f"training batch {i} of epoch {epoch}"
            parts = tuple(shard_batch(part, mesh, where=where)
                          for part in split_by_length(batch, layout, pad_id))
            dropout_key = jax.random.fold_in(base_key, step)
            params, opt_state, loss = train_step_jit(params, opt_state, parts, dropout_key,
                                                     graphdef=graphdef, tx=tx)
            step += 1
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
            finite = finite & jnp.isfinite(loss)
            bar.update(1)
            if step % cfg.log_every == 0:
                _check_finite(finite, step, "the training loss became non-finite (NaN or Inf)",
                              ckpts)
                mean_loss = float(loss_sum) / loss_n
                loss_sum, loss_n = jnp.zeros((), jnp.float32), 0
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                if is_writer():
                    log.append({"step": step, "epoch": epoch + 1, "train_loss": mean_loss})
            if step % cfg.checkpoint_every == 0 or step == total_steps:
                _check_finite(finite & _all_finite(params), step,
                              "the loss or the parameters became non-finite (NaN or Inf)", ckpts)
                ckpts.save(step, (params, opt_state), {
                    "epoch": step // steps_per_epoch, "batch_in_epoch": step % steps_per_epoch,
                    "seconds": seconds_before + time.perf_counter() - t0,
                    "unlogged_loss_sum": float(loss_sum), "unlogged_steps": loss_n})
            if stop_after_steps is not None and step >= stop_after_steps:
                bar.close()
                return {"stopped_at_step": step}
        val = _check_eval(_evaluate(graphdef, params, data.val, cfg.batch_size, mesh),
                          "validation", step)
        record = {"step": step, "epoch": epoch + 1, **{f"val_{k}": v for k, v in val.items()},
                  **{f"baseline_{k}": v for k, v in base_val.items()}}
        if is_writer():
            log.append(record)
        bar.write(f"epoch {epoch + 1}/{cfg.epochs}: val loss {val['loss']:.4f} "
                   f"F1 {val['f1']:.4f} (baseline F1 {base_val['f1']:.4f})")
    bar.close()
    _check_finite(_all_finite(params), step, "the parameters became non-finite (NaN or Inf)",
                  ckpts)
    seconds = seconds_before + time.perf_counter() - t0

    if val is None:  # resumed from the final checkpoint: only the evaluation was missing
        val = _check_eval(_evaluate(graphdef, params, data.val, cfg.batch_size, mesh),
                          "validation", step)
    test = _check_eval(_evaluate(graphdef, params, data.test, cfg.batch_size, mesh), "test",
                       step)
    base_test = freq_baseline.evaluate_baseline(base, data.test)
    model = nnx.merge(graphdef, jax.device_get(params))
    save_primary(workdir / "model", model, data.vocab, data.weapon_vocab, write=is_writer(),
                 concepts=data.concepts)
    metrics = {
        **{f"val_{k}": v for k, v in val.items()},
        **{f"baseline_{k}": v for k, v in base_val.items() if k != "threshold"},
        "baseline_threshold": base.threshold,
        **{f"test_{k}": v for k, v in test.items()},
        **{f"baseline_test_{k}": v for k, v in base_test.items() if k != "threshold"},
        "steps": step, "epochs": cfg.epochs, "seconds": seconds,
        "num_params": count_params(model), "num_builds": data.num_builds,
        "num_train_examples": len(data.train.tokens), "num_devices": num_data_shards(mesh),
        "num_processes": jax.process_count(),
        "vocab_size": len(data.vocab), "weapon_vocab_size": len(data.weapon_vocab),
    }
    if is_writer():
        write_json(workdir / "metrics.json", metrics)
    return metrics
