"""``jumprelu`` (Rajamanoharan et al. 2024): ``h = pre * [pre > theta]`` with a learned
per-feature threshold ``theta = exp(params["log_threshold"])``, starting at
``cfg.jumprelu_init_threshold`` (and reset there when its feature is resampled).

``total = mse + l0_coeff(step) * L0`` with ``L0 = mean_rows(sum_j H(pre_j - theta_j))``;
the step function ``H`` and the JumpReLU pass a pseudo-gradient to the thresholds through
a rectangle kernel of width ``cfg.jumprelu_bandwidth`` (straight-through):
``d/dtheta JumpReLU = -(theta/eps) K((z - theta)/eps)``, ``d/dtheta H = -(1/eps)
K((z - theta)/eps)``, ``K(u) = [|u| < 1/2]``; the pre-activations get the JumpReLU's true
gradient ``H(z - theta)`` and none from ``H``. ``l0_coeff`` rises linearly over
``cfg.l1_warmup_steps``. Dead features are resampled, as relu_l1's are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp

from sae_jax.architectures.sparse_recipe import SparseRecipe, fold_into_encoder


def jumprelu_threshold(params) -> jax.Array:
    """``theta (F,)`` of a jumprelu SAE."""
    return jnp.exp(params["log_threshold"])


def log_threshold_init(value: float) -> float:
    if not value > 0:
        raise ValueError(f"the JumpReLU initial threshold must be > 0, got {value}")
    return math.log(value)


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


def l0_coefficient(step, cfg) -> jax.Array:
    """``l0_coeff``, linear from 0 over ``l1_warmup_steps`` (constant when 0)."""
    if cfg.l1_warmup_steps <= 0:
        return jnp.asarray(cfg.l0_coeff, jnp.float32)
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / cfg.l1_warmup_steps, 0.0, 1.0)
    return jnp.float32(cfg.l0_coeff) * frac


@dataclass(frozen=True)
class JumpReLU(SparseRecipe):
    name = "jumprelu"
    display_name = "JumpReLU"
    saelens_architecture = "jumprelu"
    extra_params = (("log_threshold", "features"),)
    penalty_setting = "l0_coeff"
    folds_decoder_norms = True

    def training_features(self, params, pre, cfg):
        return jumprelu_ste(pre, jumprelu_threshold(params), cfg.jumprelu_bandwidth)

    def inference_features(self, params, pre, spec):
        return jnp.where(pre > jumprelu_threshold(params), pre, 0.0)

    def recipe_settings_errors(self, cfg, check, d_sae):
        check("jumprelu_bandwidth", cfg.jumprelu_bandwidth > 0, "must be > 0")
        check("jumprelu_init_threshold", cfg.jumprelu_init_threshold > 0, "must be > 0")
        check("l0_coeff", cfg.l0_coeff >= 0, "must be >= 0")
        return []

    def init_params(self, params, cfg):
        out = super().init_params(params, cfg)
        out["log_threshold"] = jnp.full_like(params["log_threshold"],
                                             log_threshold_init(cfg.jumprelu_init_threshold))
        return out

    def fold_decoder_norms(self, params, norms):
        # Pre-activation j and its threshold both scaled by n_j: the same features fire,
        # and (pre_j n_j) times the unit row W_dec_j / n_j is the same output.
        out = fold_into_encoder(params, norms)
        return {**out, "log_threshold": params["log_threshold"] + jnp.log(norms)}

    def metric_names(self, cfg):
        return ("l0_coeff", "threshold_mean")

    def curve_metrics(self, cfg):
        return (("threshold_mean", "mean threshold"),)

    def penalty(self, total, params, pre, step, cfg, aux):
        theta = jumprelu_threshold(params)
        l0_ste = jnp.mean(jnp.sum(step_ste(pre, theta, cfg.jumprelu_bandwidth), axis=-1))
        coeff = l0_coefficient(step, cfg)
        total = total + coeff * l0_ste
        aux.update(l0_coeff=coeff, threshold_mean=jnp.mean(theta))
        return total

    def resampled_params(self, new_params, params, dead, cfg):
        t = params["log_threshold"]
        init = jnp.asarray(log_threshold_init(cfg.jumprelu_init_threshold), t.dtype)
        return {**new_params, "log_threshold": jnp.where(dead, init, t)}

    def export_tensors(self, params, d_sae):
        return {"threshold": jumprelu_threshold(params)}

    def import_params(self, tensors):
        return {"log_threshold": jnp.log(jnp.asarray(tensors["threshold"]))}


ARCHITECTURE = JumpReLU()
