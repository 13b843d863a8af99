"""Train the primary gear-build model.

    python -m primary.train --flagfile=primary/configs/primary_demo.flags --workdir=DIR

Writes ``DIR/{train_config.json, metrics.jsonl, checkpoints/, metrics.json, model/}``;
synthetic builds plant ``--concepts_file``'s concepts (default the built-in 19), recorded
in ``model/concept_set.json``.
Restarting with the same ``--workdir`` resumes from the latest checkpoint; a finished
workdir with the same settings is reported without training again. Flags given on
the command line override those of the flagfile.
"""

from __future__ import annotations

import json

from absl import app, flags, logging

from primary.training import PrimaryTrainConfig, train_primary
from runkit.cli import report_user_errors, run_with_flagfiles
from runkit.flags import config_from_flags as config_from_dataclass_flags
from runkit.flags import define_config_flags

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (created; resumed if it exists); required.")
_STOP_AFTER = flags.DEFINE_integer(
    "stop_after_steps", None,
    "Stop after this many steps, as if killed, resumable (default: run to the end).",
    lower_bound=1)
_OVERRIDE = flags.DEFINE_bool(
    "override", False, "Continue a workdir's run under settings other than those it was "
    "started with (recorded in config_changes.jsonl).")

_NOT_FLAGS = ("concept_set_sha256",)  # filled in by the run from --concepts_file
define_config_flags(PrimaryTrainConfig, skip=_NOT_FLAGS)


def config_from_flags(values=flags.FLAGS) -> PrimaryTrainConfig:
    return config_from_dataclass_flags(PrimaryTrainConfig, values, skip=_NOT_FLAGS)


@report_user_errors
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep checkpoint-library chatter out
    from runkit.hosts import initialize_multihost_from_env

    initialize_multihost_from_env()
    cfg = config_from_flags()
    print(f"training the primary model in {_WORKDIR.value}")
    metrics = train_primary(cfg, _WORKDIR.value, stop_after_steps=_STOP_AFTER.value,
                            override=_OVERRIDE.value)
    print(json.dumps(metrics, indent=2))
    if "val_f1" in metrics:
        print(f"validation F1 {metrics['val_f1']:.4f} vs frequency baseline "
              f"{metrics['baseline_f1']:.4f}; model in {_WORKDIR.value}/model")


if __name__ == "__main__":
    run_with_flagfiles(main)
