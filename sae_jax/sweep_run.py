"""A sweep run: one primary, one harvest into one device buffer, many SAEs trained at once.

:func:`train_sweep` is what ``python -m sae_jax.sweep`` calls. Every primary batch is
harvested once into the buffer; then every stack (:mod:`sae_jax.stack`: the members of
one shape and static settings) runs ``sae_steps_per_primary_step`` vmapped steps on it.
All members share each step's batch (drawn with the sweep's key, ``--seed``); a member's
own ``seed`` chooses its initial parameters.

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
from contextlib import ExitStack, closing
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from bridge.harvest import harvest_array
from bridge.harvest_blocks import (
    BlockLayout,
    create_staging,
    device_blocks,
    harvest_block,
    null_pooled_table,
)
from runkit.checkpoints import Checkpoints
from runkit.jsonio import read_json, write_json
from runkit.lock import WorkdirLock
from runkit.metrics_log import MetricsLog
from runkit.resume import claim_settings
from runkit.sharding import batch_sharding, make_mesh, replicate
from sae_jax.buffer import create_buffer
from sae_jax.chunk import fresh_health, make_push_fn
from sae_jax.config import SAETrainConfig
from sae_jax.evaluate import evaluate_sae
from sae_jax.loop_schedule import crossed
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
from sae_jax.stack import (
    group_into_stacks,
    make_stacked_train_steps,
    member_state,
    stack_settings,
    stack_states,
)
from sae_jax.step import init_train_state
from sae_jax.store import save_sae
from sae_jax.training import EVAL_BATCH_SIZE, check_result, raise_if_unhealthy

SWEEP_CONFIG = "sweep_config.json"
CHECKPOINTS_KEPT = 2
# Settings of the harvest and the loop, one for the whole sweep (members may not set them).
SWEEP_WIDE = ("buffer_size", "buffer_dtype", "min_buffer", "primary_batch_size",
              "sae_batch_size", "sae_steps_per_primary_step", "epochs", "data_fraction",
              "data_source", "data_path", "num_builds", "log_every", "checkpoint_every",
              "eval_builds", "concepts_file", "concept_set_sha256", "extra")


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


def _stacks_tree(states, buffer, key, healthy) -> dict:
    return {"stacks": list(states), "buffer": buffer._asdict(), "rng": key,
            "finite": list(healthy)}


def _log_rows(metrics, members: list[SweepMember], extra: dict) -> list[dict]:
    """One metrics line per member from a stack's ``(members,)`` metrics."""
    host = jax.device_get(metrics)
    rows = []
    for i, _ in enumerate(members):
        row = {k: (np.asarray(v)[i].item() if np.ndim(v) else np.asarray(v).item())
               for k, v in host.items()}
        row["finite"] = bool(row["finite"])
        rows.append({**row, **extra})
    return rows


