"""The SAE training run, end to end: harvest, train, checkpoint, evaluate, report.

:func:`train_sae` is what ``python -m sae_jax.train`` calls. The loop follows
the original's decoupled scheme (docs/original.md §5): every primary batch is run
through the frozen primary model and its pooled vectors are pushed into the
device-resident activation buffer; once the buffer holds ``min_buffer`` rows,
``sae_steps_per_primary_step`` SAE steps follow each push.

The loop works a block of primary batches at a time
(:mod:`bridge.harvest_blocks`): a worker thread builds the next block's inputs
on the host while the device works; the block's rows are harvested in groups of
similar length (almost no padding, one compilation per width) and the lone
``[<NULL>]`` rows are looked up per weapon. Then one jitted call per chunk
(:mod:`sae_jax.chunk`) pushes each batch and runs its SAE steps and health
checks; chunks end only where the host is needed (:mod:`sae_jax.loop_schedule`:
block ends, the start of training, checkpoints, a requested stop). Nothing comes
back to the host except the metrics of the batches whose step crossed
``log_every`` and the state at checkpoints.

Exact resume: the data order is a pure function of (seed, epoch, batch index),
blocks start at fixed batch indices (so each row is harvested in the same group
whenever it is harvested), batches and resampling draw their randomness with
``fold_in(key, step)``, a chunk of any length runs one compiled program, and a
checkpoint holds the train state, the buffer, the data position and the key; a
run killed at any moment and restarted ends with the same parameters.

Faults: non-finite activations (checked on device per harvested batch) or a
non-finite loss stop the run with a message naming the SAE step; checkpoints
are written only after the health check, so the last one is always good.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from bridge.harvest_blocks import (
    BlockLayout,
    create_staging,
    device_blocks,
    harvest_block,
    null_pooled_table,
)
from runkit.checkpoints import Checkpoints
from runkit.errors import RunFault
from runkit.hosts import (
    COORDINATOR_ENV,
    NUM_PROCESSES_ENV,
    PROCESS_ID_ENV,
    is_writer,
    wait_for_all,
)
from runkit.jsonio import read_json, write_json
from runkit.lock import WorkdirLock
from runkit.metrics_log import MetricsLog
from runkit.resume import claim_settings
from runkit.sharding import batch_sharding, make_mesh, replicate
from sae_jax.buffer import create_buffer
from sae_jax.chunk import Health, fresh_health, make_chunk_fn
from sae_jax.config import SAETrainConfig
from sae_jax.evaluate import evaluate_sae
from sae_jax.loop_schedule import LoopSchedule
from sae_jax.model import create_sae, sae_from_params
from sae_jax.plots import plot_curves
from sae_jax.run_setup import (
    check_devices,
    estimate_plan,
    known_d_sae,
    obtain_primary,
    prepare_data,
    run_concept_set,
    write_run_json,
)
from sae_jax.step import TrainState, init_train_state
from sae_jax.store import save_sae

EVAL_BATCH_SIZE = 512
CHECKPOINTS_KEPT = 3


class TrainingFault(RunFault):
    """Training stopped on non-finite activations or loss; the last checkpoint is good."""


def raise_if_unhealthy(health: Health, ckpt: Checkpoints) -> None:
    """Raise :class:`TrainingFault` naming the first fault ``health`` holds (reads the device
    record: call it where the loop syncs anyway, before writing anything)."""
    bad_act, bad_loss = int(health.bad_activation_step), int(health.bad_loss_step)
    if bad_act < 0 and bad_loss < 0:
        return
    steps = ckpt.steps()
    kept = (f"the last good checkpoint (SAE step {steps[-1]}) in {ckpt.directory} is intact"
            if steps else "no checkpoint had been written yet")
    if bad_act >= 0:
        what = (f"non-finite activations (NaN or Inf) came out of the primary model at SAE "
                f"step {bad_act}")
    else:
        what = f"the SAE loss became non-finite (NaN or Inf) at SAE step {bad_loss}"
    raise TrainingFault(f"training stopped: {what}; {kept}")


def _checkpoint_tree(state: TrainState, buffer, key) -> dict:
    return {"train_state": state, "buffer": buffer._asdict(), "rng": key}


class _LogReader:
    """Metrics lines from chunk results, read from the device only when a line is due.
    ``n_resampled`` counts the features resampled since the previous line."""

    def __init__(self):
        self._pending = []  # (metrics, block offsets) of chunks not yet read to their end
        self._host = {}

    def add(self, metrics, lo: int, hi: int) -> None:
        self._pending.append((metrics, lo, hi))

    def line(self, offset: int) -> dict:
        """The line of the newest chunk's batch at block offset ``offset``."""
        resampled = 0
        for i, (metrics, lo, hi) in enumerate(self._pending):
            host = self._host.get(id(metrics))
            if host is None:
                host = self._host[id(metrics)] = jax.device_get(metrics)
            last = i == len(self._pending) - 1
            resampled += int(np.sum(host["n_resampled"][lo:(offset + 1 if last else hi)]))
        metrics, _, hi = self._pending[-1]
        host = self._host[id(metrics)]
        out = {k: v[offset].item() for k, v in host.items()}
        out["n_resampled"] = resampled
        out["finite"] = bool(out.get("finite", True))
        self._pending = [(metrics, offset + 1, hi)]
        self._host = {id(metrics): host}
        return out


