"""What an SAE run needs before its loop: the frozen primary model, its data, the plan.

- :func:`obtain_primary`: load a primary model directory, or train the demo
  primary into ``workdir/primary_run`` (reusing a finished one there).
- :func:`prepare_data`: builds split by build with the primary run's seed, so
  the evaluation builds were never seen by the primary nor by the SAE;
  examples of the train split feed harvesting, examples of the test split
  (at most ``eval_builds`` builds) feed evaluation.
- :func:`plan_run`: how many primary batches per epoch (``data_fraction``) and
  how many SAE steps the run will make; known before any work, so the settings
  can be validated against it (:func:`estimate_plan` works it out from the data
  settings alone, :func:`known_input_dim` the SAE's input size from a given primary).
- :func:`run_concept_set` / :func:`run_concepts`: the concept set a run plants
  in its synthetic builds (its ``--concepts_file``, or the set a reused primary
  was trained on), and, after the run, the set read back from its directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from primary import PRIMARY_CONFIGS
from primary.model_dir import load_primary, model_fingerprint
from runkit.flags import config_from_flagfile
from runkit.jsonio import read_json
from runkit.resume import SettingsChanged
from runkit.run_dir import IMPORTED_PRIMARY, RunDir
from sae_jax.config import SAETrainConfig

# The primary's flagfiles ship with the primary package.
DEMO_PRIMARY_FLAGS = PRIMARY_CONFIGS / "primary_demo.flags"
# Fields of the primary's training config that decide which builds exist and how they split.
DATA_FIELDS = ("data_source", "data_path", "num_builds", "seed", "concepts_file")


@dataclass(frozen=True)
class RunPlan:
    """Shape of a run: ``total_batches`` primary batches, SAE steps from batch
    ``first_train_batch`` (1-based) on, ``sae_steps_per_batch`` per batch."""

    batches_per_epoch: int
    epochs: int
    first_train_batch: int
    sae_steps_per_batch: int

    @property
    def total_batches(self) -> int:
        return self.batches_per_epoch * self.epochs

    @property
    def total_sae_steps(self) -> int:
        trained = max(0, self.total_batches - self.first_train_batch + 1)
        return trained * self.sae_steps_per_batch


def plan_run(cfg: SAETrainConfig, full_batches_per_epoch: int) -> RunPlan:
    """The run's plan from the number of full primary batches in one pass over the train
    examples; each epoch uses the first ``data_fraction`` of its shuffled order."""
    if full_batches_per_epoch <= 0:
        raise ValueError(f"the training split gives no full primary batch of "
                         f"{cfg.primary_batch_size}; use more builds or a smaller batch")
    if not 0 < cfg.data_fraction <= 1:
        raise ValueError(f"data_fraction must be in (0, 1], got {cfg.data_fraction}")
    per_epoch = max(1, int(round(full_batches_per_epoch * cfg.data_fraction)))
    first = max(1, math.ceil(cfg.min_buffer / cfg.primary_batch_size))
    plan = RunPlan(per_epoch, cfg.epochs, first, cfg.sae_steps_per_primary_step)
    if plan.total_sae_steps <= 0:
        raise ValueError(
            f"the run never trains the SAE: {plan.total_batches} primary batches of "
            f"{cfg.primary_batch_size} ({cfg.epochs} epochs x {per_epoch}) never fill "
            f"min_buffer {cfg.min_buffer}; raise epochs or data_fraction, or lower min_buffer")
    return plan


def check_devices(cfg: SAETrainConfig, num_devices: int) -> None:
    """Buffer rows, primary batches and SAE batches are split evenly over the devices."""
    for name in ("primary_batch_size", "sae_batch_size", "buffer_size"):
        value = getattr(cfg, name)
        if value % num_devices:
            raise ValueError(f"{name} {value} is not divisible by the {num_devices} devices of "
                             f"the data mesh; choose a multiple of {num_devices}")


def demo_primary_config(cfg: SAETrainConfig, primary_cfg=None):
    """The demo primary's training config (``primary/configs/primary_demo.flags`` unless given),
    with its data settings taken from the SAE run so both see the same builds and split."""
    from primary.training import PrimaryTrainConfig

    if primary_cfg is None:
        if not DEMO_PRIMARY_FLAGS.exists():
            raise FileNotFoundError(f"no demo primary settings at {DEMO_PRIMARY_FLAGS}; pass "
                                    "--primary_dir to use an already trained primary model")
        primary_cfg = config_from_flagfile(PrimaryTrainConfig, DEMO_PRIMARY_FLAGS,
                                           ignore=("workdir",))
    names = {f.name for f in dataclasses.fields(primary_cfg)}
    same = {k: getattr(cfg, k) for k in DATA_FIELDS if k in names}
    return dataclasses.replace(primary_cfg, **same)


def obtain_primary(cfg: SAETrainConfig, workdir: Path, *, primary_dir=None, primary_cfg=None,
                   devices=None):
    """``(model, vocab, weapon_vocab, primary_dir, split_seed)`` for the run."""
    if primary_dir is None:
        from primary.training import train_primary

        pcfg = demo_primary_config(cfg, primary_cfg)
        run_dir = workdir / "primary_run"
        print(f"training the demo primary model in {run_dir} (reused if already finished)")
        train_primary(pcfg, run_dir, devices=devices)
        primary_dir = run_dir / "model"
    primary_dir = Path(primary_dir).absolute()
    model, vocab, weapon_vocab = load_primary(primary_dir)
    return model, vocab, weapon_vocab, primary_dir, split_seed(primary_dir, cfg)


def split_seed(primary_dir: Path, cfg: SAETrainConfig) -> int:
    """The seed the primary run drew and split its builds with (its ``train_config.json``
    beside the model directory), so the SAE's evaluation builds are the primary's held-out
    test builds; ``cfg.seed`` when that is unknown or the data settings differ."""
    train_config = primary_dir.parent / "train_config.json"
    if not train_config.exists():
        return cfg.seed
    primary_settings = read_json(train_config, what="primary run settings")
    differs = [k for k in ("data_source", "num_builds")
               if k in primary_settings and primary_settings[k] != getattr(cfg, k)]
    if differs:
        print(f"note: the primary model was trained with other data settings ({differs}); "
              "its held-out builds cannot be matched, the SAE's own split is used")
        return cfg.seed
    return int(primary_settings.get("seed", cfg.seed))


def prepare_data(cfg: SAETrainConfig, vocab, weapon_vocab, *, seed: int, concepts=None):
    """``(train_examples, eval_examples, num_builds)``: builds drawn and split with ``seed``,
    examples made as the primary run makes its train and test examples (seed, seed + 2).
    ``concepts``: the set synthetic builds plant (see :func:`run_concept_set`)."""
    from primary.examples import make_examples

    splits = run_splits(cfg, seed=seed, vocab=vocab, weapon_vocab=weapon_vocab,
                        concepts=concepts)
    train_builds, test_builds = splits.train_builds(), splits.test_builds(cfg.eval_builds)
    if len(train_builds) == 0 or len(test_builds) == 0:
        raise ValueError(f"{splits.num_builds} builds from {cfg.data_source!r} leave an empty "
                         "train or test split; use more builds")
    train = make_examples(train_builds, vocab, weapon_vocab, seed=seed)
    evaluation = make_examples(test_builds, vocab, weapon_vocab, seed=seed + 2)
    return train, evaluation, splits.num_builds


def run_splits(cfg: SAETrainConfig, *, seed: int, vocab=None, weapon_vocab=None,
               concepts=None):
    """The builds of an SAE run's data settings and their split
    (:func:`primary.splits.data_splits`), drawn and split with ``seed``: the split seed
    (:func:`split_seed`) for training and evaluation."""
    from primary.splits import data_splits

    return data_splits(cfg.data_source, data_path=cfg.data_path, num_builds=cfg.num_builds,
                       seed=seed, vocab=vocab, weapon_vocab=weapon_vocab, concepts=concepts)


def estimate_plan(cfg: SAETrainConfig, primary_dir, concepts=None) -> RunPlan:
    """The plan, from the data alone (before any training), for validating the settings.

    The number of examples does not depend on the vocabularies, except that a SplatNLP TSV
    holds ids of its run's own ones (read from the primary model directory)."""
    from primary.examples import make_examples, num_batches
    from primary.sources import default_vocabs
    from primary.vocab import Vocab, WeaponVocab

    if cfg.data_source == "splatnlp_tsv" and primary_dir is not None:
        vocab = Vocab.load(Path(primary_dir) / "vocab.json")
        weapon_vocab = WeaponVocab.load(Path(primary_dir) / "weapon_vocab.json")
        splits = run_splits(cfg, seed=cfg.seed, vocab=vocab, weapon_vocab=weapon_vocab)
    else:
        splits = run_splits(cfg, seed=cfg.seed, concepts=concepts)
        vocab, weapon_vocab = default_vocabs(splits.builds, data_source=cfg.data_source)
    examples = make_examples(splits.train_builds(), vocab, weapon_vocab, seed=cfg.seed)
    return plan_run(cfg, num_batches(examples, cfg.primary_batch_size, drop_remainder=True))