def _train_stacks(base, plan, workdir, primary, train_examples, mesh, ckpt, stacks,
                  sae_config_of, stop_after_steps):
    """The harvest/train loop over every stack; returns ``(states, finite, stopped)``:
    the stacked states, per stack a ``(members,)`` bool of members whose loss stayed finite,
    and whether ``stop_after_steps`` stopped it."""
    rows = batch_sharding(mesh)
    states, settings, healthy = [], [], []
    for members in stacks:
        singles = [init_train_state(create_sae(sae_config_of(m.cfg), seed=m.cfg.seed), m.cfg,
                                    plan.total_sae_steps) for m in members]
        states.append(replicate(stack_states(singles), mesh))
        settings.append(replicate(stack_settings([m.cfg for m in members]), mesh))
        healthy.append(jnp.ones((len(members),), bool))
    d_in = sae_config_of(base).input_dim
    buffer = create_buffer(base.buffer_size, d_in, base.buffer_dtype, rows)
    buffer = buffer._replace(write_pos=replicate(buffer.write_pos, mesh),
                             fill=replicate(buffer.fill, mesh))
    key = replicate(jax.random.PRNGKey(base.seed), mesh)
    next_batch, seconds_before, latest = 0, 0.0, None
    restored = ckpt.restore_latest(_stacks_tree(states, buffer, key, healthy),
                                   what=f"this sweep ({sum(map(len, stacks))} members)")
    if restored is not None:
        latest = restored.step
        tree = restored.tree
        states, key, healthy = list(tree["stacks"]), tree["rng"], list(tree["finite"])
        buffer = type(buffer)(**tree["buffer"])
        next_batch = int(restored.progress["next_batch"])
        seconds_before = float(restored.progress.get("seconds", 0.0))
        print(f"resuming the sweep from its checkpoint at SAE step {latest} "
              f"(primary batch {next_batch} of {plan.total_batches})")
    logs = [[MetricsLog(members_dir(workdir) / m.name / "metrics.jsonl") for m in members]
            for members in stacks]
    for log in (log for group in logs for log in group):
        log.restart_at(latest)

    graphdef, primary_state = nnx.split(primary)
    primary_state = replicate(primary_state, mesh)
    # Harvested a block at a time, rows grouped by length (bridge.harvest_blocks), as a
    # single run harvests: no padding work, and the members see what a single run sees.
    layout = BlockLayout.for_batch_size(base.primary_batch_size)
    null_table = null_pooled_table(primary, train_examples.null_id, mesh)
    staging = create_staging(layout, d_in, mesh)
    push_fn, health = make_push_fn(rows), fresh_health()
    fns = [make_stacked_train_steps(members[0].cfg, plan.total_sae_steps,
                                    plan.sae_steps_per_batch, batch_sharding=rows)
           for members in stacks]
    step, t0, stopped = int(latest or 0), time.perf_counter(), False
    metrics = [None] * len(stacks)
    bar = tqdm(total=plan.total_batches, initial=next_batch, unit="batch",
               desc=f"sweep ({len(stacks)} stacks)", dynamic_ncols=True)
    blocks = device_blocks(train_examples, layout, mesh, seed=base.seed,
                           batches_per_epoch=plan.batches_per_epoch,
                           total_batches=plan.total_batches, first_batch=next_batch)
    block = None
    with closing(blocks):
        for g in range(next_batch, plan.total_batches):
            block_first = g - g % layout.batches
            if block is None or block.first_batch != block_first:
                block = next(blocks)
                staging = harvest_block(graphdef, primary_state, block, staging)
            buffer, health = push_fn(buffer, health, staging, null_table, block.is_null,
                                     block.weapons, np.int32(g - block_first), np.int32(step))
            rows_seen = (g + 1) * base.primary_batch_size
            prev = step
            if min(rows_seen, base.buffer_size) >= base.min_buffer:
                for s, fn in enumerate(fns):
                    states[s], metrics[s] = fn(states[s], settings[s], buffer, key)
                    healthy[s] = healthy[s] & metrics[s]["finite"]
                step += plan.sae_steps_per_batch
            bar.update(1)
            final = g + 1 == plan.total_batches
            stop = stop_after_steps is not None and step >= stop_after_steps
            if step == prev and not final:
                continue
            logs_now = crossed(prev, step, base.log_every) or final or stop
            saves_now = step > 0 and (crossed(prev, step, base.checkpoint_every) or final or stop)
            if logs_now or saves_now:
                raise_if_unhealthy(health, ckpt)  # before anything is written
            if metrics[0] is not None and logs_now:
                extra = {"step": step, "epoch": g // plan.batches_per_epoch, "primary_batch": g + 1,
                         "seconds": round(seconds_before + time.perf_counter() - t0, 3)}
                for s, members in enumerate(stacks):
                    for log, row in zip(logs[s], _log_rows(metrics[s], members, extra)):
                        log.append(row)
                bar.set_postfix(step=step)
            if saves_now:
                ckpt.save(step, _stacks_tree(states, buffer, key, healthy), {
                    "next_batch": g + 1, "rows_seen": rows_seen,
                    "seconds": seconds_before + time.perf_counter() - t0})
            if stop:
                stopped = True
                break
    bar.close()
    return states, healthy, stopped, seconds_before + time.perf_counter() - t0