def _run_loop(cfg, plan, workdir: Path, primary, train_examples, mesh, ckpt, sae_config,
              stop_after_steps):
    """The harvest/train loop; returns ``(state, stopped_early, last_logged_metrics,
    seconds)``: the seconds earlier sessions of the run spent before this one resumed."""
    rows = batch_sharding(mesh)
    sae = create_sae(sae_config, seed=cfg.seed)
    state = replicate(init_train_state(sae, cfg, plan.total_sae_steps), mesh)
    buffer = create_buffer(cfg.buffer_size, sae_config.input_dim, cfg.buffer_dtype, rows)
    buffer = buffer._replace(write_pos=replicate(buffer.write_pos, mesh),
                             fill=replicate(buffer.fill, mesh))
    key = replicate(jax.random.PRNGKey(cfg.seed), mesh)
    next_batch = 0

    seconds_before, last_logged = 0.0, {}
    restored = ckpt.restore_latest(_checkpoint_tree(state, buffer, key), what=(
        f"this run ({sae_config}, buffer_size {cfg.buffer_size})"))
    latest = None
    if restored is not None:
        latest = restored.step
        state = restored.tree["train_state"]
        buffer = type(buffer)(**restored.tree["buffer"])
        key = restored.tree["rng"]
        progress = restored.progress
        next_batch = int(progress["next_batch"])
        seconds_before = float(progress.get("seconds", 0.0))
        last_logged = dict(progress.get("last_logged", {}))
        print(f"resuming from the checkpoint at SAE step {latest} "
              f"(primary batch {next_batch} of {plan.total_batches})")
    log = MetricsLog(workdir / "metrics.jsonl")
    if is_writer():
        log.restart_at(latest)

    layout = BlockLayout.for_batch_size(cfg.primary_batch_size)
    schedule = LoopSchedule(
        total_batches=plan.total_batches, batch_size=cfg.primary_batch_size,
        buffer_size=cfg.buffer_size, min_buffer=cfg.min_buffer,
        steps_per_batch=plan.sae_steps_per_batch, log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every, batches_per_block=layout.batches,
        stop_after_steps=stop_after_steps)
    if schedule.steps_after(next_batch - 1) != int(latest or 0):
        raise TrainingFault(f"the checkpoint at SAE step {latest} says primary batch "
                            f"{next_batch} is next, which this run's plan puts at SAE step "
                            f"{schedule.steps_after(next_batch - 1)}")
    graphdef, primary_state = nnx.split(primary)
    primary_state = replicate(primary_state, mesh)
    null_table = null_pooled_table(primary, train_examples.null_id, mesh)
    staging = create_staging(layout, sae_config.input_dim, mesh)
    chunk_fns = {train: make_chunk_fn(cfg, plan.total_sae_steps, plan.sae_steps_per_batch,
                                      layout.batches, train=train, batch_sharding=rows)
                 for train in (False, True)}
    health, reader = fresh_health(), _LogReader()
    t0 = time.perf_counter()
    bar = tqdm(total=plan.total_batches, initial=next_batch, unit="batch", desc="SAE run",
               dynamic_ncols=True, disable=not is_writer())
    stopped, block = False, None
    blocks = device_blocks(train_examples, layout, mesh, seed=cfg.seed,
                           batches_per_epoch=plan.batches_per_epoch,
                           total_batches=plan.total_batches, first_batch=next_batch)
    with closing(blocks):
        for chunk in schedule.chunks(next_batch):
            block_first = schedule.block_of(chunk.first)[0]
            if block is None or block.first_batch != block_first:
                block = next(blocks)
                staging = harvest_block(graphdef, primary_state, block, staging)
            state, buffer, health, metrics = chunk_fns[chunk.train](
                state, buffer, key, health, staging, null_table, block.is_null, block.weapons,
                np.int32(chunk.first - block_first), np.int32(chunk.end - chunk.first))
            bar.update(chunk.end - chunk.first)
            if chunk.train:
                reader.add(metrics, chunk.first - block_first, chunk.end - block_first)
            for g in chunk.log_at:
                raise_if_unhealthy(health, ckpt)
                last_logged = reader.line(g - block_first)
                last_logged.update(step=schedule.steps_after(g),
                                   epoch=g // plan.batches_per_epoch, primary_batch=g + 1,
                                   buffer_fill=min((g + 1) * cfg.primary_batch_size,
                                                   cfg.buffer_size),
                                   seconds=round(seconds_before + time.perf_counter() - t0, 3))
                if is_writer():
                    log.append(last_logged)
                bar.set_postfix(step=last_logged["step"], loss=f"{last_logged['loss']:.4g}",
                                mse=f"{last_logged['mse']:.3g}", l0=f"{last_logged['l0']:.1f}")
            if chunk.checkpoint:
                raise_if_unhealthy(health, ckpt)
                ckpt.save(schedule.steps_after(chunk.end - 1),
                          _checkpoint_tree(state, buffer, key), {
                              "next_batch": chunk.end,
                              "rows_seen": chunk.end * cfg.primary_batch_size,
                              "last_logged": last_logged,
                              "seconds": seconds_before + time.perf_counter() - t0})
            if chunk.stop:
                stopped = True
                break
    bar.close()
    raise_if_unhealthy(health, ckpt)
    return state, stopped, last_logged, seconds_before


