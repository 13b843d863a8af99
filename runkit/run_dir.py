"""A run directory as one value: where everything a run writes lives, and the typed
readers and writers of its records.

What an SAE run (``python -m sae_jax.train``, or a sweep member) holds::

    train_config.json     the settings it was started with (runkit.resume)
    config_changes.jsonl  setting changes accepted with --override
    run.json              the primary model and the data the run drew, or the activations
                          file it trained on (RunRecord)
    metrics.jsonl         the training log (runkit.metrics_log)
    metrics.json          the held-out evaluation of the finished run
    curves.png            training curves
    checkpoints/          resumable state (runkit.checkpoints)
    sae/                  the trained SAE: config.json, params/, usage_ema/
    primary_run/          the demo primary's own run, when no --primary_dir was given
    concept_set.json      the concept set planted in synthetic builds
    concepts.json         concept recovery (the analysis)
    absorption.json       absorption and splitting of the AP rungs (the analysis)
    explanations.json     feature explanations (the analysis)
    feature_labels.json   human feature labels
    report/               the static feature browser: index.html, the cards it loads
                          (cards/), table.js, features.json, curves.png
    analysis_files.json   the analysis's files with their SHA-256, written last: a rerun
                          analyzes again when it is missing or a file does not match
    workbench/            the workbench's feature index
    diverged.json         a sweep member whose loss became non-finite
    .lock                 one process per run (runkit.lock)

A run on activations a user brought (``--activations``) records ``data_source``
"activations", the file in ``data_path`` and no primary model (``primary_model_dir`` "").

An imported run (``bridge.import_splatnlp``) holds ``run.json``, ``model/`` (its primary),
``sae/`` and maybe ``feature_labels.json``.

Paths a run records are relative to the run (``primary_run/model``), so a run folder can
be moved, renamed or copied to another machine. A path outside the run (an explicit
``--primary_dir``, a data file) is recorded absolute, as given, and checked when read.
``run.json`` files of older runs recorded absolute paths even inside the run; a missing
one whose run-relative part exists in the run is read as that part.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runkit.errors import UserError
from runkit.jsonio import parse_json_file, write_json
from runkit.lock import LOCK_NAME
from runkit.output_manifest import gaps, seal
from runkit.resume import CHANGES_NAME, CONFIG_NAME, effective_settings

RUN_FILE = "run.json"
SAE_DIR = "sae"
SAE_CONFIG = "config.json"
PRIMARY_RUN = "primary_run"
IMPORTED_PRIMARY = "model"  # an imported run's primary model directory
LABELS_FILE = "feature_labels.json"
ANALYSIS_RECORD = "analysis_files.json"  # the analysis's outputs and digests, written last
SWEEP_MEMBERS = "members"  # a sweep's runs: <sweep>/members/<name>
ACTIVATIONS_SOURCE = "activations"  # run.json's data_source of a run on a user's activations


class RunDirError(UserError, ValueError):
    """A run directory, or one of its files, that cannot be used (the message names the
    file and what is wrong)."""


def _is_within(path: Path, base: Path) -> bool:
    try:
        path.relative_to(base)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class RunRecord:
    """``run.json``: the primary model directory (as recorded: relative to the run, or
    absolute outside it) and the data the run drew: its source, file, number of builds and
    the seed that drew and split them. A run on a user's activations has ``data_source``
    :data:`ACTIVATIONS_SOURCE`, the activations in ``data_path`` and no primary model
    directory. ``extra``: other keys (kept for round trips)."""

    primary_model_dir: str
    data_source: str = "synthetic"
    data_path: str = ""
    num_builds: int = 200_000
    seed: int = 0
    extra: Mapping = field(default_factory=dict)

    _FIELDS = ("primary_model_dir", "data_source", "data_path", "num_builds", "seed")

    def to_json(self) -> dict:
        return {**{k: getattr(self, k) for k in self._FIELDS}, **self.extra}

    @classmethod
    def from_json(cls, raw, *, where: str) -> RunRecord:
        """Check the parsed ``run.json``; an error names ``where`` and the bad field."""
        if not isinstance(raw, dict):
            raise RunDirError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        on_activations = raw.get("data_source") == ACTIVATIONS_SOURCE
        if on_activations and not (isinstance(raw.get("data_path"), str) and raw["data_path"]):
            raise RunDirError(f"{where}: field 'data_path' (the activations the run trained "
                              f"on) is missing or not a path: {raw.get('data_path')!r}")
        if on_activations and raw.get("primary_model_dir", "") != "":
            raise RunDirError(f"{where}: a run on activations has no primary model, but "
                              f"'primary_model_dir' is {raw['primary_model_dir']!r}")
        if not on_activations and (not isinstance(raw.get("primary_model_dir"), str)
                                   or not raw["primary_model_dir"]):
            raise RunDirError(f"{where}: field 'primary_model_dir' (the primary model "
                              f"directory) is missing or not a path: "
                              f"{raw.get('primary_model_dir')!r}")
        for name in ("data_source", "data_path"):
            if name in raw and not isinstance(raw[name], str | type(None)):
                raise RunDirError(f"{where}: field {name!r} must be a string, got "
                                  f"{raw[name]!r}")
        for name in ("num_builds", "seed"):
            if name in raw and (isinstance(raw[name], bool) or not isinstance(raw[name], int)):
                raise RunDirError(f"{where}: field {name!r} must be an integer, got "
                                  f"{raw[name]!r}")
        values = {k: raw[k] for k in cls._FIELDS if raw.get(k) is not None}
        values.setdefault("primary_model_dir", "")
        return cls(**values, extra={k: v for k, v in raw.items() if k not in cls._FIELDS})

    @property
    def on_activations(self) -> bool:
        """Whether the run trained on a user's activations (no primary model)."""
        return self.data_source == ACTIVATIONS_SOURCE


