"""Training recipes per architecture: initialisation, loss and the state a step carries.

``recipe_loss(params, x, usage_ema, extra, step, cfg) -> (total, aux)`` is a pure
function of (params, state, batch, config) for every architecture; relu_l1 is
:func:`sae_jax.losses.sae_loss` unchanged (``extra`` unused). The others:

- ``topk``, ``batchtopk``: ``total = mse + aux_coeff * auxk``.
- ``matryoshka``: BatchTopK features ``h``; the groups ``g_1..g_m``
  (``cfg.matryoshka_groups``) nest: prefix ``i`` is the first ``g_1 + .. + g_i``
  features, reconstructing ``x_i = h[:, :c_i] @ atoms[:c_i] + b_dec``;
  ``total = sum_i mse(x_i, x) + aux_coeff * auxk`` (the last prefix is the full SAE, its
  mse the one logged), so early features must reconstruct well on their own.
- ``jumprelu``: ``total = mse + l0_coeff(step) * L0`` with ``L0 = mean_rows(sum_j
  H(pre_j - theta_j))``; the step function ``H`` and the JumpReLU pass a pseudo-gradient
  to the thresholds through a rectangle kernel of width ``cfg.jumprelu_bandwidth``
  (straight-through, Rajamanoharan et al. 2024): ``d/dtheta JumpReLU = -(theta/eps)
  K((z - theta)/eps)``, ``d/dtheta H = -(1/eps) K((z - theta)/eps)``, ``K(u) = [|u| <
  1/2]``; the pre-activations get the JumpReLU's true gradient ``H(z - theta)`` and none
  from ``H``. ``l0_coeff`` rises linearly over ``cfg.l1_warmup_steps``.

AuxK (Gao et al. 2024), for the TopK family: a feature is dead once it has been active
(:mod:`sae_jax.activity`: above 0.01, the evaluation's test) on none of the last
``cfg.dead_after_rows`` training rows (``extra["rows_since_fired"]`` counts them); with
"above 0" instead, features firing only as dust counted as alive in training and dead in
the evaluation. Per row, the ``k_aux`` dead features with the largest pre-activations
reconstruct the main reconstruction's error ``e = x - recon`` (no gradient through
``e``) through their atoms, without bias: ``auxk = s * mean((e_hat - e)^2) / mean(e^2) *
mean(x^2)``, Gao's normalised error of the error, in the units of the main mse, scaled by
``s = min(n_dead / k_aux, 1)`` and zero without dead features. It gives dead features a
gradient towards what the live ones miss, which is why the TopK family does not resample.
Its work is skipped where it cannot change the value: without dead features nothing is
decoded, and with at most ``k_aux`` of them every row takes them all without a selection
(in a stack, only when no member needs it: :func:`any_member`).

By default the chosen pre-activations are used as they are (as SAELens does): a feature
that died negative on every row still gets a gradient, where a ReLU gives it none (on the
demo, ReLU'd AuxK left 44 of 256 BatchTopK features dead by step 2900, the default none).
``cfg.aux_relu`` ReLUs them (positive coefficients only), which revives features still
positive on some rows far better; the default can instead push such marginal features
further down (a planted case: 6% dead without AuxK, 28% with it). The tests plant both.

BatchTopK's inference threshold (Bussmann et al. 2024): each step's smallest selected
activation, averaged by an EMA (``cfg.threshold_decay``; the first step takes its value),
stored as the scalar parameter ``threshold`` (set by the step, never by the optimiser).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from sae_jax.activity import firing_counts
from sae_jax.architectures import (
    GLOBAL_THRESHOLD,
    TOPK_FAMILY,
    batch_topk_mask,
    jumprelu_threshold,
    log_threshold_init,
    topk_mask,
)
from sae_jax.config import SAETrainConfig
from sae_jax.losses import sae_loss
from sae_jax.model import SAEParams, decode, pre_activations, unit_rows
from sae_jax.precision import matmul

# Counts saturate here so that a long-dead feature's counter cannot overflow int32.
_ROWS_CAP = 2**30


# ---------------------------------------------------------------- initialisation and state

def init_params(params: SAEParams, cfg: SAETrainConfig) -> SAEParams:
    """The recipe's initial parameters from a fresh SAE's: relu_l1 unchanged; the others
    start with the encoder the transpose of the (unit) decoder, as all three papers do, and
    jumprelu with every threshold at ``cfg.jumprelu_init_threshold``."""
    if cfg.architecture == "relu_l1":
        return params
    out = {**params, "W_enc": unit_rows(params["W_dec"]).T.astype(params["W_enc"].dtype)}
    if cfg.architecture == "jumprelu":
        out["log_threshold"] = jnp.full_like(params["log_threshold"],
                                             log_threshold_init(cfg.jumprelu_init_threshold))
    return out


def init_extra(cfg: SAETrainConfig, d_sae: int) -> dict:
    """Training state beside params, optimiser state and usage EMA (empty for relu_l1)."""
    if cfg.architecture in TOPK_FAMILY:
        return {"rows_since_fired": jnp.zeros((d_sae,), jnp.int32)}
    return {}


def apply_state_updates(params: SAEParams, extra: dict, aux: dict,
                        cfg: SAETrainConfig) -> tuple[SAEParams, dict]:
    """After the optimiser update: the new inference threshold and dead-feature counters."""
    if cfg.architecture in GLOBAL_THRESHOLD:
        params = {**params, "threshold": aux["threshold"].astype(params["threshold"].dtype)}
    if cfg.architecture in TOPK_FAMILY:
        extra = {**extra, "rows_since_fired": aux["rows_since_fired"]}
    return params, extra


def metric_names(cfg: SAETrainConfig) -> tuple[str, ...]:
    """Scalars the recipe adds to the step's metrics (none for relu_l1)."""
    names = ()
    if cfg.architecture in TOPK_FAMILY:
        names += ("aux_loss", "dead_aux")
    if cfg.architecture in GLOBAL_THRESHOLD:
        names += ("threshold",)
    if cfg.architecture == "matryoshka":
        names += ("prefix_mse",)
    if cfg.architecture == "jumprelu":
        names += ("l0_coeff", "threshold_mean")
    return names


