"""Many primary batches of the training loop in one jitted call.

A chunk takes a block of already harvested pooled vectors (``staging``,
``(C, B, d)``: C primary batches of B rows) and, for ``count`` of its batches
starting at ``first``, does on the device what the loop used to do with three
host calls per batch: push the batch's rows into the activation buffer, run
``steps_per_batch`` SAE steps (:func:`sae_jax.step.steps_body`) and fold the
batch's checks into the :class:`Health` record. The batch loop is a
``lax.fori_loop`` with traced bounds, so one compiled program serves every chunk
length from 1 to C (and a chunk cut short by a checkpoint runs the very same
code as a whole one).

Rows whose input is the lone ``[<NULL>]`` token have a pooled vector that
depends on the weapon alone: they are not harvested but looked up in
``null_table`` (one row per weapon id).

Per-batch metrics come back stacked ``(C,)`` (rows past the chunk hold zeros):
the host reads them only when it logs, so nothing syncs per batch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sae_jax.buffer import ActivationBuffer, push
from sae_jax.config import SAETrainConfig
from sae_jax.step import TrainState, _config_key, steps_body


class Health(NamedTuple):
    """Device-side fault record: the first SAE step at which the primary gave non-finite
    activations, and at which the SAE loss was non-finite (-1: never)."""

    bad_activation_step: jax.Array
    bad_loss_step: jax.Array


def fresh_health() -> Health:
    minus_one = jnp.full((), -1, jnp.int32)
    return Health(minus_one, minus_one)


def note(health: Health, activations_finite, loss_finite, step) -> Health:
    """Fold one primary batch's checks into the record (inside jit)."""
    bad_act = jnp.where((health.bad_activation_step < 0) & ~activations_finite, step,
                        health.bad_activation_step)
    bad_loss = jnp.where((health.bad_loss_step < 0) & ~loss_finite, step, health.bad_loss_step)
    return Health(bad_act, bad_loss)


def batch_rows(staging: jax.Array, null_table: jax.Array, is_null: jax.Array,
               weapons: jax.Array, i) -> jax.Array:
    """``Float[Array, "B d"]``: batch ``i`` of the block, its ``[<NULL>]`` rows taken from
    the weapon table."""
    x = jax.lax.dynamic_index_in_dim(staging, i, keepdims=False).astype(jnp.float32)
    looked_up = null_table[jax.lax.dynamic_index_in_dim(weapons, i, keepdims=False)]
    null = jax.lax.dynamic_index_in_dim(is_null, i, keepdims=False)
    return jnp.where(null[:, None], looked_up.astype(jnp.float32), x)


def _chunk_fn(cfg: SAETrainConfig, total_steps: int, steps_per_batch: int, batches: int,
              train: bool, batch_sharding):
    run_steps = steps_body(cfg, total_steps, steps_per_batch, batch_sharding) if train else None

    def run(state: TrainState, buffer: ActivationBuffer, key, health: Health, staging,
            null_table, is_null, weapons, first, count):
        metrics = None
        if train:
            shapes = jax.eval_shape(run_steps, state, buffer, key)[1]
            metrics = {k: jnp.zeros((batches,) + v.shape, v.dtype) for k, v in shapes.items()}

        def body(i, carry):
            state, buffer, health, metrics = carry
            x = batch_rows(staging, null_table, is_null, weapons, i)
            if batch_sharding is not None:
                x = jax.lax.with_sharding_constraint(x, batch_sharding)
            activations_ok = jnp.all(jnp.isfinite(x))
            buffer = push(buffer, x)
            step = state.step
            loss_ok = jnp.asarray(True)
            if train:
                state, m = run_steps(state, buffer, key)
                loss_ok = m["finite"]
                metrics = {k: v.at[i].set(m[k]) for k, v in metrics.items()}
            return state, buffer, note(health, activations_ok, loss_ok, step), metrics

        state, buffer, health, metrics = jax.lax.fori_loop(
            first, first + count, body, (state, buffer, health, metrics))
        return state, buffer, health, metrics

    return jax.jit(run, donate_argnums=(0, 1))


_COMPILED: dict = {}


def make_chunk_fn(cfg: SAETrainConfig, total_steps: int, steps_per_batch: int,
                  batches_per_block: int, *, train: bool,
                  batch_sharding: jax.sharding.Sharding | None = None):
    """``fn(state, buffer, key, health, staging, null_table, is_null, weapons, first, count)
    -> (state, buffer, health, metrics)``.

    ``staging``: ``(C, B, d)`` pooled vectors of a block of ``C = batches_per_block``
    primary batches; ``is_null`` ``(C, B)`` bool and ``weapons`` ``(C, B)`` int: which rows
    to take from ``null_table`` ``(num_weapons, d)`` instead; ``first``, ``count``: int32
    scalars, the batches of the block to run. ``train``: run ``steps_per_batch`` SAE steps
    after each push (False: only fill the buffer; ``metrics`` is then None). ``state`` and
    ``buffer`` are donated. ``metrics``: each of :func:`sae_jax.step.make_train_steps`'s
    metrics, per batch of the block, ``(C,)``. Cached per (config, sizes, sharding).
    """
    if min(steps_per_batch, batches_per_block, total_steps) <= 0:
        raise ValueError(f"steps_per_batch {steps_per_batch}, batches_per_block "
                         f"{batches_per_block} and total_steps {total_steps} must be positive")
    key = (_config_key(cfg), int(total_steps), int(steps_per_batch), int(batches_per_block),
           bool(train), batch_sharding)
    fn = _COMPILED.get(key)
    if fn is None:
        fn = _COMPILED[key] = _chunk_fn(cfg, int(total_steps), int(steps_per_batch),
                                        int(batches_per_block), bool(train), batch_sharding)
    return fn


def make_push_fn(batch_sharding: jax.sharding.Sharding | None = None):
    """``fn(buffer, health, staging, null_table, is_null, weapons, i, step) -> (buffer,
    health)``: batch ``i`` of a harvested block pushed into the buffer (donated), as a chunk
    pushes it, for loops that run their own steps after each push (sweeps); non-finite rows
    are noted in ``health`` at SAE step ``step``, on the device (the host reads it when it
    logs or checkpoints, not per batch)."""
    def run(buffer: ActivationBuffer, health: Health, staging, null_table, is_null, weapons,
            i, step):
        x = batch_rows(staging, null_table, is_null, weapons, i)
        if batch_sharding is not None:
            x = jax.lax.with_sharding_constraint(x, batch_sharding)
        return push(buffer, x), note(health, jnp.all(jnp.isfinite(x)), jnp.asarray(True), step)

    return jax.jit(run, donate_argnums=0)
