"""Many SAEs of one shape trained as one ``jax.vmap``ped stack, in one ``lax.scan``.

A *stack* is N members that share every static setting (shape, architecture, k, the
schedule lengths, the batch size, ...) and differ only in the settings of
:data:`DYNAMIC_SETTINGS` (numbers the step uses as values, never for Python control
flow) and in their initialisation seed. The step is :func:`sae_jax.step.one_step`
itself, vmapped over the members: each member's config is the stack's config with its
own dynamic settings put in as traced scalars, so the loss, the optax chain and the
resampling are the same code as a single run's. The vmap names its axis
(:data:`MEMBERS_AXIS`), so the loss can skip work that no member needs (a branch on the
batched value of each member would run both sides for all).

Batches are shared: every member of every stack draws step ``s``'s batch with
``fold_in(key, s)`` from the same buffer and key, so the batch is gathered once per
step (outside the vmap; each member then gets its own copy, which keeps every member's
matmuls in member-major layout) and the members differ only by their settings and
initial parameters. A member
trained alone with :func:`sae_jax.step.make_train_steps` from the same state, buffer and
key follows the same trajectory (tests/apps/test_sweep.py).

The stacked state is a :class:`~sae_jax.step.TrainState` whose leaves carry a leading
member axis, except ``step``, one shared int32 scalar (so the batch draw and the
resampling schedule stay unbatched: one draw, and ``lax.cond`` rather than both branches).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from sae_jax.config import SAETrainConfig
from sae_jax.recipes import metric_names
from sae_jax.schedules import learning_rate_schedule
from sae_jax.step import MEAN_METRICS, TrainState, check_step_counts, one_step, step_batch
from sae_jax.transforms import make_optimizer

# Settings members of one stack may differ in: used by the step only as numbers.
DYNAMIC_SETTINGS = ("lr", "weight_decay", "l1_coeff", "l1_start", "usage_coeff",
                    "usage_floor", "target_usage", "aux_coeff", "l0_coeff")
# Settings that only choose a member's initial parameters.
INIT_SETTINGS = ("seed",)

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SAETrainConfig)}

# The state's member axis: everything but the shared step count.
_STATE_AXES = TrainState(params=0, opt_state=0, usage_ema=0, step=None, extra=0)
# The vmap axis name: the loss asks it whether any member needs work it can skip.
MEMBERS_AXIS = "members"


def stack_signature(cfg: SAETrainConfig) -> SAETrainConfig:
    """``cfg`` with its dynamic and seed settings at their defaults: members with equal
    signatures train in one stack."""
    return dataclasses.replace(cfg, **{k: _DEFAULTS[k]
                                       for k in DYNAMIC_SETTINGS + INIT_SETTINGS})


def group_into_stacks(cfgs: Sequence[SAETrainConfig]) -> list[list[int]]:
    """Member indices grouped by :func:`stack_signature`, in order of first appearance."""
    groups: list[tuple[SAETrainConfig, list[int]]] = []
    for i, cfg in enumerate(cfgs):
        signature = stack_signature(cfg)
        for other, members in groups:
            if other == signature:
                members.append(i)
                break
        else:
            groups.append((signature, [i]))
    return [members for _, members in groups]


def stack_settings(cfgs: Sequence[SAETrainConfig]) -> dict[str, jax.Array]:
    """``{name: Float[Array, "members"]}`` of the dynamic settings of one stack's members;
    raises ValueError when the members cannot share a stack."""
    if not cfgs:
        raise ValueError("a stack needs at least one member")
    first = stack_signature(cfgs[0])
    for i, cfg in enumerate(cfgs):
        if stack_signature(cfg) != first:
            diff = {k: (getattr(cfgs[0], k), getattr(cfg, k))
                    for k in _DEFAULTS if k not in DYNAMIC_SETTINGS + INIT_SETTINGS
                    and getattr(cfgs[0], k) != getattr(cfg, k)}
            raise ValueError(f"member {i} differs from member 0 in static settings {diff}; "
                             "such members train in separate stacks (group_into_stacks)")
    return {k: jnp.asarray([getattr(c, k) for c in cfgs], jnp.float32)
            for k in DYNAMIC_SETTINGS}


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """One stacked state from the members' single states (all at the same step)."""
    steps = {int(s.step) for s in states}
    if len(steps) != 1:
        raise ValueError(f"the members of a stack must be at the same step, got {sorted(steps)}")
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[s._replace(step=0) for s in states])
    return stacked._replace(step=jnp.asarray(states[0].step, jnp.int32))