# ---------------------------------------------------------------- JumpReLU straight-through

def _rectangle(u):
    return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


def _sum_to(g, theta):
    """Sum ``g (..., F)`` over its leading axes to the shape of ``theta (F,)``."""
    return jnp.sum(g.reshape(-1, g.shape[-1]), axis=0).reshape(theta.shape)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu_ste(z, theta, bandwidth):
    """``z * H(z - theta)``; gradient ``H(z - theta)`` to ``z``, the kernel estimate to
    ``theta``."""
    return jnp.where(z > theta, z, 0.0)


def _jumprelu_fwd(z, theta, bandwidth):
    return jumprelu_ste(z, theta, bandwidth), (z, theta)


def _jumprelu_bwd(bandwidth, res, g):
    z, theta = res
    dz = g * (z > theta).astype(g.dtype)
    dtheta = -(theta / bandwidth) * _rectangle((z - theta) / bandwidth) * g
    return dz, _sum_to(dtheta, theta)


jumprelu_ste.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def step_ste(z, theta, bandwidth):
    """``H(z - theta)`` as floats; no gradient to ``z``, the kernel estimate to ``theta``."""
    return (z > theta).astype(z.dtype)


def _step_fwd(z, theta, bandwidth):
    return step_ste(z, theta, bandwidth), (z, theta)


def _step_bwd(bandwidth, res, g):
    z, theta = res
    dtheta = -(1.0 / bandwidth) * _rectangle((z - theta) / bandwidth) * g
    return jnp.zeros_like(z), _sum_to(dtheta, theta)


step_ste.defvjp(_step_fwd, _step_bwd)