def known_input_dim(primary_dir) -> int | None:
    """The SAE's input size, when a given primary model directory tells it (the settings
    that depend on it are then checked before anything is written)."""
    if primary_dir is None:
        return None
    hidden = read_json(Path(primary_dir) / "config.json", what="primary model config").get(
        "hidden_dim")
    return int(hidden) if hidden else None


def _refuse_switch(rundir: Path, record, *, on_activations: bool) -> None:
    """A run never changes between a primary model and activations files (the SAE's input
    is another quantity), not even with --override."""
    if record.on_activations == on_activations:
        return
    started = (f"the activations in {record.data_path}" if record.on_activations
               else f"the primary model {record.primary_model_dir}")
    now = "activations from a file" if on_activations else "a primary model"
    raise SettingsChanged(f"{rundir} holds a run started on {started}; it cannot go on on "
                          f"{now}: use a fresh --workdir")


def _check_same_source(rundir: Path, *, on_activations: bool, digest_key: str,
                       fingerprint: str, differs, new_source: str, override: bool,
                       unrecorded_passes: bool) -> None:
    """The shared rule of :func:`check_same_primary` and :func:`check_same_activations`: a
    run in ``rundir`` whose recorded ``digest_key`` is not ``fingerprint`` is refused with
    ``differs(record, started)`` unless ``override``; ``unrecorded_passes``: a run that
    recorded no digest goes on."""
    run = RunDir(rundir)
    if not run.is_run():
        return
    record = run.read_run()
    _refuse_switch(rundir, record, on_activations=on_activations)
    started = record.extra.get(digest_key)
    if started == fingerprint or (started is None and unrecorded_passes):
        return
    message = differs(record, started)
    if not override:
        raise SettingsChanged(message + "; use a fresh --workdir, or pass --override to "
                              f"continue this run on the new {new_source}")
    print(f"note: {message}; continuing under --override")


