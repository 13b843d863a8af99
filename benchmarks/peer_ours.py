"""Our side of the SAELens peer benchmark: SAEs trained by ``sae_jax`` on the world's
training array, one at a time (:func:`sae_jax.step.make_train_steps`, the jitted step) and
as a sweep of stacks (:func:`sae_jax.stack.make_stacked_train_steps`, the vmapped step;
one stack per architecture, its members the seeds).

The array is the device buffer the steps draw their batches from (uniformly, with
replacement, ``fold_in(key, step)``: the library's own batching). Wall times are end to
end: building the SAE, compiling (once per architecture: the seeds share it) and every
step, until the parameters are ready.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sae_jax.buffer import ActivationBuffer
from sae_jax.model import create_sae
from sae_jax.recipes import inference_params
from sae_jax.stack import make_stacked_train_steps, member_state, stack_settings, stack_states
from sae_jax.step import init_train_state, make_train_steps

STEPS_PER_CALL = 50  # SAE steps per jitted call (one lax.scan)

# Compiled step functions, by (config with its seed cleared, schedule length, steps per
# call, stacked): the seed only picks the initial parameters and the batch key, so the
# seeds of one architecture share one compilation, as they would in a user's own loop.
_COMPILED: dict = {}


def _compiled(cfg, total_steps: int, n: int, *, stacked: bool):
    key = (repr(dataclasses.replace(cfg, seed=0)), total_steps, n, stacked)  # holds a dict
    if key not in _COMPILED:
        make = make_stacked_train_steps if stacked else make_train_steps
        _COMPILED[key] = make(cfg, total_steps, n)
    return _COMPILED[key]


@dataclass
class Trained:
    """One trained SAE of ours: its parameters and SAEConfig, and what its training cost."""

    params: dict  # name -> np.ndarray
    sae_config: object  # sae_jax.model.SAEConfig
    wall_s: float  # end to end (shared by every member of a sweep)
    first_call_s: float  # the first call: its steps, and compiling where it was not yet
    steps: int
    final_l0: float  # the training batches' mean L0 over the last call


def array_buffer(train: np.ndarray) -> ActivationBuffer:
    """The whole training array as a full activation buffer."""
    rows = len(train)
    return ActivationBuffer(jnp.asarray(train, jnp.float32), jnp.zeros((), jnp.int32),
                            jnp.asarray(rows, jnp.int32))


def _calls(steps: int) -> list[int]:
    """The steps of each call: full calls of :data:`STEPS_PER_CALL`, then the rest."""
    full, rest = divmod(steps, STEPS_PER_CALL)
    return [STEPS_PER_CALL] * full + ([rest] if rest else [])


def train_single(cfg, total_steps: int, buffer: ActivationBuffer, *,
                 steps: int | None = None) -> Trained:
    """Train one SAE of ``cfg`` (seeded by ``cfg.seed``: its initialisation and its
    batches) for ``steps`` of a ``total_steps`` schedule (all of it when None)."""
    steps = total_steps if steps is None else steps
    t0 = time.perf_counter()
    sae_config = cfg.sae_config(buffer.data.shape[1])
    state = init_train_state(create_sae(sae_config, seed=cfg.seed), cfg, total_steps)
    key = jax.random.key(cfg.seed)
    first_call_s = None
    for n in _calls(steps):
        state, metrics = _compiled(cfg, total_steps, n, stacked=False)(state, buffer, key)
        if first_call_s is None:
            jax.block_until_ready(metrics)
            first_call_s = time.perf_counter() - t0
    params = jax.tree.map(np.asarray, inference_params(state.params, cfg))  # waits for it
    return Trained(params, sae_config, time.perf_counter() - t0, first_call_s, steps,
                   float(metrics["l0"]))


def train_sweep(stacks: list[list], total_steps: int, buffer: ActivationBuffer, *,
                key_seed: int, steps: int | None = None) -> tuple[list[list[Trained]], float]:
    """Train every member of every stack (``stacks``: lists of configs that differ only
    in seed, one stack per architecture), stack after stack, all drawing their batches
    from one key. Returns the trained members, stack by stack, and the sweep's wall time
    (every ``Trained.wall_s`` is that sweep total)."""
    steps = total_steps if steps is None else steps
    t0 = time.perf_counter()
    key = jax.random.key(key_seed)
    out = []
    for cfgs in stacks:
        start = time.perf_counter()
        sae_config = cfgs[0].sae_config(buffer.data.shape[1])
        state = stack_states([init_train_state(create_sae(sae_config, seed=c.seed), c,
                                               total_steps) for c in cfgs])
        settings = stack_settings(cfgs)
        first_call_s = None
        for n in _calls(steps):
            step_fn = _compiled(cfgs[0], total_steps, n, stacked=True)
            state, metrics = step_fn(state, settings, buffer, key)
            if first_call_s is None:
                jax.block_until_ready(metrics)
                first_call_s = time.perf_counter() - start
        members = []
        for i in range(len(cfgs)):
            params = jax.tree.map(np.asarray,
                                  inference_params(member_state(state, i).params, cfgs[i]))
            members.append(Trained(params, sae_config, 0.0, first_call_s, steps,
                                   float(metrics["l0"][i])))
        out.append(members)
    wall = time.perf_counter() - t0
    for members in out:
        for m in members:
            m.wall_s = wall
    return out, wall