def l0_coefficient(step, cfg: SAETrainConfig) -> jax.Array:
    """``l0_coeff``, linear from 0 over ``l1_warmup_steps`` (constant when 0)."""
    if cfg.l1_warmup_steps <= 0:
        return jnp.asarray(cfg.l0_coeff, jnp.float32)
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / cfg.l1_warmup_steps, 0.0, 1.0)
    return jnp.float32(cfg.l0_coeff) * frac


# ---------------------------------------------------------------- AuxK

def any_member(flag: jax.Array, members_axis: str | None) -> jax.Array:
    """``flag`` of one run; inside a stack vmapped with ``axis_name=members_axis``, whether
    it holds for any member: one unbatched value, so a ``lax.cond`` on it stays a branch
    instead of becoming a select that computes both sides for every member."""
    if members_axis is None:
        return flag
    return jax.lax.pmax(flag.astype(jnp.int32), members_axis) > 0


def auxk_loss(params: SAEParams, pre: jax.Array, x: jax.Array, recon: jax.Array,
              dead: jax.Array, k_aux: int, *, relu: bool = False,
              compute_dtype: str = "float32", members_axis: str | None = None) -> jax.Array:
    """The AuxK loss (module docstring). ``pre (B, F)``, ``x``/``recon (B, d_in)``,
    ``dead (F,)`` bool; ``relu``: ReLU the chosen pre-activations. ``members_axis``: the
    vmap axis name of a stack (:func:`any_member`)."""
    n_dead = jnp.sum(dead, dtype=jnp.int32)

    def select_per_row(pre):
        masked = jnp.where(dead[None, :], pre, -jnp.inf)
        return dead[None, :] & topk_mask(masked, k_aux)

    def every_dead(pre):
        return jnp.broadcast_to(dead[None, :], pre.shape)

    def value_of(pre):
        # With at most k_aux dead features every one of them is among a row's k_aux
        # largest, so the selection (32 counting passes over the batch) gives the same
        # mask as taking them all: it runs only when some member has more.
        chosen = jax.lax.cond(any_member(n_dead > k_aux, members_axis),
                              select_per_row, every_dead, pre)
        error = jax.lax.stop_gradient(x - recon)
        z = jnp.where(chosen, jax.nn.relu(pre) if relu else pre, 0.0)
        error_hat = matmul(z, unit_rows(params["W_dec"]), compute_dtype)
        scale = jnp.minimum(n_dead.astype(jnp.float32) / k_aux, 1.0)
        power = jax.lax.stop_gradient(jnp.mean(jnp.square(x)))
        error_power = jnp.maximum(jnp.mean(jnp.square(error)), 1e-12)
        return scale * jnp.mean(jnp.square(error_hat - error)) / error_power * power

    # Without dead features the loss is zero (value_of gives 0 too: its scale is 0), and
    # its decode is skipped unless some member of the stack has dead features.
    return jax.lax.cond(any_member(n_dead > 0, members_axis), value_of,
                        lambda pre: jnp.zeros((), pre.dtype), pre)


# ---------------------------------------------------------------- losses

def training_features(params: SAEParams, pre: jax.Array, cfg: SAETrainConfig) -> jax.Array:
    """The features the recipe trains with, ``(B, F)``."""
    arch = cfg.architecture
    if arch == "topk":
        h = jnp.where(topk_mask(pre, cfg.k), jax.nn.relu(pre), 0.0)
    elif arch in GLOBAL_THRESHOLD:
        h = jnp.where(batch_topk_mask(pre, cfg.k), jax.nn.relu(pre), 0.0)
    elif arch == "jumprelu":
        h = jumprelu_ste(pre, jumprelu_threshold(params), cfg.jumprelu_bandwidth)
    else:
        raise ValueError(f"no training features for architecture {arch!r}")
    return jnp.minimum(h, cfg.clip_max) if cfg.clip_all else h