def check_same_primary(rundir: Path, primary_dir: Path, fingerprint: str, *,
                       override: bool = False) -> None:
    """Refuse to go on with a run started on another primary model (other files or
    weights: the SAE would train on two models' activations), unless ``override``. Runs
    recorded before the primary's fingerprint was kept are taken as they are."""
    _check_same_source(
        rundir, on_activations=False, digest_key="primary_sha256", fingerprint=fingerprint,
        differs=lambda record, started: (
            f"{rundir} holds a run started on another primary model "
            f"({record.primary_model_dir}, fingerprint {started[:12]}); --primary_dir "
            f"{primary_dir} differs"),
        new_source="primary", override=override, unrecorded_passes=True)


def check_same_activations(rundir: Path, path: Path, fingerprint: str, *,
                           override: bool = False) -> None:
    """Refuse to go on with a run started on other activations (another file, or the same
    file rewritten: :meth:`sae_jax.activation_files.ActivationFiles.fingerprint`), unless
    ``override``."""
    _check_same_source(
        rundir, on_activations=True, digest_key="activations_sha256", fingerprint=fingerprint,
        differs=lambda record, started: (
            f"{rundir} holds a run started on other activations ({record.data_path}, "
            f"fingerprint {str(started)[:12]}); --activations {path} holds other data "
            f"(fingerprint {fingerprint[:12]})"),
        new_source="activations", override=override, unrecorded_passes=False)


