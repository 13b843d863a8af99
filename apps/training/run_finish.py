"""What a trained SAE's run directory gets once its loop is done: the SAE, its evaluation on
held-out inputs (``metrics.json``: held-out builds through the primary, or held-out rows of
activation files) and its training curves. A single run and each member of a sweep finish
here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from apps.runs.curves import plot_curves
from apps.training.engine import TrainingFault
from runkit.hosts import is_writer
from runkit.jsonio import write_json
from sae_jax.config import SAETrainConfig
from sae_jax.model import sae_from_params
from sae_jax.recipes import inference_params
from sae_jax.sae_dir import save_sae
from sae_jax.step import TrainState

EVAL_BATCH_SIZE = 512
# The keys of the last metrics line that metrics.json keeps as "final_train".
FINAL_TRAIN_KEYS = ("loss", "mse", "l1", "kl", "l0", "dead_count", "aux_loss", "dead_aux",
                    "threshold", "prefix_mse", "threshold_mean")


def check_result(result: dict) -> dict:
    """Refuse an evaluation with non-finite numbers: a NaN is never written as a result.
    The one defined exception: ``loss_recovered`` when mean-ablating the pooled vector does
    not change the primary's loss (nothing to recover), recorded as None with a warning."""
    bad = [k for k, v in result.items() if isinstance(v, float) and not np.isfinite(v)]
    if bad == ["loss_recovered"] and abs(result["l_ablated"] - result["l_true"]) <= 1e-12:
        print("warning: mean-ablating the pooled vector leaves the primary's loss unchanged, "
              "so loss_recovered is undefined; recorded as null")
        return {**result, "loss_recovered": None}
    if bad:
        raise TrainingFault(f"evaluation gave non-finite {bad}; the SAE in sae/ is kept, "
                            "metrics.json is not written")
    return result


def finish_sae(rundir: Path, cfg: SAETrainConfig, sae_config, state: TrainState, source, *,
               last_logged: dict, seconds: Callable[[], float], num_devices: int,
               shared_evaluation=None, extra: dict | None = None, within=None) -> dict:
    """Save the SAE ``state`` holds in ``rundir/sae``, evaluate it on ``source``'s held-out
    inputs (:mod:`apps.training.activation_sources`; ``shared_evaluation``: what several
    SAEs share of that, made once by ``source.shared_evaluation``), write ``metrics.json``
    and ``curves.png``; returns the result. ``last_logged``: the run's latest metrics line;
    ``seconds()``: the run's time so far (read after the evaluation); ``extra``: more keys
    for the result; ``within``: the sweep holding the run (paths inside it are recorded
    relative to the run, as in run.json). Only the writing process writes."""
    params, usage_ema = jax.device_get((inference_params(state.params, cfg), state.usage_ema))
    if not all(np.all(np.isfinite(v)) for v in jax.tree.leaves(params)):
        raise TrainingFault("the trained SAE has non-finite parameters; it is not saved")
    sae = sae_from_params(sae_config, params, usage_ema)
    save_sae(rundir / "sae", sae, write=is_writer())
    print(f"evaluating on {source.held_out} ...")
    result = check_result(source.evaluate(sae, cfg, batch_size=EVAL_BATCH_SIZE,
                                          shared=shared_evaluation))
    result.update(
        steps=int(state.step), seconds=round(seconds(), 2), num_devices=num_devices,
        num_processes=jax.process_count(),
        d_in=sae_config.input_dim, d_sae=sae_config.hidden_dim,
        **source.result_fields(rundir, within=within),
        final_train={k: last_logged[k] for k in FINAL_TRAIN_KEYS if k in last_logged},
        **(extra or {}),
    )
    result.update(sae_config.arch.summary_fields(sae_config))
    if is_writer():
        write_json(rundir / "metrics.json", result)
        dead = round(result["dead_fraction"] * sae_config.hidden_dim)
        plot_curves(rundir / "metrics.jsonl", rundir / "curves.png", cfg,
                    held_out_dead=(dead, result["num_inputs"]))
    return result
