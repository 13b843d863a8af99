"""The SAE training loss: reconstruction, L1 sparsity and a usage (KL) penalty.

``total = mse + l1_coeff(step) * l1 + usage_coeff(step) * kl`` (docs/original.md §4):

- ``mse = mean((recon - x)^2)`` over rows and input dimensions;
- ``l1 = mean_rows(sum_features |h|)``;
- ``usage_ema_new = decay * usage_ema + (1 - decay) * mean_rows(h > 0)``;
- ``kl = mean_j KL(rho || p_j)`` with ``p = clip(usage_ema_new, 1e-7, 1 - 1e-7)``,
  ``rho = target_usage``.

A usage penalty that carries gradient
-------------------------------------
Written literally, the usage term has no gradient: ``h > 0`` is a step function
and the EMA is a running statistic. We keep its *value* exactly as above (the
EMA is stable and is what gets logged) and give it the gradient of a soft,
per-batch firing estimate, straight-through:

``s_j = mean_rows(sigmoid(pre_ij / tau_j))``, ``ell_j = logit(s_j)``,
``kl_j -> kl_j + (p_j - rho) * (ell_j - stop_gradient(ell_j))``.

The added term is zero in value; its gradient is that of
``KL(rho || sigmoid(logit(p_j) + ell_j - stop_gradient(ell_j)))``, i.e. the
KL's derivative with respect to the log-odds of the usage, ``p_j - rho``, times
the gradient of the soft log-odds. Three reasons for this form:

1. A dead feature has ``pre < 0`` on every row, so ``relu`` passes it no
   gradient at all, but ``sigmoid(pre / tau)`` does: the term pushes its
   pre-activations up (``p < rho``) and pushes an overused feature's down.
2. Working in log-odds keeps the gradient bounded. ``dKL/dp`` is
   ``(p - rho) / (p (1 - p))``, about 5e5 for a dead feature at the clip floor,
   which would swamp the reconstruction gradient under global-norm clipping;
   ``dKL/dlogit(p) = p - rho`` lies in (-1, 1).
3. ``ell_j`` is computed with log-sum-exp of log-sigmoids, so its gradient does
   not vanish however far below zero a dead feature sits: it becomes a softmax
   over the batch rows that are closest to firing, with total weight ``1/tau``,
   which is exactly where a feature should start to fire.

The soft estimate is taken on the first ``cfg.usage_estimate_rows`` rows of the
batch (default 256; rows are independent draws from the buffer, so this is a
uniform subsample): its transcendentals over every (row, feature) entry were
the largest cost of the step after the matmuls, and a quarter of a 1024-row
batch gives the same push at a quarter of the cost.

``tau_j = USAGE_TEMPERATURE * std_rows(pre_j)`` (no gradient through it) makes
the estimate scale-free: it is as sharp for a feature whose pre-activations
spread over 0.01 as for one spread over 10. One standard deviation is soft on
purpose: every row gets some of the push, weighted toward those nearest to the
threshold. Much sharper estimates (0.1 std) put the whole push on a few rows at
the threshold, overshoot, and left many features dead on the sparse-dictionary
check of ``benchmarks/sae_fix_quality.py``.

With a live gradient the usage coefficient is a real constraint (every feature
is pulled toward ``target_usage``), so it needs choosing relative to the
reconstruction error of the data at hand; the original's 1.5 was never felt.

``cfg.original_behaviour`` reproduces the original's two defects for
comparison: the usage term has no gradient and the decoder atoms are under
``stop_gradient`` (its dictionary never learns).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sae_jax.activity import firing_counts
from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEParams, decode, encode
from sae_jax.schedules import l1_coefficient, usage_coefficient

USAGE_CLIP = 1e-7
# Softness of the firing estimate, in units of each feature's batch std of pre-activations.
USAGE_TEMPERATURE = 1.0
_STD_FLOOR = 1e-6


def bernoulli_kl(rho: float, p: jax.Array) -> jax.Array:
    """``KL(Bernoulli(rho) || Bernoulli(p))`` elementwise."""
    return rho * jnp.log(rho / p) + (1.0 - rho) * jnp.log((1.0 - rho) / (1.0 - p))


def soft_usage_logit(pre: jax.Array, temperature: float | None = None) -> jax.Array:
    """``logit(mean_rows(sigmoid(pre / tau)))`` per feature, in log space.

    pre: (batch, d_sae) -> (d_sae,). ``tau`` is ``temperature`` times each feature's
    batch std of ``pre`` (held constant for the gradient).
    """
    temperature = USAGE_TEMPERATURE if temperature is None else temperature
    n = pre.shape[0]
    spread = jax.lax.stop_gradient(jnp.std(pre, axis=0))
    z = pre / (temperature * jnp.maximum(spread, _STD_FLOOR))
    log_sig = jax.nn.log_sigmoid(z)
    log_fire = jax.nn.logsumexp(log_sig, axis=0) - math.log(n)
    # log(1 - sigmoid(z)) = log_sigmoid(z) - z: one softplus per entry instead of two.
    log_silent = jax.nn.logsumexp(log_sig - z, axis=0) - math.log(n)
    return log_fire - log_silent


def _estimate_rows(pre: jax.Array, rows: int) -> jax.Array:
    """The first ``rows`` rows (all when 0 or more than the batch): batch rows are
    independent draws from the buffer, so these are a uniform subsample."""
    return pre if rows <= 0 or rows >= pre.shape[0] else pre[:rows]


def _check_batch(params: SAEParams, x: jax.Array, usage_ema: jax.Array) -> None:
    d_in, d_sae = params["W_enc"].shape
    if x.ndim != 2 or x.shape[1] != d_in:
        raise ValueError(f"SAE loss expects activations of shape (batch, {d_in}), got {x.shape}")
    if usage_ema.shape != (d_sae,):
        raise ValueError(f"usage_ema has shape {usage_ema.shape}, expected ({d_sae},)")


def sae_loss(
    params: SAEParams, x: jax.Array, usage_ema: jax.Array, step, cfg: SAETrainConfig
) -> tuple[jax.Array, dict]:
    """Total loss and its parts for one batch.

    params: SAE params dict; x: (batch, d_in) activations; usage_ema: (d_sae,) running
    firing rate before this batch; step: SAE steps done so far (int or traced int32).

    Returns ``(total, aux)``; aux holds scalars ``mse, l1, kl, l0`` (mean number of
    active features per row), ``l1_coeff, usage_coeff``, and ``usage_batch`` (d_sae,)
    (this batch's firing rate) and ``usage_ema`` (d_sae,) (the updated EMA).
    """
    _check_batch(params, x, usage_ema)
    x = x.astype(jnp.float32)
    pre, h = encode(params, x, cfg.clip_max, compute_dtype=cfg.compute_dtype)
    recon = decode(params, h, frozen_decoder=cfg.original_behaviour,
                   compute_dtype=cfg.compute_dtype)

    mse = jnp.mean(jnp.square(recon - x))
    l1 = jnp.mean(jnp.sum(jnp.abs(h), axis=-1))
    # The usage EMA counts any positive activation, as the original's resampling rule does;
    # the logged L0 counts active features as everything else reports them.
    fired, active = firing_counts(jax.lax.stop_gradient(h))
    rows = x.shape[0]
    l0 = jnp.sum(active, dtype=jnp.float32) / rows

    usage_batch = fired.astype(jnp.float32) / rows
    decay = cfg.usage_ema_decay
    usage_ema_new = decay * usage_ema + (1.0 - decay) * usage_batch
    p = jax.lax.stop_gradient(jnp.clip(usage_ema_new, USAGE_CLIP, 1.0 - USAGE_CLIP))
    rho = cfg.target_usage
    kl_per_feature = bernoulli_kl(rho, p)
    if not cfg.original_behaviour:
        ell = soft_usage_logit(_estimate_rows(pre, cfg.usage_estimate_rows))
        kl_per_feature = kl_per_feature + (p - rho) * (ell - jax.lax.stop_gradient(ell))
    kl = jnp.mean(kl_per_feature)

    l1_c = l1_coefficient(step, cfg)
    usage_c = usage_coefficient(step, cfg)
    total = mse + l1_c * l1 + usage_c * kl
    aux = {
        "mse": mse,
        "l1": l1,
        "kl": kl,
        "l0": l0,
        "l1_coeff": l1_c,
        "usage_coeff": usage_c,
        "usage_batch": usage_batch,
        "usage_ema": usage_ema_new,
    }
    return total, aux