def member_state(state: TrainState, i: int) -> TrainState:
    """Member ``i``'s single state out of a stacked one."""
    single = jax.tree.map(lambda x: x[i], state._replace(step=jnp.zeros((1,), jnp.int32)))
    return single._replace(step=state.step)


def member_config(cfg: SAETrainConfig, settings: dict) -> SAETrainConfig:
    """``cfg`` with one member's dynamic settings (traced scalars inside the stacked step)."""
    return dataclasses.replace(cfg, **settings)


def stacked_steps_body(cfg: SAETrainConfig, total_steps: int, num_steps: int,
                       batch_sharding=None):
    """The unjitted ``(state, settings, buffer, key) -> (state, metrics)`` of
    :func:`make_stacked_train_steps`, for callers that run it inside a jitted function of
    their own (the training loop's chunk)."""
    check_step_counts(total_steps, num_steps)
    cfg = stack_signature(cfg)
    resample_at = tuple(sorted(int(s) for s in cfg.resample_steps))

    def member_step(state, settings, buffer, key, x):
        mcfg = member_config(cfg, settings)
        # The optimiser and schedule hold no arrays of their own: building them per member
        # inside the trace puts the member's lr and weight decay in as values.
        return one_step(state, buffer, key, cfg=mcfg,
                         optimizer=make_optimizer(mcfg, total_steps),
                         lr_schedule=learning_rate_schedule(mcfg, total_steps),
                         resample_at=resample_at, batch_sharding=batch_sharding, x=x,
                         members_axis=MEMBERS_AXIS)

    stacked_step = jax.vmap(member_step, in_axes=(_STATE_AXES, 0, None, None, 0),
                            out_axes=(_STATE_AXES, 0), axis_name=MEMBERS_AXIS)

    def run(state: TrainState, settings: dict, buffer, key: jax.Array):
        members = jax.tree.leaves(settings)[0].shape[0]

        def body(carry, _):
            # The batch is drawn once and given to every member as its own copy: with the
            # batch shared, vmap folds the members into one wide encoder matmul whose
            # output then needs a transpose to member-major for each use (measured: many
            # (members, batch, features) transposes per step).
            x = step_batch(buffer, key, carry.step, cfg, batch_sharding)
            xs = jnp.broadcast_to(x, (members, *x.shape))
            return stacked_step(carry, settings, buffer, key, xs)

        state, per_step = jax.lax.scan(body, state, None, length=num_steps)
        # per_step leaves are (num_steps, members): summarise over the steps, per member.
        metrics = {k: jnp.mean(per_step[k], axis=0) for k in MEAN_METRICS + metric_names(cfg)}
        metrics["n_resampled"] = jnp.sum(per_step["n_resampled"], axis=0)
        metrics["dead_count"] = jnp.sum(state.usage_ema < cfg.dead_threshold, axis=-1,
                                        dtype=jnp.int32)
        metrics["finite"] = jnp.all(jnp.isfinite(per_step["loss"]), axis=0)
        metrics["step"] = state.step
        return state, metrics

    return run


def make_stacked_train_steps(cfg: SAETrainConfig, total_steps: int, num_steps: int, *,
                             batch_sharding: jax.sharding.Sharding | None = None):
    """``fn(state, settings, buffer, key) -> (state, metrics)`` running ``num_steps`` SAE
    steps of every member of a stack at once.

    ``cfg``: any member's config (its dynamic settings are ignored: ``settings``, from
    :func:`stack_settings`, gives them per member). ``state``: stacked (:func:`stack_states`),
    donated. ``metrics``: as :func:`sae_jax.step.make_train_steps`'s, each of shape
    ``(members,)`` except ``step``. Each call returns a new function, compiled at its first
    use: make it once and keep it.
    """
    return jax.jit(stacked_steps_body(cfg, int(total_steps), int(num_steps), batch_sharding),
                   donate_argnums=0)
