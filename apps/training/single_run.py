"""The SAE training run, end to end: harvest, train, checkpoint, evaluate, report.

:func:`train_sae` is what ``python -m sae_jax.train`` calls. The loop follows
the original's decoupled scheme (docs/original.md §5): every primary batch is run
through the frozen primary model and its pooled vectors are pushed into the
device-resident activation buffer; once the buffer holds ``min_buffer`` rows,
``sae_steps_per_primary_step`` SAE steps follow each push. With ``--activations`` the
batches are rows of the user's files instead, and no primary model is needed
(:mod:`apps.training.activation_sources` holds both sources).

The loop is :mod:`apps.training.engine`'s, the one a sweep runs too (resume, chunks,
health checks, metrics lines, checkpoints); this module gives it one SAE to
train (:func:`single_trainee`: :func:`apps.training.chunk.single_steps` after each
push; a non-finite loss stops the run) and finishes the run directory
(:mod:`apps.training.run_finish`) and its analysis.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import jax

from apps.analysis.pipeline import analyze
from apps.runs.setup import open_settings
from apps.training.activation_sources import (
    features_of,
    implied_settings,
    open_source,
    plan_source,
)
from apps.training.chunk import single_steps
from apps.training.engine import Trainee, TrainingFault, run_loop
from apps.training.run_finish import finish_sae
from runkit.checkpoints import Checkpoints
from runkit.hosts import (
    COORDINATOR_ENV,
    NUM_PROCESSES_ENV,
    PROCESS_ID_ENV,
    is_writer,
    wait_for_all,
)
from runkit.jsonio import read_json
from runkit.lock import WorkdirLock
from runkit.resume import claim_config
from runkit.run_dir import RunDir
from runkit.sharding import batch_sharding, replicate
from sae_jax.config import SAETrainConfig
from sae_jax.model import create_sae
from sae_jax.step import init_train_state

CHECKPOINTS_KEPT = 3


def single_trainee(cfg: SAETrainConfig, plan, sae_config, mesh, workdir: Path) -> Trainee:
    """One SAE, initialised from ``cfg.seed``, logging to ``workdir/metrics.jsonl``."""
    sae = create_sae(sae_config, seed=cfg.seed)
    state = replicate(init_train_state(sae, cfg, plan.total_sae_steps), mesh)
    steps = single_steps(cfg, plan.total_sae_steps, plan.sae_steps_per_batch,
                         batch_sharding(mesh))
    return Trainee(state, steps, [workdir / "metrics.jsonl"],
                   to_tree=lambda state: {"train_state": state},
                   from_tree=lambda tree: tree["train_state"],
                   what=f"this run ({sae_config}, buffer_size {cfg.buffer_size})")


def _run_analysis(workdir: Path):
    if jax.process_count() > 1:
        return _run_analysis_apart(workdir)
    print("analyzing the features ...")
    return analyze(workdir)


def _run_analysis_apart(workdir: Path) -> None:
    """Process 0 of a multi-process run analyzes in a single-process run of its own, on CPU:
    the analysis loads the models through orbax, whose restores would wait for the other
    processes of this run, which are done (and this process keeps its accelerators)."""
    env = {k: v for k, v in os.environ.items()
           if k not in (COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    print("analyzing the features (in a separate single-process run on CPU) ...", flush=True)
    code = subprocess.run([sys.executable, "-m", "apps.analyze", f"--workdir={workdir}"],
                          env=env, stdin=subprocess.DEVNULL).returncode
    if code:
        raise TrainingFault(f"the analysis failed (exit status {code}); the SAE and "
                            f"metrics.json are written; rerun it with: python -m "
                            f"apps.analyze --workdir={workdir}")


def _finished_result(cfg: SAETrainConfig, workdir: Path, override: bool) -> dict | None:
    """The result of a finished run in ``workdir`` under these settings, else None."""
    if not (workdir / "metrics.json").exists() or not (workdir / "sae").exists():
        return None
    if claim_config(workdir, cfg, override=override, write=False):
        return None
    return read_json(workdir / "metrics.json", what="SAE run metrics")


def train_sae(cfg: SAETrainConfig, workdir, *, primary_dir=None, primary_flagfile_cfg=None,
              devices=None, stop_after_steps: int | None = None, analyze: bool = True,
              override: bool = False, unset: frozenset = frozenset()) -> dict:
    """Run (or resume, or return the finished run in) ``workdir``; returns the final metrics.

    ``primary_dir``: a primary model directory; None trains the demo primary into
    ``workdir/primary_run`` (``primary_flagfile_cfg``, a PrimaryTrainConfig, replaces
    ``primary/configs/primary_demo.flags``). ``devices``: the data-parallel mesh (default all, of
    every process). ``stop_after_steps``: checkpoint and return once this many SAE steps are
    done (the run resumes from there when called again). ``unset``: names of settings the
    user left at their defaults, chosen instead to fit the run's inputs
    (:func:`~apps.training.activation_sources.implied_settings`). ``analyze``: run
    ``apps.analysis.pipeline`` afterwards. ``override``: go on with settings other than those the
    workdir's run was started with (:mod:`runkit.resume`). The settings, the primary model
    directory and the data are checked before anything is written to ``workdir``.
    """
    t_start = time.perf_counter()
    workdir = Path(workdir).absolute()
    cfg = implied_settings(cfg, unset, primary_dir)
    cfg, concepts, mesh = open_settings(cfg, primary_dir, devices)
    finished = _finished_result(cfg, workdir, override)
    if finished is not None:  # before the data is read: a finished run needs none
        gaps = RunDir(workdir).analysis_gaps() if analyze and is_writer() else []
        if gaps:  # killed during its analysis, or its files damaged since
            shown = "; ".join(gaps[:3]) + (f"; {len(gaps) - 3} more" if len(gaps) > 3 else "")
            print(f"{workdir} holds a finished run with these settings whose analysis is "
                  f"missing, cut short or damaged ({shown}); analyzing it again")
            with WorkdirLock(workdir):
                _run_analysis(workdir)
            return finished
        print(f"{workdir} holds a finished run with these settings; reporting its metrics")
        return finished
    plan, d_in = plan_source(cfg, primary_dir, concepts)
    if "resample_steps" in unset:  # the default steps this run reaches
        cfg = dataclasses.replace(cfg, resample_steps=tuple(
            s for s in cfg.resample_steps if s <= plan.total_sae_steps))
    cfg.validate(total_sae_steps=plan.total_sae_steps, d_sae=features_of(cfg, d_in))
    with ExitStack() as stack:
        if is_writer():
            stack.enter_context(WorkdirLock(workdir))
        if not override:  # refuse changed settings before any work
            claim_config(workdir, cfg, write=False)
        source = open_source(cfg, workdir, concepts, primary_dir=primary_dir,
                             primary_cfg=primary_flagfile_cfg, devices=devices)
        # Recorded once the inputs are good: a start that fails on them does not pin its
        # settings on the workdir.
        claim_config(workdir, cfg, override=override, write=is_writer())
        source.record(workdir, cfg, write=is_writer(), override=override)
        sae_config = cfg.sae_config(source.d_in)
        print(f"SAE {sae_config.input_dim} -> {sae_config.hidden_dim} features; "
              f"{plan.total_batches} {source.batch_name} of {cfg.primary_batch_size}, "
              f"{plan.total_sae_steps} SAE steps of {cfg.sae_batch_size} on {mesh.size} "
              f"device(s) in {jax.process_count()} process(es)")
        ckpt = stack.enter_context(Checkpoints(workdir / "checkpoints", keep=CHECKPOINTS_KEPT))
        loop = run_loop(cfg, plan, single_trainee(cfg, plan, sae_config, mesh, workdir),
                        source, mesh, ckpt, stop_after_steps=stop_after_steps, desc="SAE run")
        if loop.stopped:
            return {"stopped": True, "steps": int(loop.state.step),
                    "seconds": time.perf_counter() - t_start}
        result = finish_sae(
            workdir, cfg, sae_config, loop.state, source,
            last_logged=loop.last_logged[0], num_devices=mesh.size,
            seconds=lambda: loop.seconds_before + time.perf_counter() - t_start)
        if is_writer() and analyze:
            _run_analysis(workdir)
        wait_for_all("SAE run files written")  # the others leave once process 0 is done
        return result


def metrics_summary(result: dict) -> str:
    """One line per metric, for the command line."""
    keys = ("architecture", "fve", "mse", "l0", "dead_fraction", "dense_fraction",
            "loss_recovered", "clipped_fraction", "l_true", "l_spliced", "l_ablated",
            "kl_spliced", "logit_cosine", "top5_agreement", "shrinkage", "steps", "seconds")
    return "\n".join(f"  {k:16s} {result[k]:.6g}" if isinstance(result[k], float)
                     else f"  {k:16s} {result[k]}" for k in keys if k in result)

