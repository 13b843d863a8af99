"""The training loop every SAE run uses: a single run and a sweep's stacks alike.

What is trained is a :class:`Trainee`: a state, the SAE steps that follow each primary
batch (:class:`apps.training.chunk.BatchSteps`: one SAE's, or every stack's of a sweep), one
metrics log per member and the state's part of a checkpoint. The activations come from the
run's source (:mod:`apps.training.activation_sources`: the primary's harvest blocks or rows
of activation files), a block of batches at a time. The loop around it is this module's
alone: restore the latest checkpoint, take the source's blocks, run the chunks
:mod:`apps.training.chunk_plan` lays out (one jitted call each, :mod:`apps.training.chunk`),
check the device's fault record, write the metrics lines and the checkpoints, stop after a
requested number of SAE steps.

Exact resume: the data order is a pure function of (seed, epoch, batch index), blocks
start at fixed batch indices, the steps draw their randomness with ``fold_in(key, step)``
and a chunk of any length runs one compiled program; a checkpoint holds the state, the
buffer, the key and the data position, so a run killed at any moment and restarted ends
with the same parameters.

Faults: non-finite activations (checked on device per harvested batch) or a loss the
trainee calls fatal stop the run with a message naming the SAE step; checkpoints are
written only after that check, so the last one is always good.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from apps.training.chunk import BatchSteps, Health, fresh_health, make_chunk_fn
from apps.training.chunk_plan import LoopSchedule
from runkit.checkpoints import Checkpoints
from runkit.errors import RunFault
from runkit.hosts import is_writer
from runkit.metrics_log import MetricsLog
from runkit.progress import show_progress
from runkit.sharding import batch_sharding, replicate
from sae_jax.buffer import create_buffer
from sae_jax.config import SAETrainConfig


class TrainingFault(RunFault):
    """Training stopped on non-finite activations or loss; the last checkpoint is good."""


def raise_if_unhealthy(health: Health, ckpt: Checkpoints,
                       origin: str = "came out of the primary model") -> None:
    """Raise :class:`TrainingFault` naming the first fault ``health`` holds (reads the device
    record: call it where the loop syncs anyway, before writing anything); ``origin``
    says where non-finite activations came from."""
    bad_act, bad_loss = int(health.bad_activation_step), int(health.bad_loss_step)
    if bad_act < 0 and bad_loss < 0:
        return
    steps = ckpt.steps()
    kept = (f"the last good checkpoint (SAE step {steps[-1]}) in {ckpt.directory} is intact"
            if steps else "no checkpoint had been written yet")
    if bad_act >= 0:
        what = f"non-finite activations (NaN or Inf) {origin} at SAE step {bad_act}"
    else:
        what = f"the SAE loss became non-finite (NaN or Inf) at SAE step {bad_loss}"
    raise TrainingFault(f"training stopped: {what}; {kept}")


@dataclasses.dataclass(frozen=True)
class Trainee:
    """What the loop trains.

    ``steps.run`` returns its metrics as a list of groups (one per stack; a single run is one
    group), each a dict of scalars (one member) or of ``(members,)`` vectors (scalars such as
    ``step`` shared by the group); the members, group by group, write one metrics line each,
    to ``logs`` in that order. ``to_tree(state)``: the state's entries of a checkpoint;
    ``from_tree(tree)``: the state again from a restored one. ``what`` names the run in a
    checkpoint that does not fit it."""

    state: Any
    steps: BatchSteps
    logs: list[Path]
    to_tree: Callable[[Any], dict]
    from_tree: Callable[[dict], Any]
    what: str


class LoopResult(NamedTuple):
    state: Any
    stopped: bool  # stop_after_steps ended it
    last_logged: list[dict]  # the latest metrics line of each member
    seconds_before: float  # what earlier sessions of the run spent before this one resumed
    seconds: float  # the whole loop's seconds, earlier sessions included


def _member_rows(group: dict, resampled) -> list[dict]:
    """One metrics line per member of a group's metrics at one batch."""
    sizes = {np.shape(v)[0] for v in group.values() if np.ndim(v)}
    indices = [None] if not sizes else range(sizes.pop())
    rows = []
    for i in indices:
        row = {k: (v if i is None or not np.ndim(v) else v[i]).item() for k, v in group.items()}
        row["n_resampled"] = int(resampled if i is None else resampled[i])
        row["finite"] = bool(row.get("finite", True))
        rows.append(row)
    return rows


