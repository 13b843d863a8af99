"""Import a SplatNLP run directory (PyTorch checkpoints) into this project's on-disk layout.

    python -m bridge.import_splatnlp --run_dir=RUN [--sae=SAE.pth] [--model=MODEL.pth] \
        [--labels=feature_labels_ultra.json] --out=OUT

Writes ``OUT/model`` (a primary model directory), ``OUT/sae`` (an SAE directory,
when ``--sae`` is given), ``OUT/feature_labels.json`` (SplatNLP's feature labels,
when ``--labels`` is given; see :mod:`sae_jax.feature_labels`) and ``OUT/run.json``, so
every later command (SAE training with ``--primary_dir=OUT/model``, analysis,
steering, SAELens export) works on the imported models. torch is not needed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from absl import app, flags, logging

from bridge.splatnlp import SplatNLPRun, load_splatnlp
from primary.model import count_params
from primary.model_dir import save_primary
from runkit.cli import report_user_errors, run_with_flagfiles
from runkit.run_dir import RunDir
from sae_jax.feature_labels import import_labels, read_labels
from sae_jax.sae_dir import save_sae


def define_flags() -> None:
    """Flags are defined only when run as a program, so importing this module defines none."""
    flags.DEFINE_string("run_dir", None, "SplatNLP run directory (model_params.json, "
                        "vocab.json, weapon_vocab.json, model .pth); required.")
    flags.DEFINE_string("sae", None, "The SAE's .pth (absolute, or relative to run_dir); "
                        "default: none, the model alone is imported.")
    flags.DEFINE_string("model", None, "The model's .pth; default: the single .pth in "
                        "run_dir that is not the SAE.")
    flags.DEFINE_string("labels", None, "SplatNLP's feature labels file (e.g. "
                        "feature_labels_ultra.json; absolute, or relative to run_dir or the "
                        "current directory), imported "
                        "into OUT/feature_labels.json; needs --sae (default: none).")
    flags.DEFINE_string("out", None, "Output directory (created); required.")
    flags.mark_flags_as_required(["run_dir", "out"])


# run.json defaults for an imported run: the original's data is not carried along, so later
# commands that need builds fall back to the built-in synthetic source.
IMPORTED_DATA_SOURCE = "synthetic"
IMPORTED_NUM_BUILDS = 20000


def write_imported_run(run: SplatNLPRun, out: str | os.PathLike, *, imported_from: str) -> dict:
    """Write ``out/model``, ``out/sae`` (if the run has an SAE) and ``out/run.json``."""
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    model_dir = save_primary(out / "model", run.primary, run.vocab, run.weapon_vocab)
    if run.sae is not None:
        save_sae(out / "sae", run.sae)
    run = RunDir(out)
    record = run.new_record(model_dir, data_source=IMPORTED_DATA_SOURCE,
                            num_builds=IMPORTED_NUM_BUILDS, seed=0,
                            imported_from=str(Path(imported_from).absolute()))
    run.write_run(record)
    return record.to_json()


def import_run(run_dir: str, out: str, *, sae: str | None = None, model: str | None = None,
               labels: str | None = None) -> tuple[SplatNLPRun, dict]:
    """Read the run (and its labels file, checked against the SAE's size) before writing."""
    labels_file = _labels_file(run_dir, labels) if labels else None
    if labels_file is not None and sae is None:
        raise ValueError("--labels label SAE features: give the SAE with --sae as well")
    run = load_splatnlp(run_dir, sae, model_file=model)
    if labels_file is not None:
        read_labels(labels_file, num_features=run.sae.hidden_dim, missing_ok=False)
    info = write_imported_run(run, out, imported_from=run_dir)
    if labels_file is not None:
        import_labels(labels_file, RunDir(out).labels_path, num_features=run.sae.hidden_dim)
    return run, info


def _labels_file(run_dir: str, labels: str) -> Path:
    """``labels`` as given if absolute, else in ``run_dir`` (as ``--sae``) or the current
    directory."""
    path = Path(labels)
    for candidate in ([path] if path.is_absolute() else [Path(run_dir) / path, path]):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"--labels {labels}: no such file (looked in {run_dir} and in the "
                            "current directory)")


def _summary(run: SplatNLPRun, out: str, seconds: float) -> str:
    c = run.config
    lines = [
        f"imported {run.model_path}",
        f"  primary: {count_params(run.primary):,} parameters (embedding {c.embedding_dim}, "
        f"hidden {c.hidden_dim}, {c.num_layers} layers, {c.num_heads} heads, "
        f"{c.num_inducing_points} inducing points, layer norm {c.use_layer_norm})",
        f"  vocab: {len(run.vocab)} tokens, {len(run.weapon_vocab)} weapons",
    ]
    if run.sae is not None:
        lines.append(f"  sae: {run.sae_path}: {run.sae.config.input_dim} -> "
                     f"{run.sae.hidden_dim} features")
    lines += [f"  note: {n}" for n in run.notes]
    lines.append(f"wrote {Path(out).absolute()} in {seconds:.2f} s")
    return "\n".join(lines)


@report_user_errors
def main(argv):
    """``python -m bridge.import_splatnlp``; a bad --run_dir or file prints one ``error:``
    line, and nothing is written (``--out`` is created only once the import has been read)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every write step at INFO
    start = time.perf_counter()
    f = flags.FLAGS
    if not Path(f.run_dir).is_dir():
        raise FileNotFoundError(f"--run_dir {f.run_dir} is not a directory")
    if Path(f.out).exists() and not Path(f.out).is_dir():
        raise FileExistsError(f"--out {f.out} exists and is not a directory")
    run, _ = import_run(f.run_dir, f.out, sae=f.sae, model=f.model, labels=f.labels)
    print(_summary(run, f.out, time.perf_counter() - start))
    if f.labels:
        labels = RunDir(f.out).labels_path
        print(f"  labels: {len(read_labels(labels))} feature labels in {labels}")
    return 0


if __name__ == "__main__":
    define_flags()
    run_with_flagfiles(main)