def _finish_member(member: SweepMember, state, finite: bool, primary, evaluation, sae_config,
                   run_info: dict, train_seconds: float, analysis_inputs) -> dict:
    """Write member ``member``'s run directory: SAE, evaluation (``evaluation``: the held-out
    examples and their pooled vectors, shared by every member), curves and, given the
    sweep's shared ``analysis_inputs`` (:class:`sae_jax.analyze.AnalysisInputs`), the
    analysis."""
    mdir = run_info["members_dir"] / member.name
    if not finite:
        result = {"diverged": True, "steps": int(state.step)}
        write_json(mdir / "diverged.json", result)
        print(f"member {member.name}: the loss became non-finite; no SAE written")
        return result
    params, usage_ema = jax.device_get((state.params, state.usage_ema))
    sae = sae_from_params(sae_config, params, usage_ema)
    save_sae(mdir / "sae", sae)
    eval_examples, eval_pooled = evaluation
    result = check_result(evaluate_sae(primary, sae, eval_examples, batch_size=EVAL_BATCH_SIZE,
                                       pooled=eval_pooled,
                                       original_behaviour=member.cfg.original_behaviour))
    last = MetricsLog(mdir / "metrics.jsonl").rows()
    last = last[-1] if last else {}
    result.update(
        steps=int(state.step), seconds=round(train_seconds, 2), num_devices=1,
        num_processes=1, d_in=sae_config.input_dim, d_sae=sae_config.hidden_dim,
        primary_model_dir=str(run_info["primary_dir"]),
        final_train={k: last[k] for k in ("loss", "mse", "l1", "kl", "l0", "dead_count",
                                          "aux_loss", "dead_aux", "threshold", "prefix_mse",
                                          "threshold_mean") if k in last},
        sweep=str(run_info["workdir"]), trained_in_stack_of=run_info["stack_size"],
    )
    if sae_config.architecture != "relu_l1":
        result.update(architecture=sae_config.architecture, k=sae_config.k)
    write_json(mdir / "metrics.json", result)
    plot_curves(mdir / "metrics.jsonl", mdir / "curves.png",
                resample_steps=member.cfg.resample_steps)
    if analysis_inputs is not None:
        from sae_jax.analyze import analyze as analyze_run

        print(f"analysing member {member.name} ...")
        analyze_run(mdir, inputs=analysis_inputs)
    return result