class _LogReader:
    """Metrics lines from chunk results, read from the device only when a line is due.
    ``n_resampled`` counts the features resampled since the previous line."""

    def __init__(self):
        self._pending = []  # (metrics, block offsets) of chunks not yet read to their end
        self._host = {}

    def add(self, metrics, lo: int, hi: int) -> None:
        self._pending.append((metrics, lo, hi))

    def lines(self, offset: int) -> list[dict]:
        """The lines of the newest chunk's batch at block offset ``offset``, member by member."""
        resampled = None
        for i, (metrics, lo, hi) in enumerate(self._pending):
            host = self._host.get(id(metrics))
            if host is None:
                host = self._host[id(metrics)] = jax.device_get(metrics)
            last = i == len(self._pending) - 1
            part = [np.sum(group["n_resampled"][lo:(offset + 1 if last else hi)], axis=0)
                    for group in host]
            resampled = part if resampled is None else [a + b for a, b in zip(resampled, part)]
        metrics, _, hi = self._pending[-1]
        host = self._host[id(metrics)]
        rows = [row for group, n in zip(host, resampled)
                for row in _member_rows({k: v[offset] for k, v in group.items()}, n)]
        self._pending = [(metrics, offset + 1, hi)]
        self._host = {id(metrics): host}
        return rows


def _saved_lines(progress: dict, members: int) -> list[dict]:
    """The last metrics lines a checkpoint recorded (a single run's checkpoints of earlier
    versions hold its one line as a dict)."""
    saved = progress.get("last_logged", [])
    saved = [saved] if isinstance(saved, dict) else list(saved)
    return saved if len(saved) == members else [{} for _ in range(members)]