def write_run_json(workdir: Path, cfg: SAETrainConfig, primary_dir: Path, num_builds: int,
                   seed: int, concepts=None, *, primary_sha256: str, within=None):
    """``run.json``, and ``concept_set.json`` (the set the run plants) when ``concepts``.
    Paths inside the run (or inside ``within``, the sweep holding it) are recorded
    relative to it (:meth:`runkit.run_dir.RunDir.record_path`)."""
    from primary.concept_sets import write_concept_set

    run = RunDir(workdir)
    record = run.new_record(primary_dir, data_source=cfg.data_source, data_path=cfg.data_path,
                            num_builds=num_builds, seed=seed, within=within,
                            primary_sha256=primary_sha256)
    if concepts is not None:
        write_concept_set(workdir, concepts)
    run.write_run(record)


def run_concept_set(cfg: SAETrainConfig, primary_dir=None):
    """``(cfg with concept_set_sha256 filled in, concepts)``: the set the run plants.

    Synthetic data only (else ``(cfg, None)``). Without ``primary_dir`` (the run trains its
    own primary, which gets ``cfg.concepts_file``): that file's set, default the built-in
    one. With a reused ``primary_dir``: the set that primary recorded; a ``--concepts_file``
    with another set is an error. A primary that recorded none (imported, or made before
    concept sets were recorded) takes ``--concepts_file``'s set.
    """
    from primary.concept_sets import (
        concept_set_key,
        describe_concept_set,
        recorded_concept_set,
        recorded_digest,
        resolve_concepts,
    )

    if cfg.data_source != "synthetic":
        return cfg, None
    concepts = resolve_concepts(cfg.concepts_file)
    if primary_dir is not None:
        recorded = recorded_concept_set(primary_dir)
        if recorded is not None:
            if cfg.concepts_file and concept_set_key(recorded) != concept_set_key(concepts):
                raise ValueError(
                    f"--concepts_file {cfg.concepts_file} holds {describe_concept_set(concepts)}"
                    f", but the primary model in {primary_dir} was trained on "
                    f"{describe_concept_set(recorded)}; leave --concepts_file out to use "
                    "the primary's set")
            concepts = recorded
    return dataclasses.replace(cfg, concept_set_sha256=recorded_digest(concepts)), concepts


def run_concepts(workdir) -> tuple:
    """The concept objects (:class:`primary.planted_concepts.Concept`) a run planted in its
    synthetic builds. ``workdir``: an SAE run directory, a primary run directory or a
    primary model directory. Read from the directory's ``concept_set.json``, else its
    primary model's (``model/`` or ``run.json``'s ``primary_model_dir``), else the built-in
    set. An SAE run whose settings record another set's digest is an error."""
    from primary.concept_sets import recorded_concept_set, recorded_digest
    from primary.planted_concepts import CONCEPTS
    from runkit.resume import CONFIG_NAME

    workdir = Path(workdir)
    run = RunDir(workdir)
    concepts = recorded_concept_set(workdir)
    if concepts is None:
        concepts = recorded_concept_set(workdir / IMPORTED_PRIMARY)
    if concepts is None and run.is_run():
        concepts = recorded_concept_set(run.resolve(run.read_run().primary_model_dir))
    if concepts is None:
        concepts = CONCEPTS
    settings = run.settings() if run.has_settings() else {}
    if settings.get("data_source", "synthetic") == "synthetic" and settings:
        expected = settings.get("concept_set_sha256", "")
        found = recorded_digest(concepts)
        if found != expected:
            raise ValueError(f"{workdir}: the concept set found (sha256 {found or 'built-in'}) "
                             f"is not the one the run recorded in {CONFIG_NAME} (sha256 "
                             f"{expected or 'built-in'}); was a concept_set.json changed?")
    return concepts


def check_data_settings(cfg: SAETrainConfig) -> None:
    """Refuse data settings the gear model's readers cannot serve (the SAE library's config
    does not know the data sources: :data:`primary.sources.SOURCES` does)."""
    from primary.sources import SOURCES

    errors = []
    if cfg.data_source not in SOURCES:
        errors.append(f"unknown data source {cfg.data_source!r} (--data_source); choose "
                      f"one of {SOURCES}")
    elif cfg.data_source != "synthetic" and not cfg.data_path:
        errors.append(f"data source {cfg.data_source!r} needs --data_path")
    if cfg.data_source != "synthetic" and cfg.concepts_file:
        errors.append(f"--concepts_file plants concepts in synthetic builds only; "
                      f"--data_source is {cfg.data_source!r}")
    if errors:
        raise ValueError("invalid SAE training settings: " + "; ".join(errors))


