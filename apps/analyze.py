"""Analyze a trained SAE run: feature statistics, concept recovery, explanations, report.

    python -m apps.analyze --workdir=DIR [--top_features=64] [--num_builds=N]
                           [--noexplanations]

Writes ``DIR/concepts.json`` (when the builds carry planted concepts),
``DIR/absorption.json`` (absorption and splitting of the AP rungs),
``DIR/explanations.json`` and ``DIR/report/index.html``
(:func:`apps.analysis.pipeline.analyze`). A run trained on activation files
(``--activations``) gets the report alone, over its held-out rows (``--num_builds``: at
most this many of them).
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from apps.analysis.pipeline import analyze
from runkit.cli import report_user_errors, run_with_flagfiles
from runkit.run_dir import RunDir

flags.DEFINE_string("workdir", None, "SAE run directory (holds run.json and sae/); required.")
flags.DEFINE_integer("top_features", 64, "Top-ranked features given a full section in the "
                     "report.")
flags.DEFINE_integer("num_builds", None, "Analyze at most this many held-out builds, or rows "
                     "of a run on activation files (default: the run's --eval_builds or "
                     "--eval_rows).")
flags.DEFINE_bool("explanations", True, "Compute explanations.json (the longest stage for a "
                  "large SAE; without it an earlier explanations.json is left as it is).")


@report_user_errors
def main(argv):
    """``python -m apps.analyze``; a bad --workdir or run prints one ``error:`` line."""
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # checkpoint-library chatter drowns the summary
    f = flags.FLAGS
    workdir = Path(f.workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"--workdir {workdir} is not a directory")
    run = RunDir(workdir)
    record = run.read_run()  # checked before any work: run.json, the SAE, the primary
    run.sae_config()
    if record.on_activations:
        run.activations_path(record)
    else:
        run.primary_dir(record)
    if f.num_builds is not None and f.num_builds <= 0:
        raise ValueError(f"--num_builds must be positive, got {f.num_builds}")
    if f.top_features < 0:
        raise ValueError(f"--top_features must be >= 0, got {f.top_features}")
    analyze(workdir, top_features=f.top_features, num_builds=f.num_builds,
            explanations=f.explanations)
    return 0


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    run_with_flagfiles(main)