def run_loop(cfg: SAETrainConfig, plan, trainee: Trainee, source, mesh, ckpt: Checkpoints,
             *, stop_after_steps: int | None, desc: str) -> LoopResult:
    """Train on ``source``'s activations to the end of ``plan`` (or to
    ``stop_after_steps``), resuming from ``ckpt``'s latest checkpoint. ``cfg``: the data
    and loop settings (buffer, batch sizes, seed of the data order and of the batch draws,
    log and checkpoint cadence); ``source``: an activation source
    (:mod:`apps.training.activation_sources`); ``desc``: the progress bar's label."""
    rows = batch_sharding(mesh)
    state = trainee.state
    buffer = create_buffer(cfg.buffer_size, source.d_in, cfg.buffer_dtype, rows)
    buffer = buffer._replace(write_pos=replicate(buffer.write_pos, mesh),
                             fill=replicate(buffer.fill, mesh))
    key = replicate(jax.random.PRNGKey(cfg.seed), mesh)

    def tree(state, buffer, key):
        return {**trainee.to_tree(state), "buffer": buffer._asdict(), "rng": key}

    next_batch, seconds_before, latest = 0, 0.0, None
    last_logged = [{} for _ in trainee.logs]
    restored = ckpt.restore_latest(tree(state, buffer, key), what=trainee.what)
    if restored is not None:
        latest = restored.step
        state = trainee.from_tree(restored.tree)
        buffer = type(buffer)(**restored.tree["buffer"])
        key = restored.tree["rng"]
        progress = restored.progress
        next_batch = int(progress["next_batch"])
        seconds_before = float(progress.get("seconds", 0.0))
        last_logged = _saved_lines(progress, len(trainee.logs))
        print(f"resuming from the checkpoint at SAE step {latest} "
              f"(primary batch {next_batch} of {plan.total_batches})")
    logs = [MetricsLog(path) for path in trainee.logs]
    if is_writer():
        for log in logs:
            log.restart_at(latest)

    feed = source.feed(cfg, plan, mesh)
    schedule = LoopSchedule(
        total_batches=plan.total_batches, batch_size=cfg.primary_batch_size,
        buffer_size=cfg.buffer_size, min_buffer=cfg.min_buffer,
        steps_per_batch=plan.sae_steps_per_batch, log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every, batches_per_block=feed.batches_per_block,
        stop_after_steps=stop_after_steps)
    if schedule.steps_after(next_batch - 1) != int(latest or 0):
        raise TrainingFault(f"the checkpoint at SAE step {latest} says primary batch "
                            f"{next_batch} is next, which this run's plan puts at SAE step "
                            f"{schedule.steps_after(next_batch - 1)}")
    # Made here, once per run: each is compiled at its first call.
    chunk_fns = {train: make_chunk_fn(trainee.steps, feed.batches_per_block, train=train,
                                      batch_sharding=rows, rows_of=feed.batch_rows)
                 for train in (False, True)}
    health, reader = fresh_health(), _LogReader()
    t0 = time.perf_counter()
    bar = show_progress(total=plan.total_batches, initial=next_batch, unit="batch", desc=desc,
                        dynamic_ncols=True, disable=not is_writer())
    stopped, block = False, None
    blocks = feed.blocks(next_batch)
    in_flight = collections.deque()  # blocks whose chunks the device may not have run yet
    with closing(blocks):
        for chunk in schedule.chunks(next_batch):
            block_first = schedule.block_of(chunk.first)[0]
            if block is None or block.first_batch != block_first:
                if feed.blocks_in_flight is not None and block is not None:
                    in_flight.append(health)  # the output of the block just dispatched
                    if len(in_flight) >= feed.blocks_in_flight:
                        jax.block_until_ready(in_flight.popleft())
                block = next(blocks)
            state, buffer, health, metrics = chunk_fns[chunk.train](
                state, buffer, key, health, *block.inputs,
                np.int32(chunk.first - block_first), np.int32(chunk.end - chunk.first))
            bar.update(chunk.end - chunk.first)
            if chunk.train:
                reader.add(metrics, chunk.first - block_first, chunk.end - block_first)
            for g in chunk.log_at:
                raise_if_unhealthy(health, ckpt, source.origin)
                extra = dict(step=schedule.steps_after(g), epoch=g // plan.batches_per_epoch,
                             primary_batch=g + 1,
                             buffer_fill=min((g + 1) * cfg.primary_batch_size, cfg.buffer_size),
                             seconds=round(seconds_before + time.perf_counter() - t0, 3))
                last_logged = [{**row, **extra} for row in reader.lines(g - block_first)]
                if is_writer():
                    for log, row in zip(logs, last_logged, strict=True):
                        log.append(row)
                _show(bar, last_logged)
            if chunk.checkpoint:
                raise_if_unhealthy(health, ckpt, source.origin)
                ckpt.save(schedule.steps_after(chunk.end - 1), tree(state, buffer, key), {
                    "next_batch": chunk.end,
                    "rows_seen": chunk.end * cfg.primary_batch_size,
                    "last_logged": last_logged,
                    "seconds": seconds_before + time.perf_counter() - t0})
            if chunk.stop:
                stopped = True
                break
    bar.close()
    raise_if_unhealthy(health, ckpt, source.origin)
    return LoopResult(state, stopped, last_logged, seconds_before,
                      seconds_before + time.perf_counter() - t0)


def _show(bar, lines: list[dict]) -> None:
    """The progress bar's figures: the step, and the loss of a lone member."""
    if len(lines) == 1:
        line = lines[0]
        bar.set_postfix(step=line["step"], loss=f"{line['loss']:.4g}", mse=f"{line['mse']:.3g}",
                        l0=f"{line['l0']:.1f}")
    else:
        bar.set_postfix(step=lines[0]["step"])
