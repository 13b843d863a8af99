"""The training recipe shared by the architectures after the original (topk, batchtopk,
matryoshka, jumprelu): the features are chosen in training as at inference (or by their
own training-time rule), the loss is the reconstruction error plus each architecture's
own terms, and none has the original's L1 or usage penalty.

``total = mse + own terms``: :meth:`SparseRecipe.reconstruction` (the mse, or
matryoshka's prefix sum), :meth:`SparseRecipe.penalty` (jumprelu's L0) and
:meth:`SparseRecipe.upkeep` (AuxK, the inference threshold), in that order. The
encoder starts as the transpose of the (unit) decoder, as all three papers do.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sae_jax.activity import firing_counts
from sae_jax.architectures.base import (
    Architecture,
    EncoderSpec,
    clipped,
    groups_not_applicable,
    resampling_dead_metric,
)
from sae_jax.model import SAEConfig, decode, pre_activations, unit_rows


class Seen(NamedTuple):
    """What a recipe's upkeep reads of one batch (no gradient through ``h`` or
    ``active_count``)."""

    x: jax.Array  # (B, d_in) float32
    pre: jax.Array  # (B, F) pre-activations
    recon: jax.Array  # (B, d_in) the full reconstruction
    h: jax.Array  # (B, F) training features, gradient stopped
    active_count: jax.Array  # (F,) rows on which each feature is active


@dataclass(frozen=True)
class SparseRecipe(Architecture):
    """The shared recipe (module docstring); subclasses give the features and terms."""

    @abc.abstractmethod
    def training_features(self, params, pre: jax.Array, cfg) -> jax.Array:
        """The features the recipe trains with, ``(B, F)``, before the optional clip."""

    @abc.abstractmethod
    def inference_features(self, params, pre: jax.Array, spec: EncoderSpec) -> jax.Array:
        """The inference features before the optional clip."""

    def recipe_settings_errors(self, cfg, check, d_sae: int | None) -> list[str]:
        return []

    def groups_errors(self, cfg, d_sae: int | None) -> list[str]:
        return groups_not_applicable(self.name, cfg)

    # ------------------------------------------------------------ settings

    def settings_errors(self, cfg, check, d_sae):
        errors = []
        if cfg.original_behaviour:
            errors.append(f"--original_behaviour reproduces the original's relu_l1 recipe; "
                          f"--architecture is {self.name!r}")
        return errors + self.recipe_settings_errors(cfg, check, d_sae) + \
            self.groups_errors(cfg, d_sae)

    def sae_k(self, cfg) -> int:
        """The SAEConfig's ``k`` for ``cfg``."""
        return 0

    def sae_config(self, cfg, input_dim):
        return SAEConfig(input_dim, cfg.expansion_factor, cfg.clip_max, self.name,
                         self.sae_k(cfg), clip=cfg.clip_all)

    def check_sae_config(self, config):
        pass

    def encoder_spec(self, config):
        return EncoderSpec(self.name, 0, config.clip_max if config.clip else None)

    def check_encoder(self, spec):
        pass

    def activate(self, params, pre, spec):
        return clipped(self.inference_features(params, pre, spec), spec)

    # ------------------------------------------------------------ training

    def init_params(self, params, cfg):
        rows = unit_rows(params["W_dec"])
        if cfg.decoder_init_norm:  # free-norm rows start at that norm, the encoder tied
            rows = rows * cfg.decoder_init_norm
            params = {**params, "W_dec": rows}
        return {**params, "W_enc": rows.T.astype(params["W_enc"].dtype)}

    def init_extra(self, cfg, d_sae):
        return {}

    def apply_state_updates(self, params, extra, aux, cfg):
        return params, extra

    def metric_names(self, cfg):
        return ()

    def resampled_params(self, new_params, params, dead, cfg):
        return new_params

    def curve_metrics(self, cfg):
        return ()

    def dead_metric(self, cfg):
        return resampling_dead_metric(cfg)

    def reconstruction(self, params, h, x, cfg, aux) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(recon, mse, total)``: the reconstruction, its mse and the loss so far."""
        recon = decode(params, h, compute_dtype=cfg.compute_dtype,
                       unit_atoms=not cfg.decoder_init_norm)
        mse = jnp.mean(jnp.square(recon - x))
        return recon, mse, mse

    def penalty(self, total, params, pre, step, cfg, aux) -> jax.Array:
        """``total`` with the recipe's penalty on the pre-activations added."""
        return total

    def upkeep(self, total, params, seen: Seen, extra, step, cfg, aux, *,
               members_axis) -> jax.Array:
        """``total`` with terms on what the batch fired added; state for
        :meth:`apply_state_updates` goes into ``aux``."""
        return total

    def loss(self, params, x, usage_ema, extra, step, cfg, *, members_axis=None):
        d_in, d_sae = params["W_enc"].shape
        if x.ndim != 2 or x.shape[1] != d_in:
            raise ValueError(f"SAE loss expects activations of shape (batch, {d_in}), "
                             f"got {x.shape}")
        x = x.astype(jnp.float32)
        pre = pre_activations(params, x, compute_dtype=cfg.compute_dtype)
        h = self.training_features(params, pre, cfg)
        h = jnp.minimum(h, cfg.clip_max) if cfg.clip_all else h
        zero = jnp.zeros((), jnp.float32)
        aux = {"kl": zero, "l1_coeff": zero, "usage_coeff": zero}
        recon, mse, total = self.reconstruction(params, h, x, cfg, aux)
        total = self.penalty(total, params, pre, step, cfg, aux)

        h_seen = jax.lax.stop_gradient(h)
        fired_count, active_count = firing_counts(h_seen)
        rows_in_batch = x.shape[0]
        total = self.upkeep(total, params, Seen(x, pre, recon, h_seen, active_count), extra,
                            step, cfg, aux, members_axis=members_axis)

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

    # ------------------------------------------------------------ records and export

    def summary_fields(self, config):
        return {"architecture": config.architecture, "k": config.k}

    def export_tensors(self, params, d_sae):
        return {}

    def export_fields(self, config):
        return {}

    def import_params(self, tensors):
        return {}


def fold_into_encoder(params, norms):
    """The decoder rows divided by their ``norms (F,)``, and each feature's encoder column
    and bias multiplied by it: every pre-activation scaled by its row's norm."""
    return {**params, "W_dec": params["W_dec"] / norms[:, None],
            "W_enc": params["W_enc"] * norms[None, :], "b_enc": params["b_enc"] * norms}
