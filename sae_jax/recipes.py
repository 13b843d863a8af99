"""Training recipes: initialisation, loss and the state a step carries, for any
architecture (each architecture's own recipe is its plugin, :mod:`sae_jax.architectures`).

``recipe_loss(params, x, usage_ema, extra, step, cfg) -> (total, aux)`` is a pure
function of (params, state, batch, config) for every architecture; relu_l1 is
:func:`sae_jax.losses.sae_loss` unchanged (``extra`` unused); the others are
:mod:`sae_jax.architectures.sparse_recipe` with each one's terms (``topk``, ``batchtopk``,
``matryoshka``: AuxK, :mod:`sae_jax.architectures.auxk`; ``jumprelu``: an L0 penalty with
straight-through threshold gradients, :mod:`sae_jax.architectures.jumprelu`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sae_jax.architectures.auxk import any_member, auxk_loss  # noqa: F401  (the recipes' API)
from sae_jax.architectures.jumprelu import jumprelu_ste, l0_coefficient, step_ste  # noqa: F401
from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEParams


def init_params(params: SAEParams, cfg: SAETrainConfig) -> SAEParams:
    """The recipe's initial parameters from a fresh SAE's: relu_l1 unchanged; the others
    start with the encoder the transpose of the (unit) decoder, as all three papers do, and
    jumprelu with every threshold at ``cfg.jumprelu_init_threshold``; then the encoder
    scaled by ``cfg.encoder_init_scale``."""
    out = cfg.arch.init_params(params, cfg)
    if cfg.encoder_init_scale != 1.0:
        out = {**out, "W_enc": out["W_enc"] * cfg.encoder_init_scale}
    return out


def inference_params(params: SAEParams, cfg: SAETrainConfig) -> SAEParams:
    """The trained ``params`` as the SAE they encode with unit-norm decoder rows: unchanged,
    or with free-norm rows (``cfg.decoder_init_norm``) folded into the encoder."""
    if not cfg.decoder_init_norm:
        return params
    norms = jnp.linalg.norm(params["W_dec"].astype(jnp.float32), axis=1)
    return cfg.arch.fold_decoder_norms(params, jnp.maximum(norms, 1e-12))


def init_extra(cfg: SAETrainConfig, d_sae: int) -> dict:
    """Training state beside params, optimiser state and usage EMA (empty for relu_l1)."""
    return cfg.arch.init_extra(cfg, d_sae)


def apply_state_updates(params: SAEParams, extra: dict, aux: dict,
                        cfg: SAETrainConfig) -> tuple[SAEParams, dict]:
    """After the optimiser update: the new inference threshold and dead-feature counters."""
    return cfg.arch.apply_state_updates(params, extra, aux, cfg)


def metric_names(cfg: SAETrainConfig) -> tuple[str, ...]:
    """Scalars the recipe adds to the step's metrics (none for relu_l1)."""
    return cfg.arch.metric_names(cfg)


def training_features(params: SAEParams, pre: jax.Array, cfg: SAETrainConfig) -> jax.Array:
    """The features a recipe other than relu_l1 trains with, ``(B, F)``."""
    h = cfg.arch.training_features(params, pre, cfg)
    return jnp.minimum(h, cfg.clip_max) if cfg.clip_all else h


def recipe_loss(params: SAEParams, x: jax.Array, usage_ema: jax.Array, extra: dict, step,
                cfg: SAETrainConfig, *, members_axis: str | None = None
                ) -> tuple[jax.Array, dict]:
    """Total loss and its parts for one batch ``x (B, d_in)``, for ``cfg.architecture``.

    ``aux`` holds what :func:`sae_jax.losses.sae_loss` returns (``kl``, ``l1_coeff`` and
    ``usage_coeff`` are 0 outside relu_l1) plus :func:`metric_names` and, for the
    architectures with AuxK, ``rows_since_fired (F,)``. ``members_axis``: the vmap axis
    name when the loss runs inside a stack (:func:`any_member`).
    """
    return cfg.arch.loss(params, x, usage_ema, extra, step, cfg, members_axis=members_axis)