def recipe_loss(params: SAEParams, x: jax.Array, usage_ema: jax.Array, extra: dict, step,
                cfg: SAETrainConfig, *, members_axis: str | None = None
                ) -> tuple[jax.Array, dict]:
    """Total loss and its parts for one batch ``x (B, d_in)``, for ``cfg.architecture``.

    ``aux`` holds what :func:`sae_jax.losses.sae_loss` returns (``kl``, ``l1_coeff`` and
    ``usage_coeff`` are 0 outside relu_l1) plus :func:`metric_names` and, for the TopK
    family, ``rows_since_fired (F,)``. ``members_axis``: the vmap axis name when the loss
    runs inside a stack (:func:`any_member`).
    """
    if cfg.architecture == "relu_l1":
        return sae_loss(params, x, usage_ema, step, cfg)
    d_in, d_sae = params["W_enc"].shape
    if x.ndim != 2 or x.shape[1] != d_in:
        raise ValueError(f"SAE loss expects activations of shape (batch, {d_in}), got {x.shape}")
    x = x.astype(jnp.float32)
    pre = pre_activations(params, x, compute_dtype=cfg.compute_dtype)
    h = training_features(params, pre, cfg)
    zero = jnp.zeros((), jnp.float32)
    aux = {"kl": zero, "l1_coeff": zero, "usage_coeff": zero}

    if cfg.architecture == "matryoshka":
        atoms = unit_rows(params["W_dec"])
        recon, start, prefix_mse = params["b_dec"], 0, zero
        for size in cfg.matryoshka_groups:
            part = matmul(h[:, start:start + size], atoms[start:start + size],
                          cfg.compute_dtype)
            recon = recon + part
            prefix_mse = prefix_mse + jnp.mean(jnp.square(recon - x))
            start += size
        mse = jnp.mean(jnp.square(recon - x))
        total = prefix_mse
        aux["prefix_mse"] = prefix_mse
    else:
        recon = decode(params, h, compute_dtype=cfg.compute_dtype)
        mse = jnp.mean(jnp.square(recon - x))
        total = mse

    if cfg.architecture == "jumprelu":
        theta = jumprelu_threshold(params)
        l0_ste = jnp.mean(jnp.sum(step_ste(pre, theta, cfg.jumprelu_bandwidth), axis=-1))
        coeff = l0_coefficient(step, cfg)
        total = total + coeff * l0_ste
        aux.update(l0_coeff=coeff, threshold_mean=jnp.mean(theta))

    h_seen = jax.lax.stop_gradient(h)
    fired_count, active_count = firing_counts(h_seen)
    rows_in_batch = x.shape[0]
    if cfg.architecture in TOPK_FAMILY:
        dead = extra["rows_since_fired"] >= cfg.dead_after_rows
        k_aux = cfg.aux_k(d_in, d_sae)
        aux_value = auxk_loss(params, pre, x, recon, dead, k_aux, relu=cfg.aux_relu,
                              compute_dtype=cfg.compute_dtype, members_axis=members_axis)
        total = total + cfg.aux_coeff * aux_value
        rows = jnp.minimum(extra["rows_since_fired"] + rows_in_batch, _ROWS_CAP)
        aux.update(aux_loss=aux_value, dead_aux=jnp.sum(dead, dtype=jnp.float32),
                   rows_since_fired=jnp.where(active_count > 0, 0, rows))

    if cfg.architecture in GLOBAL_THRESHOLD:
        smallest = jnp.min(jnp.where(h_seen > 0, h_seen, jnp.inf))
        old = params["threshold"].astype(jnp.float32)
        decay = cfg.threshold_decay
        updated = jnp.where(jnp.asarray(step) == 0, smallest,
                            decay * old + (1.0 - decay) * smallest)
        aux["threshold"] = jnp.where(jnp.isfinite(smallest), updated, old)  # nothing fired

    usage_batch = fired_count.astype(jnp.float32) / rows_in_batch
    decay = cfg.usage_ema_decay
    aux.update(
        mse=mse,
        l1=jnp.mean(jnp.sum(jnp.abs(h), axis=-1)),
        l0=jnp.sum(active_count, dtype=jnp.float32) / rows_in_batch,
        usage_batch=usage_batch,
        usage_ema=decay * usage_ema + (1.0 - decay) * usage_batch,
    )
    return total, aux