def train_sweep(base: SAETrainConfig, members: list[SweepMember], workdir, *,
                primary_dir=None, stop_after_steps: int | None = None,
                analyze: bool = True, analysis_builds: int | None = None) -> dict:
    """Run (or resume, or finish) the sweep in ``workdir``; returns ``{name: metrics}``.

    ``base``: the sweep-wide settings (data, buffer, loop, and the key of the shared batch
    order, ``base.seed``); ``members``: each member's full settings (their
    :data:`SWEEP_WIDE` settings must equal ``base``'s). ``primary_dir``: as
    :func:`sae_jax.training.train_sae`'s (None: the demo primary, trained or reused in
    ``workdir/primary_run``). ``stop_after_steps``: checkpoint and return after this many
    SAE steps. ``analysis_builds``: analyse each member on at most this many held-out
    builds (None: all ``eval_builds``).
    """
    from sae_jax.sweep_report import write_sweep_report

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
    base.validate()
    if analysis_builds is not None and analysis_builds <= 0:
        raise ValueError(f"--analysis_builds must be positive, got {analysis_builds}")
    mesh = make_mesh(jax.devices()[:1])  # one device: the stacks, not the data, are wide
    check_devices(base, mesh.size)
    if primary_dir is not None and not (Path(primary_dir) / "config.json").exists():
        raise FileNotFoundError(f"--primary_dir {primary_dir} is not a primary model directory "
                                "(no config.json): give the model/ folder of a primary run")
    base, concepts = run_concept_set(base, primary_dir)
    members = [SweepMember(m.name, dataclasses.replace(
        m.cfg, concept_set_sha256=base.concept_set_sha256)) for m in members]
    plan = estimate_plan(base, primary_dir, concepts)
    for m in members:
        try:
            m.cfg.validate(total_sae_steps=plan.total_sae_steps,
                           d_sae=known_d_sae(m.cfg, primary_dir))
        except ValueError as e:
            raise ValueError(f"member {m.name}: {e}") from None
    with ExitStack() as stack:
        workdir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(WorkdirLock(workdir))
        _claim_sweep(workdir, members)
        primary, vocab, weapon_vocab, primary_dir, seed = obtain_primary(
            base, workdir, primary_dir=primary_dir)
        train_examples, eval_examples, num_builds = prepare_data(base, vocab, weapon_vocab,
                                                                 seed=seed, concepts=concepts)
        hidden = primary.config.hidden_dim
        for m in members:
            try:
                m.cfg.validate(d_sae=int(hidden * m.cfg.expansion_factor))
            except ValueError as e:
                raise ValueError(f"member {m.name}: {e}") from None
            mdir = members_dir(workdir) / m.name
            mdir.mkdir(parents=True, exist_ok=True)
            claim_settings(mdir, m.cfg.to_dict())
            write_run_json(mdir, m.cfg, primary_dir, num_builds, seed, concepts, within=workdir)
        groups = [[members[i] for i in g] for g in group_into_stacks([m.cfg for m in members])]
        print(f"{len(members)} members in {len(groups)} stacks "
              f"({', '.join(str(len(g)) for g in groups)}); {plan.total_batches} primary "
              f"batches, {plan.total_sae_steps} SAE steps of {base.sae_batch_size}")
        ckpt = stack.enter_context(Checkpoints(workdir / "checkpoints", keep=CHECKPOINTS_KEPT))
        states, healthy, stopped, train_seconds = _train_stacks(
            base, plan, workdir, primary, train_examples, mesh, ckpt, groups,
            lambda c: c.sae_config(hidden), stop_after_steps)
        if stopped:
            return {"stopped": True, "steps": int(states[0].step),
                    "seconds": time.perf_counter() - t_start}
        info = {"workdir": workdir, "members_dir": members_dir(workdir),
                "primary_dir": primary_dir}
        t_members = time.perf_counter()
        results = {}
        todo = [(s, i, m) for s, group in enumerate(groups) for i, m in enumerate(group)]
        pending = {m.name for _, _, m in todo
                   if not _member_done(members_dir(workdir) / m.name, analyze)}
        to_analyse = [m.name for s, i, m in todo
                      if analyze and m.name in pending and np.asarray(healthy[s])[i]]
        # The evaluation's pooled vectors, made once: every member reads the same ones.
        evaluation = (eval_examples, harvest_array(primary, eval_examples, EVAL_BATCH_SIZE)
                      if any(np.asarray(healthy[s])[i] for s, i, m in todo if m.name in pending)
                      else None)
        inputs = None  # what the members' analyses share, made once (all share the data)
        if to_analyse:
            from sae_jax.analyze import analysis_inputs

            inputs = analysis_inputs(members_dir(workdir) / to_analyse[0],
                                     num_builds=analysis_builds,
                                     primary=(primary, vocab, weapon_vocab))
        for s, i, m in tqdm(todo, desc="members", unit="member"):
            mdir = members_dir(workdir) / m.name
            if m.name not in pending:
                results[m.name] = read_json(mdir / "metrics.json", what="member metrics")
                continue
            finite = bool(np.asarray(healthy[s])[i])
            results[m.name] = _finish_member(
                m, member_state(states[s], i), finite, primary, evaluation,
                m.cfg.sae_config(hidden), {**info, "stack_size": len(groups[s])},
                train_seconds, inputs)
        timing = {"train_seconds": round(train_seconds, 2),
                  "members_seconds": round(time.perf_counter() - t_members, 2)}
        if not pending:  # an earlier call trained and finished every member: keep its times
            recorded = _recorded_timing(workdir)
            timing = {k: recorded.get(k, v) for k, v in timing.items()}
        timing["total_seconds_this_call"] = round(time.perf_counter() - t_start, 2)
        write_sweep_report(workdir, members, timing=timing)
        print(f"sweep done in {time.perf_counter() - t_start:.1f}s: {workdir}")
        return results