@dataclass(frozen=True)
class RunDir:
    """The run directory at ``root`` (made absolute). Nothing is read at construction."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(os.path.abspath(self.root)))

    @property
    def name(self) -> str:
        return self.root.name

    # ------------------------------------------------------------------ paths

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    settings_path = property(lambda self: self.root / CONFIG_NAME)
    changes_path = property(lambda self: self.root / CHANGES_NAME)
    run_path = property(lambda self: self.root / RUN_FILE)
    metrics_path = property(lambda self: self.root / "metrics.json")
    metrics_log_path = property(lambda self: self.root / "metrics.jsonl")
    curves_path = property(lambda self: self.root / "curves.png")
    checkpoints_dir = property(lambda self: self.root / "checkpoints")
    sae_dir = property(lambda self: self.root / SAE_DIR)
    sae_config_path = property(lambda self: self.root / SAE_DIR / SAE_CONFIG)
    primary_run_dir = property(lambda self: self.root / PRIMARY_RUN)
    concept_set_path = property(lambda self: self.root / "concept_set.json")
    concepts_path = property(lambda self: self.root / "concepts.json")
    absorption_path = property(lambda self: self.root / "absorption.json")
    explanations_path = property(lambda self: self.root / "explanations.json")
    labels_path = property(lambda self: self.root / LABELS_FILE)
    report_dir = property(lambda self: self.root / "report")
    report_features_path = property(lambda self: self.root / "report" / "features.json")
    workbench_dir = property(lambda self: self.root / "workbench")
    diverged_path = property(lambda self: self.root / "diverged.json")
    lock_path = property(lambda self: self.root / LOCK_NAME)

    # ------------------------------------------------------------------ recorded paths

    def record_path(self, path: str | os.PathLike, *, within: str | os.PathLike | None = None
                    ) -> str:
        """How the run records ``path``: relative to the run when it lies inside it (or
        inside ``within``, a folder that holds the run, such as its sweep), else absolute."""
        path = Path(os.path.abspath(path))
        base = self.root if within is None else Path(os.path.abspath(within))
        if _is_within(path, base):
            return os.path.relpath(path, self.root)
        return str(path)

    def resolve(self, recorded: str | os.PathLike) -> Path:
        """The place a recorded path names now: a relative one inside the run; an absolute
        one as it is, or, when it is missing and the run holds its run-relative part (an
        older run that recorded absolute paths, moved since), that part."""
        path = Path(recorded)
        if not path.is_absolute():
            return Path(os.path.normpath(self.root / path))
        if path.exists():
            return path
        found = self._moved(path)
        return path if found is None else found

    def _moved(self, path: Path) -> Path | None:
        """Where ``path`` lies now if it was inside this run (or inside the sweep holding
        it, ``<sweep>/members/<name>``) when recorded: the longest tail of it that exists
        under the run (or the sweep)."""
        tails = [Path(*path.parts[i:]) for i in range(1, len(path.parts))]
        bases = [self.root]
        if self.root.parent.name == SWEEP_MEMBERS:
            bases.append(self.root.parent.parent)
        for base in bases:
            for tail in tails:
                candidate = base / tail
                if ".." not in tail.parts and candidate.exists():
                    return candidate
        return None

    # ------------------------------------------------------------------ run.json

    def seal_analysis(self) -> Path:
        """Record the analysis's outputs (:mod:`runkit.output_manifest`); its last step."""
        return seal(self.root, ANALYSIS_RECORD, [
            self.concepts_path, self.absorption_path, self.explanations_path,
            self.report_dir])

    def analysis_gaps(self) -> list[str]:
        """What of the analysis is missing or changed since it was written ([]: none)."""
        return gaps(self.root, ANALYSIS_RECORD)

    def has_analysis(self) -> bool:
        """Whether the analysis ran to its end and every file it wrote is intact."""
        return not self.analysis_gaps()

    def is_run(self) -> bool:
        return self.run_path.is_file()

    def read_run(self) -> RunRecord:
        """``run.json``, checked; a missing or malformed one is a :class:`RunDirError`."""
        if not self.root.is_dir():
            raise RunDirError(f"{self.root} is not a directory")
        if not self.run_path.is_file():
            raise RunDirError(f"{self.root} has no {RUN_FILE}: not an SAE run directory (make "
                              "one with python -m sae_jax.train or bridge.import_splatnlp)")
        raw = parse_json_file(self.run_path, what="SAE run file", error=RunDirError)
        return RunRecord.from_json(raw, where=str(self.run_path))

    def write_run(self, record: RunRecord) -> Path:
        return write_json(self.run_path, record.to_json())

    def new_record(self, primary_dir: str | os.PathLike, *, data_source: str,
                   data_path: str = "", num_builds: int, seed: int,
                   within: str | os.PathLike | None = None, **extra) -> RunRecord:
        """The record of a run on ``primary_dir`` (paths recorded by :meth:`record_path`)."""
        return RunRecord(self.record_path(primary_dir, within=within), data_source,
                         self.record_path(data_path, within=within) if data_path else "",
                         int(num_builds), int(seed), extra)

    def new_activations_record(self, data_path: str | os.PathLike, *, seed: int,
                               within: str | os.PathLike | None = None,
                               **extra) -> RunRecord:
        """The record of a run on the activations at ``data_path``."""
        return RunRecord("", ACTIVATIONS_SOURCE, self.record_path(data_path, within=within),
                         0, int(seed), extra)

    def primary_dir(self, record: RunRecord | None = None) -> Path:
        """The run's primary model directory, checked: one recorded outside the run that is
        gone is an error naming it and the flag it came from; a run on activations has
        none (an error saying so)."""
        record = record or self.read_run()
        if record.on_activations:
            raise RunDirError(f"{self.run_path}: the run trained on the activations in "
                              f"{record.data_path}, not on a primary model: there is no "
                              "primary model to load")
        path = self.resolve(record.primary_model_dir)
        if not (path / "config.json").is_file():
            given = Path(record.primary_model_dir).is_absolute()
            raise RunDirError(
                f"{self.run_path}: the primary model directory {path} "
                f"{'does not exist' if not path.exists() else 'holds no config.json'}"
                + ("; it was given to sae_jax.train as --primary_dir: put the model back "
                   "there, or write its new place into 'primary_model_dir' of "
                   f"{self.run_path}" if given else
                   f"; the run folder {self.root} is incomplete (copy it whole)"))
        return path

    def activations_path(self, record: RunRecord | None = None) -> Path:
        """The activations a run on activations trained on, checked: gone is an error naming
        the place and how to fix it."""
        record = record or self.read_run()
        if not record.on_activations:
            raise RunDirError(f"{self.run_path}: the run trained on a primary model's "
                              "activations, not on activations from a file")
        path = self.resolve(record.data_path)
        if not path.exists():
            raise RunDirError(f"{self.run_path}: the activations {path} do not exist; they "
                              "were given to sae_jax.train as --activations: put them back "
                              f"there, or write their new place into 'data_path' of "
                              f"{self.run_path}")
        return path

    def data_path(self, record: RunRecord | None = None) -> str:
        """The run's data file ("" for generated data), resolved as :meth:`resolve`."""
        record = record or self.read_run()
        return str(self.resolve(record.data_path)) if record.data_path else ""

    # ------------------------------------------------------------------ other records

    def has_settings(self) -> bool:
        return self.settings_path.is_file()

    def settings(self) -> dict:
        """The settings the run goes on under (``train_config.json`` with accepted
        changes); an error names the file when it is missing or malformed."""
        try:
            settings = effective_settings(self.root)
        except ValueError as e:
            raise RunDirError(str(e)) from None
        if not isinstance(settings, dict):
            raise RunDirError(f"{self.settings_path}: expected a JSON object of settings")
        return settings

    def sae_config(self) -> dict:
        """``sae/config.json`` as a dict (the SAE's shape and architecture), checked."""
        path = self.sae_config_path
        if not path.is_file():
            raise RunDirError(f"no SAE in {self.sae_dir}: run sae_jax.train first (or "
                              f"bridge.import_splatnlp with --sae); it has no {SAE_CONFIG}")
        raw = parse_json_file(path, what="SAE config", error=RunDirError)
        if not isinstance(raw, dict):
            raise RunDirError(f"{path}: expected a JSON object, got {type(raw).__name__}")
        for name in ("input_dim", "expansion_factor"):
            value = raw.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise RunDirError(f"{path}: field {name!r} must be a positive number, got "
                                  f"{value!r}")
        return raw

    def metrics(self) -> dict:
        """``metrics.json`` ({} when the run has not finished)."""
        return self._optional_object(self.metrics_path, "SAE run metrics") or {}

    def explanations(self) -> dict | None:
        return self._optional_object(self.explanations_path, "explanations file")

    def concepts(self) -> dict | None:
        return self._optional_object(self.concepts_path, "concept recovery file")

    def absorption(self) -> dict | None:
        return self._optional_object(self.absorption_path, "absorption file")

    def report_features(self) -> dict:
        """``report/features.json`` (the static report's pages; {} when absent)."""
        return self._optional_object(self.report_features_path, "report pages file") or {}

    @staticmethod
    def _optional_object(path: Path, what: str) -> dict | None:
        if not path.is_file():
            return None
        raw = parse_json_file(path, what=what, error=RunDirError)
        if not isinstance(raw, dict):
            raise RunDirError(f"{path}: expected a JSON object, got {type(raw).__name__}")
        return raw
