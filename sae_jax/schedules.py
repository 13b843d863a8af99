"""Per-step coefficient schedules of SAE training (docs/original.md §4).

All functions take the number of SAE steps already done (a Python int or a
traced int32 scalar) and return float32 scalars, so they run inside jit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from sae_jax.config import SAETrainConfig


def _as_step(step) -> jax.Array:
    return jnp.asarray(step, jnp.float32)


def l1_coefficient(step, cfg: SAETrainConfig) -> jax.Array:
    """Linear from ``l1_start`` to ``l1_coeff`` over ``l1_warmup_steps``, then constant."""
    s = _as_step(step)
    if cfg.l1_warmup_steps <= 0:
        return jnp.asarray(cfg.l1_coeff, jnp.float32)
    frac = jnp.clip(s / cfg.l1_warmup_steps, 0.0, 1.0)
    return jnp.float32(cfg.l1_start) + jnp.float32(cfg.l1_coeff - cfg.l1_start) * frac


def usage_coefficient(step, cfg: SAETrainConfig) -> jax.Array:
    """Linear warm-up from ``usage_floor`` to ``usage_coeff``, then a periodic cosine
    between the two: ``floor + (base - floor) * 0.5 * (1 + cos(2 pi phase / period))``
    with ``phase = (step - warmup) mod period``."""
    s = _as_step(step)
    base, floor = jnp.float32(cfg.usage_coeff), jnp.float32(cfg.usage_floor)
    warmup = cfg.usage_warmup_steps
    if cfg.usage_period <= 0:
        raise ValueError(f"usage_period must be positive, got {cfg.usage_period}")
    phase = jnp.mod(s - warmup, cfg.usage_period)
    wave = 0.5 * (1.0 + jnp.cos(2.0 * math.pi * phase / cfg.usage_period))
    cosine = floor + (base - floor) * wave
    if warmup <= 0:
        return cosine
    ramp = floor + (base - floor) * s / warmup
    return jnp.where(s < warmup, ramp, cosine)


def learning_rate_schedule(cfg: SAETrainConfig, total_steps: int) -> optax.Schedule:
    """Cosine annealing from ``lr`` to ``lr_final_fraction * lr`` over ``total_steps``
    (held at the final value afterwards)."""
    if total_steps <= 0:
        raise ValueError(f"the learning-rate schedule needs total_steps > 0, got {total_steps}")
    return optax.cosine_decay_schedule(
        init_value=cfg.lr, decay_steps=int(total_steps), alpha=cfg.lr_final_fraction
    )
