"""Train a sparse autoencoder on the primary model's pooled activations, or on your own.

    python -m sae_jax.train --flagfile=configs/demo.flags --workdir=DIR [--primary_dir=...]
    python -m sae_jax.train --activations=PATH --workdir=DIR [--architecture=topk ...]

With ``--activations`` (a .npy or .safetensors file of ``(rows, d_in)`` floats, or a folder
of such shards) no primary model is needed: the rows are streamed from disk and
``--eval_rows`` of them held out (docs/training.md, "Your own activations").
Without ``--primary_dir`` the demo primary model is trained first (into
``DIR/primary_run``, settings from ``primary/configs/primary_demo.flags``). Writes
``DIR/{metrics.json, metrics.jsonl, train_config.json, run.json, checkpoints/,
sae/, curves.png}`` and, for synthetic data, ``DIR/concept_set.json`` (the concepts
planted: ``--concepts_file``, the primary's recorded set, or the built-in 19);
restarting with the same ``--workdir`` resumes from the latest checkpoint. Flags
given on the command line override the flagfile. Settings given nowhere take the
original's defaults, except where those cannot fit the run: no resampling for the
architectures AuxK revives, Matryoshka's groups from the SAE's width, and for
``--activations`` every row each epoch and a buffer sized to the file
(:func:`apps.training.activation_sources.implied_settings`).
"""

from __future__ import annotations

import dataclasses

from absl import app, flags, logging

from runkit.cli import report_user_errors, run_with_flagfiles
from runkit.flags import config_from_flags as config_from_dataclass_flags
from runkit.flags import define_config_flags
from sae_jax.config import SAETrainConfig

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (created; resumed if it exists); required.")
_PRIMARY_DIR = flags.DEFINE_string(
    "primary_dir", None, "Primary model directory to explain; default: train the demo primary.")
_ANALYZE = flags.DEFINE_bool("analyze", True, "Run the feature analysis after training.")
_STOP_AFTER = flags.DEFINE_integer(
    "stop_after_steps", None,
    "Checkpoint and stop after this many SAE steps, resumable (default: run to the end).",
    lower_bound=1)
_OVERRIDE = flags.DEFINE_bool(
    "override", False, "Continue a workdir's run under settings other than those it was "
    "started with (recorded in config_changes.jsonl).")

_NOT_FLAGS = ("extra", "concept_set_sha256")  # the digest is filled in from the set
define_config_flags(SAETrainConfig, skip=_NOT_FLAGS)


def config_from_flags(values=flags.FLAGS) -> SAETrainConfig:
    """The frozen run config from parsed flags (resample_steps as integers)."""
    return config_from_dataclass_flags(SAETrainConfig, values, skip=_NOT_FLAGS)


def unset_settings(values=flags.FLAGS) -> frozenset:
    """Names of the settings neither the command line nor a flagfile gave."""
    return frozenset(f.name for f in dataclasses.fields(SAETrainConfig)
                     if f.name not in _NOT_FLAGS and not values[f.name].present)


@report_user_errors
def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    logging.set_verbosity(logging.WARNING)  # keep library INFO chatter (orbax) off the console
    from apps.training.single_run import metrics_summary, train_sae
    from runkit.hosts import initialize_multihost_from_env

    initialize_multihost_from_env()
    cfg = config_from_flags()
    result = train_sae(cfg, _WORKDIR.value, primary_dir=_PRIMARY_DIR.value,
                       stop_after_steps=_STOP_AFTER.value, analyze=_ANALYZE.value,
                       override=_OVERRIDE.value, unset=unset_settings())
    if result.get("stopped"):
        print(f"stopped after {result['steps']} SAE steps; run again to resume")
        return 0
    print(f"done: {_WORKDIR.value}")
    print(metrics_summary(result))
    return 0


if __name__ == "__main__":
    run_with_flagfiles(main)
