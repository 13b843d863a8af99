"""Fetch SplatNLP's published models (and optionally its SAE, labels and data) and import them.

    python -m bridge.fetch_splatnlp --out=DIR [--ultra] [--sae] [--labels] [--data] \
        [--base_url=https://splat-nlp.nyc3.cdn.digitaloceanspaces.com/dataset_v2/]

Downloads into ``DIR`` itself, under the published names (so ``DIR`` is a SplatNLP run
directory): always ``model.pth``, ``model_params.json``, ``vocab.json``,
``weapon_vocab.json``, ``model_info.json``; ``--ultra`` adds ``model_ultra.pth``; ``--sae``
adds ``sae_config_ultra.json`` and ``sae_model_ultra.pth`` (and implies ``--ultra``);
``--labels`` adds ``feature_labels_ultra.json`` and, when published,
``consolidated_ultra.json`` (and implies ``--sae``); ``--data`` adds ``tokenized_data.csv``.
Complete files are skipped without a request, ``.part`` files are resumed (see
:mod:`bridge.download`). Then it imports:

- ``DIR/imported``: ``model.pth`` (``model/``, ``run.json``);
- ``DIR/imported_ultra`` (with ``--ultra``): ``model_ultra.pth`` (``model/``), the SAE
  (``sae/``, with ``--sae``), the labels (``feature_labels.json``, with ``--labels``) and
  ``run.json``.

With ``--data``, both ``run.json`` files name ``DIR/tokenized_data.csv`` as their data
(source ``splatnlp_tsv``, a seeded subset of ``num_builds`` builds for analysis).
Everything is downloaded before anything is imported, and the imports are written beside
and renamed into place at the end, so a failure leaves no half-imported output (an earlier
complete import stays as it was).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from absl import app, flags, logging

from bridge.download import DEFAULT_TIMEOUT_S, Fetched, download
from bridge.import_splatnlp import IMPORTED_NUM_BUILDS, write_imported_run
from bridge.splatnlp import CheckpointMismatchError, load_splatnlp
from bridge.splatnlp_published import (
    DEFAULT_BASE_URL,
    Selection,
    apply_sae_config,
    artifact_url,
    consolidated_to_labels,
    read_json_object,
    ultra_model_params,
)
from primary.model import PrimaryConfig
from primary.splatnlp_tsv import read_splatnlp_tsv
from primary.vocab import Vocab, WeaponVocab
from runkit.cli import report_user_errors, run_with_flagfiles
from runkit.jsonio import write_json
from runkit.run_dir import RunDir
from sae_jax.feature_labels import import_labels, read_labels

IMPORTED = "imported"
IMPORTED_ULTRA = "imported_ultra"
DATA_FILE = "tokenized_data.csv"
DATA_CHECK_LINES = 1000  # lines of the data file read with the run's vocabularies as a check


@dataclass
class FetchSummary:
    """What :func:`fetch_splatnlp` did: the files, the import directories, what it found."""

    fetched: list[Fetched] = field(default_factory=list)
    imported: dict[str, Path] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)


def download_artifacts(base_url: str, out: str | os.PathLike, selection: Selection, *,
                       timeout: float = DEFAULT_TIMEOUT_S, progress: bool = True
                       ) -> list[Fetched]:
    """Every file of ``selection`` from ``base_url`` into ``out`` (see the module docstring);
    stops at the first failure with its :class:`bridge.download.DownloadError`."""
    out = Path(out)
    fetched = []
    for artifact in selection.artifacts():
        got = download(artifact_url(base_url, artifact.name), out / artifact.name,
                       timeout=timeout, optional=artifact.optional, progress=progress)
        fetched.append(got)
    return fetched


def _check_data(path: Path, vocab: Vocab, weapon_vocab: WeaponVocab, scratch: Path) -> None:
    """Read the first :data:`DATA_CHECK_LINES` lines with the run's vocabularies (the whole
    file is read by the commands that use it)."""
    head = scratch / "data_head.tsv"
    with open(path, encoding="utf-8", newline="") as src, open(head, "w", encoding="utf-8",
                                                                newline="") as dst:
        dst.writelines(itertools.islice(src, DATA_CHECK_LINES + 1))
    try:
        read_splatnlp_tsv(head, vocab, weapon_vocab)
    except ValueError as e:
        raise ValueError(str(e).replace(str(head), str(path))) from None
    finally:
        head.unlink()


def _import_base(run_dir: Path, dest: Path) -> None:
    run = load_splatnlp(run_dir, None, model_file=run_dir / "model.pth")
    write_imported_run(run, dest, imported_from=str(run_dir))


def _import_ultra(run_dir: Path, dest: Path, scratch: Path, selection: Selection
                  ) -> list[str]:
    """The Ultra model (+ SAE, + labels) into ``dest``; returns the findings."""
    sae_config = sae_config_path = None
    if selection.sae:
        sae_config_path = run_dir / "sae_config_ultra.json"
        sae_config = read_json_object(sae_config_path)
    params, source, findings = ultra_model_params(run_dir, sae_config)
    PrimaryConfig.from_dict(params, source=f"Ultra model parameters from {source}")  # checked
    stage = run_dir
    if params != read_json_object(run_dir / "model_params.json"):
        # load_splatnlp reads the parameters from a run directory: give it one with them.
        stage = scratch / "ultra_run"
        stage.mkdir()
        write_json(stage / "model_params.json", params)
        for name in ("vocab.json", "weapon_vocab.json"):
            shutil.copyfile(run_dir / name, stage / name)
    sae_file = run_dir / "sae_model_ultra.pth" if selection.sae else None
    try:
        run = load_splatnlp(stage, sae_file, model_file=run_dir / "model_ultra.pth")
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{e} (Ultra model parameters from {source})") from None
    if sae_config is not None:
        run.sae, sae_findings = apply_sae_config(run.sae, sae_config,
                                                 source=str(sae_config_path),
                                                 checkpoint=str(sae_file))
        findings += sae_findings
    findings += [f"note: {n}" for n in run.notes]
    labels_file = consolidated = None
    if selection.labels:
        labels_file = run_dir / "feature_labels_ultra.json"
        read_labels(labels_file, num_features=run.sae.hidden_dim, missing_ok=False)
        if (run_dir / "consolidated_ultra.json").is_file():
            consolidated = scratch / "consolidated_labels.json"
            write_json(consolidated, consolidated_to_labels(
                read_json_object(run_dir / "consolidated_ultra.json"),
                source=str(run_dir / "consolidated_ultra.json")))
            read_labels(consolidated, num_features=run.sae.hidden_dim, missing_ok=False)
    write_imported_run(run, dest, imported_from=str(run_dir))
    if labels_file is not None:
        counts = import_labels(labels_file, RunDir(dest).labels_path,
                               num_features=run.sae.hidden_dim)
        findings.append(f"labels: {counts['imported']} from {labels_file.name}")
        if consolidated is not None:  # fills only the features the first file leaves out
            counts = import_labels(consolidated, RunDir(dest).labels_path,
                                   num_features=run.sae.hidden_dim)
            findings.append(f"labels: {counts['imported']} more from consolidated_ultra.json "
                            f"({counts['kept']} already labelled)")
    return findings


def _finish_run_json(staged: Path, final: Path, data: Path | None, extra: dict) -> None:
    """Point ``run.json`` at the data if fetched: relative to the import's final place
    ``final`` (the data lies in the fetched run directory that holds it)."""
    info = read_json_object(staged / "run.json")
    if data is not None:
        info.update(data_source="splatnlp_tsv",
                    data_path=RunDir(final).record_path(data, within=final.parent),
                    num_builds=IMPORTED_NUM_BUILDS)
    info.update(extra)
    write_json(staged / "run.json", info)


def _move_into_place(staged: dict[str, Path], out: Path) -> dict[str, Path]:
    """Rename each staged import to ``out/<name>``, replacing an earlier one."""
    placed = {}
    for name, path in staged.items():
        final = out / name
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=out))
            final.rename(old / name)
        path.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        placed[name] = final
    return placed


def import_fetched(run_dir: str | os.PathLike, selection: Selection, *,
                   base_url: str = DEFAULT_BASE_URL) -> FetchSummary:
    """Import the downloaded files of ``run_dir`` into ``run_dir/imported`` (and
    ``run_dir/imported_ultra``); all is built in a scratch directory first."""
    run_dir = Path(run_dir).absolute()
    summary = FetchSummary()
    scratch = Path(tempfile.mkdtemp(prefix=".import-", dir=run_dir))
    try:
        data = run_dir / DATA_FILE if selection.data else None
        if data is not None:
            _check_data(data, Vocab.load(run_dir / "vocab.json"),
                        WeaponVocab.load(run_dir / "weapon_vocab.json"), scratch)
            summary.findings.append(f"data: {DATA_FILE} (its first {DATA_CHECK_LINES} lines "
                                    "read as a check) is the imported runs' data")
        staged = {IMPORTED: scratch / IMPORTED}
        _import_base(run_dir, staged[IMPORTED])
        _finish_run_json(staged[IMPORTED], run_dir / IMPORTED, data,
                         {"splatnlp": {"base_url": base_url, "model": "model.pth"}})
        if selection.ultra:
            staged[IMPORTED_ULTRA] = scratch / IMPORTED_ULTRA
            summary.findings += _import_ultra(run_dir, staged[IMPORTED_ULTRA], scratch,
                                              selection)
            files = {"base_url": base_url, "model": "model_ultra.pth"}
            if selection.sae:
                files.update(sae="sae_model_ultra.pth", sae_config=read_json_object(
                    run_dir / "sae_config_ultra.json"))
            _finish_run_json(staged[IMPORTED_ULTRA], run_dir / IMPORTED_ULTRA, data,
                             {"splatnlp": files})
        summary.imported = _move_into_place(staged, run_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary


def fetch_splatnlp(out: str | os.PathLike, selection: Selection, *,
                   base_url: str = DEFAULT_BASE_URL, timeout: float = DEFAULT_TIMEOUT_S,
                   progress: bool = True) -> FetchSummary:
    """Download (:func:`download_artifacts`), then import (:func:`import_fetched`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    fetched = download_artifacts(base_url, out, selection, timeout=timeout, progress=progress)
    summary = import_fetched(out, selection, base_url=base_url)
    summary.fetched = fetched
    return summary


def _format(summary: FetchSummary, seconds: float) -> str:
    lines = []
    for f in summary.fetched:
        if f.action == "missing":
            lines.append(f"  {f.path.name}: not published (HTTP 404), skipped")
        elif f.action == "skipped":
            lines.append(f"  {f.path.name}: already complete ({f.size:,} bytes), not fetched")
        else:
            lines.append(f"  {f.path.name}: {f.action}, {f.received:,} bytes received "
                         f"({f.size:,} bytes)")
    lines += [f"  {line}" for line in summary.findings]
    lines += [f"wrote {path}" for path in summary.imported.values()]
    lines.append(f"done in {seconds:.1f} s")
    return "\n".join(lines)


def define_flags() -> None:
    """Flags are defined only when run as a program, so importing this module defines none."""
    flags.DEFINE_string("out", None, "Directory for the downloaded files; the imports go to "
                        "OUT/imported and OUT/imported_ultra; required.")
    flags.DEFINE_string("base_url", DEFAULT_BASE_URL, "Where SplatNLP's files are published.")
    flags.DEFINE_bool("ultra", False, "Also fetch and import the Ultra model (model_ultra.pth).")
    flags.DEFINE_bool("sae", False, "Also fetch the Ultra SAE (sae_config_ultra.json, "
                      "sae_model_ultra.pth); implies --ultra.")
    flags.DEFINE_bool("labels", False, "Also fetch the Ultra SAE's feature labels "
                      "(feature_labels_ultra.json, consolidated_ultra.json if published); "
                      "implies --sae.")
    flags.DEFINE_bool("data", False, "Also fetch tokenized_data.csv and name it as the "
                      "imported runs' data.")
    flags.DEFINE_float("timeout", DEFAULT_TIMEOUT_S, "Seconds without an answer before a "
                       "request fails.")
    flags.mark_flags_as_required(["out"])


@report_user_errors
def main(argv):
    """``python -m bridge.fetch_splatnlp``: a failed download or import prints one ``error:``
    line and leaves no half-imported output."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every write step at INFO
    start = time.perf_counter()
    f = flags.FLAGS
    selection = Selection(ultra=f.ultra, sae=f.sae, labels=f.labels, data=f.data)
    implied = [name for name, given, used in (("--ultra", f.ultra, selection.ultra),
                                               ("--sae", f.sae, selection.sae)) if used > given]
    print(f"fetching {len(selection.artifacts())} files from {f.base_url} into {f.out}"
          + (f" ({', '.join(implied)} implied)" if implied else ""))
    summary = fetch_splatnlp(f.out, selection, base_url=f.base_url, timeout=f.timeout)
    print(_format(summary, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    define_flags()
    run_with_flagfiles(main)