def _run_analysis(workdir: Path):
    try:
        module = importlib.import_module("sae_jax.analyze")
    except ModuleNotFoundError as e:
        if e.name != "sae_jax.analyze":
            raise
        print("note: sae_jax.analyze is not available; skipping the analysis step")
        return None
    if jax.process_count() > 1:
        return _run_analysis_apart(workdir)
    print("analysing the features ...")
    return module.analyze(workdir)


def _run_analysis_apart(workdir: Path) -> None:
    """Process 0 of a multi-process run analyses in a single-process run of its own, on CPU:
    the analysis loads the models through orbax, whose restores would wait for the other
    processes of this run, which are done (and this process keeps its accelerators)."""
    env = {k: v for k, v in os.environ.items()
           if k not in (COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    print("analysing the features (in a separate single-process run on CPU) ...", flush=True)
    code = subprocess.run([sys.executable, "-m", "sae_jax.analyze", f"--workdir={workdir}"],
                          env=env, stdin=subprocess.DEVNULL).returncode
    if code:
        raise TrainingFault(f"the analysis failed (exit status {code}); the SAE and "
                            f"metrics.json are written; rerun it with: python -m "
                            f"sae_jax.analyze --workdir={workdir}")


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


def _finished_result(cfg: SAETrainConfig, workdir: Path, override: bool) -> dict | None:
    """The result of a finished run in ``workdir`` under these settings, else None."""
    if not (workdir / "metrics.json").exists() or not (workdir / "sae").exists():
        return None
    if claim_settings(workdir, cfg.to_dict(), override=override, write=False):
        return None
    return read_json(workdir / "metrics.json", what="SAE run metrics")


def train_sae(cfg: SAETrainConfig, workdir, *, primary_dir=None, primary_flagfile_cfg=None,
              devices=None, stop_after_steps: int | None = None, analyze: bool = True,
              override: bool = False) -> dict:
    """Run (or resume, or return the finished run in) ``workdir``; returns the final metrics.

    ``primary_dir``: a primary model directory; None trains the demo primary into
    ``workdir/primary_run`` (``primary_flagfile_cfg``, a PrimaryTrainConfig, replaces
    ``configs/primary_demo.flags``). ``devices``: the data-parallel mesh (default all, of
    every process). ``stop_after_steps``: checkpoint and return once this many SAE steps are
    done (the run resumes from there when called again). ``analyze``: run
    ``sae_jax.analyze`` afterwards. ``override``: go on with settings other than those the
    workdir's run was started with (:mod:`runkit.resume`). The settings, the primary model
    directory and the data are checked before anything is written to ``workdir``.
    """
    t_start = time.perf_counter()
    workdir = Path(workdir).absolute()
    cfg.validate()
    mesh = make_mesh(devices)
    check_devices(cfg, mesh.size)
    if primary_dir is not None and not (Path(primary_dir) / "config.json").exists():
        raise FileNotFoundError(f"--primary_dir {primary_dir} is not a primary model directory "
                                "(no config.json): give the model/ folder of a primary run")
    cfg, concepts = run_concept_set(cfg, primary_dir)  # the set's digest joins the settings
    finished = _finished_result(cfg, workdir, override)
    if finished is not None:  # before the data is read: a finished run needs none
        print(f"{workdir} holds a finished run with these settings; reporting its metrics")
        return finished
    plan = estimate_plan(cfg, primary_dir, concepts)
    cfg.validate(total_sae_steps=plan.total_sae_steps, d_sae=known_d_sae(cfg, primary_dir))
    with ExitStack() as stack:
        if is_writer():
            stack.enter_context(WorkdirLock(workdir))
        claim_settings(workdir, cfg.to_dict(), override=override, write=is_writer())
        primary, vocab, weapon_vocab, primary_dir, seed = obtain_primary(
            cfg, workdir, primary_dir=primary_dir, primary_cfg=primary_flagfile_cfg,
            devices=devices)
        train_examples, eval_examples, num_builds = prepare_data(cfg, vocab, weapon_vocab,
                                                                 seed=seed, concepts=concepts)
        if is_writer():
            write_run_json(workdir, cfg, primary_dir, num_builds, seed, concepts)
        cfg.validate(d_sae=int(primary.config.hidden_dim * cfg.expansion_factor))
        sae_config = cfg.sae_config(primary.config.hidden_dim)
        print(f"SAE {sae_config.input_dim} -> {sae_config.hidden_dim} features; "
              f"{plan.total_batches} primary batches of {cfg.primary_batch_size}, "
              f"{plan.total_sae_steps} SAE steps of {cfg.sae_batch_size} on {mesh.size} "
              f"device(s) in {jax.process_count()} process(es)")
        ckpt = stack.enter_context(Checkpoints(workdir / "checkpoints", keep=CHECKPOINTS_KEPT))
        state, stopped, last, seconds_before = _run_loop(
            cfg, plan, workdir, primary, train_examples, mesh, ckpt, sae_config,
            stop_after_steps)
        steps = int(state.step)
        if stopped:
            return {"stopped": True, "steps": steps,
                    "seconds": time.perf_counter() - t_start}

        params, usage_ema = jax.device_get((state.params, state.usage_ema))
        if not all(np.all(np.isfinite(v)) for v in jax.tree.leaves(params)):
            raise TrainingFault("the trained SAE has non-finite parameters; it is not saved")
        sae = sae_from_params(sae_config, params, usage_ema)
        save_sae(workdir / "sae", sae, write=is_writer())
        print("evaluating on held-out builds ...")
        result = check_result(evaluate_sae(primary, sae, eval_examples,
                                           batch_size=EVAL_BATCH_SIZE,
                                           original_behaviour=cfg.original_behaviour))
        result.update(
            steps=steps, seconds=round(seconds_before + time.perf_counter() - t_start, 2),
            num_devices=mesh.size,
            num_processes=jax.process_count(),
            d_in=sae_config.input_dim, d_sae=sae_config.hidden_dim,
            primary_model_dir=str(primary_dir),
            final_train={k: last[k] for k in ("loss", "mse", "l1", "kl", "l0", "dead_count",
                                              "aux_loss", "dead_aux", "threshold",
                                              "prefix_mse", "threshold_mean")
                         if k in last},
        )
        result.update(sae_config.arch.summary_fields(sae_config))
        if is_writer():
            write_json(workdir / "metrics.json", result)
            plot_curves(workdir / "metrics.jsonl", workdir / "curves.png",
                        resample_steps=cfg.resample_steps)
            if analyze:
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

