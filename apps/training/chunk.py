"""Many primary batches of the training loop in one jitted call.

A chunk takes a block of activations already on the device (the primary's harvested
pooled vectors, ``staging`` ``(C, B, d)``: C primary batches of B rows, or rows read from
activation files: :mod:`apps.training.activation_sources`) and, for ``count`` of its batches
starting at ``first``, does on the device what the loop used to do with three
host calls per batch: push the batch's rows into the activation buffer, run
its SAE steps (:class:`BatchSteps`: a single run's or a sweep's) and fold the
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

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sae_jax.buffer import ActivationBuffer, push
from sae_jax.config import SAETrainConfig
from sae_jax.step import steps_body


class Health(NamedTuple):
    """Device-side fault record: the first SAE step at which a batch held non-finite
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


class BatchSteps(NamedTuple):
    """What a chunk trains after each push: one SAE (a single run) or the stacks of a sweep.

    ``run(state, buffer, key) -> (state, metrics, loss_ok)``: one primary batch's SAE steps,
    unjitted (the chunk traces it into its loop); ``metrics`` is any pytree of arrays;
    ``loss_ok`` a bool scalar, False when the run must stop on a non-finite loss.
    ``steps_done(state)``: the SAE steps ``state`` has done (an int32 scalar)."""

    run: Callable
    steps_done: Callable


def single_steps(cfg: SAETrainConfig, total_steps: int, steps_per_batch: int,
                 batch_sharding: jax.sharding.Sharding | None = None) -> BatchSteps:
    """One SAE's steps (:func:`sae_jax.step.steps_body`; metrics: a list of its one dict of
    scalars); a non-finite loss stops the run."""
    body = steps_body(cfg, int(total_steps), int(steps_per_batch), batch_sharding)

    def run(state, buffer, key):
        state, metrics = body(state, buffer, key)
        return state, [metrics], metrics["finite"]

    return BatchSteps(run, lambda state: state.step)


def make_chunk_fn(steps: BatchSteps, batches_per_block: int, *, train: bool,
                  batch_sharding: jax.sharding.Sharding | None = None,
                  rows_of: Callable = batch_rows):
    """``fn(state, buffer, key, health, *inputs, first, count) -> (state, buffer, health,
    metrics)``.

    ``inputs``: the block's arrays, batch ``i`` of which is ``rows_of(*inputs, i)``, a
    ``(B, d)`` float32 array; by default (:func:`batch_rows`) the primary's block:
    ``staging`` ``(C, B, d)`` pooled vectors of ``C = batches_per_block`` primary batches,
    ``null_table`` ``(num_weapons, d)``, ``is_null`` ``(C, B)`` bool and ``weapons`` ``(C,
    B)`` int (which rows to take from ``null_table`` instead). ``first``, ``count``: int32
    scalars, the batches of the block to run. ``train``: run ``steps`` after each push
    (False: only fill the buffer; ``metrics`` is then None). ``state`` and ``buffer`` are
    donated. ``metrics``: ``steps``' metrics, each leaf per batch of the block, ``(C, ...)``.
    Each call returns a new function, compiled at its first use: make it once per run.
    """
    if batches_per_block <= 0:
        raise ValueError(f"batches_per_block must be positive, got {batches_per_block}")
    batches = int(batches_per_block)

    def run(state, buffer: ActivationBuffer, key, health: Health, *rest):
        *inputs, first, count = rest
        metrics = None
        if train:
            shapes = jax.eval_shape(steps.run, state, buffer, key)[1]
            metrics = jax.tree.map(lambda v: jnp.zeros((batches,) + v.shape, v.dtype), shapes)

        def body(i, carry):
            state, buffer, health, metrics = carry
            x = rows_of(*inputs, i)
            if batch_sharding is not None:
                x = jax.lax.with_sharding_constraint(x, batch_sharding)
            activations_ok = jnp.all(jnp.isfinite(x))
            buffer = push(buffer, x)
            step = steps.steps_done(state)
            loss_ok = jnp.asarray(True)
            if train:
                state, m, loss_ok = steps.run(state, buffer, key)
                metrics = jax.tree.map(lambda v, new: v.at[i].set(new), metrics, m)
            return state, buffer, note(health, activations_ok, loss_ok, step), metrics

        state, buffer, health, metrics = jax.lax.fori_loop(
            first, first + count, body, (state, buffer, health, metrics))
        return state, buffer, health, metrics

    return jax.jit(run, donate_argnums=(0, 1))
