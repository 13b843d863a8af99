"""A sweep run: one primary, one harvest into one device buffer, many SAEs trained at once.

:func:`train_sweep` is what ``python -m apps.sweep`` calls. Every primary batch is
harvested once into the buffer; then every stack (:mod:`sae_jax.stack`: the members of
one shape and static settings) runs ``sae_steps_per_primary_step`` vmapped steps on it.
All members share each step's batch (drawn with the sweep's key, ``--seed``); a member's
own ``seed`` chooses its initial parameters. The loop is :mod:`apps.training.engine`'s, the one a
single run uses (resume, chunks, health checks, metrics lines, checkpoints):
:func:`sweep_trainee` gives it the stacks to train, and a member whose loss becomes
non-finite is marked diverged rather than stopping the sweep.

``workdir`` layout::

    sweep_config.json    the sweep's members and their settings (a rerun must match)
    checkpoints/         the stacked states, the buffer, the key and the data position
    primary_run/         the demo primary, when no --primary_dir is given
    members/<name>/      a normal SAE run directory per member (train_config.json,
                         run.json, metrics.jsonl, curves.png, sae/, metrics.json and
                         the analysis: concepts.json, explanations.json, report/)

Resume: the sweep checkpoints as a whole; a killed sweep run again continues from its
latest checkpoint with the same numbers as an uninterrupted one, then finishes the
members not yet finished (a member with metrics.json and report/ is done).
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import ExitStack
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from apps.runs.setup import open_settings
from apps.training.activation_sources import features_of, open_source, plan_source
from apps.training.chunk import BatchSteps
from apps.training.engine import Trainee, run_loop
from apps.training.run_finish import EVAL_BATCH_SIZE, finish_sae
from runkit.checkpoints import Checkpoints
from runkit.jsonio import read_json, write_json
from runkit.lock import WorkdirLock
from runkit.progress import show_progress
from runkit.resume import claim_config
from runkit.run_dir import RunDir
from runkit.sharding import batch_sharding, replicate
from sae_jax.config import SAETrainConfig
from sae_jax.model import create_sae
from sae_jax.stack import (
    group_into_stacks,
    member_state,
    stack_settings,
    stack_states,
    stacked_steps_body,
)
from sae_jax.step import init_train_state

SWEEP_CONFIG = "sweep_config.json"
CHECKPOINTS_KEPT = 2
# Settings of the harvest and the loop, one for the whole sweep (members may not set them).
SWEEP_WIDE = ("buffer_size", "buffer_dtype", "min_buffer", "primary_batch_size",
              "sae_batch_size", "sae_steps_per_primary_step", "epochs", "data_fraction",
              "data_source", "data_path", "num_builds", "log_every", "checkpoint_every",
              "eval_builds", "concepts_file", "concept_set_sha256", "activations", "eval_rows",
              "extra")


@dataclasses.dataclass(frozen=True)
class SweepMember:
    name: str  # its directory under members/
    cfg: SAETrainConfig


def members_dir(workdir) -> Path:
    return Path(workdir) / "members"


def _claim_sweep(workdir: Path, members: list[SweepMember]) -> None:
    """Record the members in a new sweep dir, or refuse a rerun that changes them."""
    now = json.loads(json.dumps({m.name: m.cfg.to_dict() for m in members}, default=list))
    path = workdir / SWEEP_CONFIG
    if not path.exists():
        write_json(path, {"members": now})
        return
    recorded = read_json(path, what="sweep settings file").get("members", {})
    if recorded != now:
        changed = sorted(n for n in set(recorded) | set(now) if recorded.get(n) != now.get(n))
        raise ValueError(f"{workdir} holds a sweep started with other members or settings "
                         f"(differing: {changed[:6]}); use a fresh --workdir")


def _member_done(mdir: Path, analyze: bool) -> bool:
    return (mdir / "metrics.json").exists() and (not analyze or (mdir / "report").exists())


def _recorded_timing(workdir: Path) -> dict:
    """The timing in the sweep report an earlier call wrote (empty when there is none)."""
    path = workdir / "sweep.json"
    return read_json(path, what="sweep report").get("timing", {}) if path.exists() else {}


def sweep_trainee(stacks: list[list[SweepMember]], plan, sae_config_of, mesh,
                  workdir: Path) -> Trainee:
    """Every stack of the sweep, for :func:`apps.training.engine.run_loop`: after each push each
    stack runs its vmapped steps (:func:`sae_jax.stack.stacked_steps_body`) on the shared
    buffer and key. A member whose loss becomes non-finite is marked, not fatal: the state
    carries per stack a ``(members,)`` bool of the members whose loss stayed finite."""
    rows = batch_sharding(mesh)
    states, settings, healthy = [], [], []
    for members in stacks:
        singles = [init_train_state(create_sae(sae_config_of(m.cfg), seed=m.cfg.seed), m.cfg,
                                    plan.total_sae_steps) for m in members]
        states.append(replicate(stack_states(singles), mesh))
        settings.append(replicate(stack_settings([m.cfg for m in members]), mesh))
        healthy.append(jnp.ones((len(members),), bool))
    bodies = [stacked_steps_body(members[0].cfg, plan.total_sae_steps, plan.sae_steps_per_batch,
                                 rows) for members in stacks]

    def run(state, buffer, key):
        states, settings, healthy = state
        new_states, metrics, new_healthy = [], [], []
        for body, one, own, ok in zip(bodies, states, settings, healthy, strict=True):
            one, m = body(one, own, buffer, key)
            new_states.append(one)
            metrics.append(m)
            new_healthy.append(ok & m["finite"])
        return (new_states, settings, new_healthy), metrics, jnp.asarray(True)

    # The settings are no part of a checkpoint: they come from the members' configs.
    return Trainee(
        (states, settings, healthy), BatchSteps(run, lambda state: state[0][0].step),
        [members_dir(workdir) / m.name / "metrics.jsonl" for members in stacks for m in members],
        to_tree=lambda state: {"stacks": list(state[0]), "finite": list(state[2])},
        from_tree=lambda tree: (list(tree["stacks"]), settings, list(tree["finite"])),
        what=f"this sweep ({sum(map(len, stacks))} members)")


def _finish_member(member: SweepMember, state, finite: bool, source, evaluation,
                   sae_config, run_info: dict, analysis_inputs) -> dict:
    """Write member ``member``'s run directory (:func:`apps.training.run_finish.finish_sae`;
    ``evaluation``: what every member shares of the evaluation, ``source.shared_evaluation``)
    and, given the sweep's shared ``analysis_inputs`` (``source.analysis_inputs``), its
    analysis."""
    mdir = run_info["members_dir"] / member.name
    if not finite:
        result = {"diverged": True, "steps": int(state.step)}
        write_json(mdir / "diverged.json", result)
        print(f"member {member.name}: the loss became non-finite; no SAE written")
        return result
    result = finish_sae(mdir, member.cfg, sae_config, state, source,
                        shared_evaluation=evaluation, last_logged=run_info["last_logged"],
                        seconds=lambda: run_info["train_seconds"], num_devices=1,
                        within=run_info["workdir"],
                        extra={"sweep": RunDir(mdir).record_path(
                                   run_info["workdir"], within=run_info["workdir"]),
                               "trained_in_stack_of": run_info["stack_size"]})
    if analysis_inputs is not None:
        print(f"analyzing member {member.name} ...")
        source.analyze(mdir, analysis_inputs)
    return result


def train_sweep(base: SAETrainConfig, members: list[SweepMember], workdir, *,
                primary_dir=None, stop_after_steps: int | None = None,
                analyze: bool = True, analysis_builds: int | None = None) -> dict:
    """Run (or resume, or finish) the sweep in ``workdir``; returns ``{name: metrics}``.

    ``base``: the sweep-wide settings (data, buffer, loop, and the key of the shared batch
    order, ``base.seed``); ``members``: each member's full settings (their
    :data:`SWEEP_WIDE` settings must equal ``base``'s). ``primary_dir``: as
    :func:`apps.training.single_run.train_sae`'s (None: the demo primary, trained or reused in
    ``workdir/primary_run``). ``stop_after_steps``: checkpoint and return after this many
    SAE steps. ``analysis_builds``: analyze each member on at most this many held-out
    builds (None: all ``eval_builds``).
    """
    from apps.analysis.sweep_report import write_sweep_report

    t_start = time.perf_counter()
    workdir = Path(workdir).absolute()
    if not members:
        raise ValueError("the sweep has no members")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        repeated = sorted(n for n in set(names) if names.count(n) > 1)
        raise ValueError(f"member names repeat: {repeated}")
    for m in members:
        wide = [k for k in SWEEP_WIDE if getattr(m.cfg, k) != getattr(base, k)]
        if wide:
            raise ValueError(f"member {m.name} sets sweep-wide settings {wide}; set them for "
                             "the whole sweep (flags), not per member")
    if analysis_builds is not None and analysis_builds <= 0:
        raise ValueError(f"--analysis_builds must be positive, got {analysis_builds}")
    # One device: the stacks, not the data, are wide.
    base, concepts, mesh = open_settings(base, primary_dir, jax.devices()[:1])
    members = [SweepMember(m.name, dataclasses.replace(
        m.cfg, concept_set_sha256=base.concept_set_sha256)) for m in members]
    plan, d_in = plan_source(base, primary_dir, concepts)
    for m in members:
        try:
            m.cfg.validate(total_sae_steps=plan.total_sae_steps, d_sae=features_of(m.cfg, d_in))
        except ValueError as e:
            raise ValueError(f"member {m.name}: {e}") from None
    with ExitStack() as stack:
        workdir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(WorkdirLock(workdir))
        _claim_sweep(workdir, members)
        source = open_source(base, workdir, concepts, primary_dir=primary_dir)
        hidden = source.d_in
        for m in members:
            mdir = members_dir(workdir) / m.name
            mdir.mkdir(parents=True, exist_ok=True)
            claim_config(mdir, m.cfg)
            try:
                source.record(mdir, m.cfg, write=True, within=workdir)
            except ValueError as e:
                raise ValueError(f"member {m.name}: {e}") from None
        groups = [[members[i] for i in g] for g in group_into_stacks([m.cfg for m in members])]
        print(f"{len(members)} members in {len(groups)} stacks "
              f"({', '.join(str(len(g)) for g in groups)}); {plan.total_batches} primary "
              f"batches, {plan.total_sae_steps} SAE steps of {base.sae_batch_size}")
        ckpt = stack.enter_context(Checkpoints(workdir / "checkpoints", keep=CHECKPOINTS_KEPT))
        trainee = sweep_trainee(groups, plan, lambda c: c.sae_config(hidden), mesh, workdir)
        loop = run_loop(base, plan, trainee, source, mesh, ckpt,
                        stop_after_steps=stop_after_steps, desc=f"sweep ({len(groups)} stacks)")
        states, _, healthy = loop.state
        train_seconds = loop.seconds
        if loop.stopped:
            return {"stopped": True, "steps": int(states[0].step),
                    "seconds": time.perf_counter() - t_start}
        t_members = time.perf_counter()
        results = {}
        todo = [(s, i, m) for s, group in enumerate(groups) for i, m in enumerate(group)]
        last_logged = dict(zip((m.name for _, _, m in todo), loop.last_logged, strict=True))
        pending = {m.name for _, _, m in todo
                   if not _member_done(members_dir(workdir) / m.name, analyze)}
        to_analyze = [m.name for s, i, m in todo
                      if analyze and m.name in pending and np.asarray(healthy[s])[i]]
        # What the members share of the evaluation (the primary's pooled vectors), made once.
        evaluation = (source.shared_evaluation(EVAL_BATCH_SIZE)
                      if any(np.asarray(healthy[s])[i] for s, i, m in todo if m.name in pending)
                      else None)
        shared = None  # what the members' analyzes share, made once (all share the data)
        if to_analyze:
            shared = source.analysis_inputs(members_dir(workdir) / to_analyze[0],
                                            num_builds=analysis_builds)
        for s, i, m in show_progress(todo, desc="members", unit="member"):
            mdir = members_dir(workdir) / m.name
            if m.name not in pending:
                results[m.name] = read_json(mdir / "metrics.json", what="member metrics")
                continue
            finite = bool(np.asarray(healthy[s])[i])
            info = {"workdir": workdir, "members_dir": members_dir(workdir),
                    "stack_size": len(groups[s]), "last_logged": last_logged[m.name],
                    "train_seconds": train_seconds}
            results[m.name] = _finish_member(m, member_state(states[s], i), finite, source,
                                             evaluation, m.cfg.sae_config(hidden), info, shared)
        timing = {"train_seconds": round(train_seconds, 2),
                  "members_seconds": round(time.perf_counter() - t_members, 2)}
        if not pending:  # an earlier call trained and finished every member: keep its times
            recorded = _recorded_timing(workdir)
            timing = {k: recorded.get(k, v) for k, v in timing.items()}
        timing["total_seconds_this_call"] = round(time.perf_counter() - t_start, 2)
        write_sweep_report(workdir, members, timing=timing)
        print(f"sweep done in {time.perf_counter() - t_start:.1f}s: {workdir}")
        return results
