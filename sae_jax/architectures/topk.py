"""``topk`` (Gao et al. 2024): per row, the ``k`` largest pre-activations, ReLU'd; the rest
zero. Training and inference agree. ``total = mse + aux_coeff * auxk`` (:mod:`.auxk`).
SAELens has the same architecture (``topk`` with ``k``)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from sae_jax.architectures.auxk import AuxKRecipe
from sae_jax.architectures.base import EncoderSpec
from sae_jax.architectures.masks import topk_mask


@dataclass(frozen=True)
class TopK(AuxKRecipe):
    name = "topk"
    display_name = "TopK"
    saelens_architecture = "topk"

    def training_features(self, params, pre, cfg):
        return jnp.where(topk_mask(pre, cfg.k), jax.nn.relu(pre), 0.0)

    def inference_features(self, params, pre, spec):
        return jnp.where(topk_mask(pre, spec.k), jax.nn.relu(pre), 0.0)

    def encoder_spec(self, config):
        return EncoderSpec(self.name, config.k, config.clip_max if config.clip else None)

    def check_encoder(self, spec):
        if spec.k <= 0:
            raise ValueError(f"a topk encoder needs k >= 1, got k={spec.k}")

    def export_fields(self, config):
        return {"k": int(config.k), "rescale_acts_by_decoder_norm": False}


ARCHITECTURE = TopK()