def check_activation_settings(cfg: SAETrainConfig, primary_dir) -> SAETrainConfig:
    """Refuse settings that name another source of data beside ``--activations`` (the
    other build settings are left unused); the path made absolute, so that a rerun from
    another folder names the same file."""
    errors = []
    if primary_dir is not None:
        errors.append("--activations trains without a primary model; leave out --primary_dir")
    if cfg.data_source != "synthetic" or cfg.data_path:
        errors.append(f"--activations replaces the builds; leave out --data_source "
                      f"{cfg.data_source!r} and --data_path {cfg.data_path!r}")
    if cfg.concepts_file:
        errors.append(f"--concepts_file plants concepts in synthetic builds; --activations "
                      f"has none (got {cfg.concepts_file!r})")
    if errors:
        raise ValueError("invalid SAE training settings: " + "; ".join(errors))
    return dataclasses.replace(cfg, activations=os.path.abspath(cfg.activations))


def open_settings(cfg: SAETrainConfig, primary_dir, devices):
    """``(cfg, concepts, mesh)``: the settings checked (with the devices and
    ``--primary_dir``, before anything is read or written) and given their concept set's
    digest (:func:`run_concept_set`; none with ``--activations``), and the data-parallel
    mesh of ``devices``."""
    from runkit.sharding import make_mesh

    cfg.validate()
    if cfg.activations:
        cfg = check_activation_settings(cfg, primary_dir)
    else:
        check_data_settings(cfg)
    mesh = make_mesh(devices)
    check_devices(cfg, mesh.size)
    if cfg.activations:
        return cfg, None, mesh
    if primary_dir is not None and not (Path(primary_dir) / "config.json").exists():
        raise FileNotFoundError(f"--primary_dir {primary_dir} is not a primary model directory "
                                "(no config.json): give the model/ folder of a primary run")
    cfg, concepts = run_concept_set(cfg, primary_dir)
    return cfg, concepts, mesh


@dataclass(frozen=True)
class RunInputs:
    """The primary model and the data a run trains and evaluates on."""

    primary: object
    vocab: object
    weapon_vocab: object
    primary_dir: Path
    seed: int  # the seed the builds were drawn and split with (:func:`split_seed`)
    train_examples: object
    eval_examples: object
    num_builds: int
    concepts: object
    primary_sha256: str  # :func:`primary.model_dir.model_fingerprint` of primary_dir


def load_inputs(cfg: SAETrainConfig, workdir: Path, concepts, *, primary_dir=None,
                primary_cfg=None, devices=None) -> RunInputs:
    """The run's primary (:func:`obtain_primary`) and data (:func:`prepare_data`)."""
    primary, vocab, weapon_vocab, primary_dir, seed = obtain_primary(
        cfg, workdir, primary_dir=primary_dir, primary_cfg=primary_cfg, devices=devices)
    train_examples, eval_examples, num_builds = prepare_data(cfg, vocab, weapon_vocab,
                                                             seed=seed, concepts=concepts)
    return RunInputs(primary, vocab, weapon_vocab, primary_dir, seed, train_examples,
                     eval_examples, num_builds, concepts, model_fingerprint(primary_dir))


def record_run(rundir: Path, cfg: SAETrainConfig, inputs: RunInputs, *, write: bool,
               within=None, override: bool = False) -> None:
    """Check the settings against the primary's size and the primary against the one the
    run started on, then write ``rundir``'s ``run.json`` (when ``write``; ``within``: the
    sweep holding the run, see :func:`write_run_json`)."""
    cfg.validate(d_sae=int(inputs.primary.config.hidden_dim * cfg.expansion_factor))
    check_same_primary(rundir, inputs.primary_dir, inputs.primary_sha256, override=override)
    if write:
        write_run_json(rundir, cfg, inputs.primary_dir, inputs.num_builds, inputs.seed,
                       inputs.concepts, within=within, primary_sha256=inputs.primary_sha256)
