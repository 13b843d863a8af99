"""``relu_l1``, the original's: ``h = clip(relu(pre), 0, clip_max)`` (always clipped),
trained with L1 and the usage penalty (:func:`sae_jax.losses.sae_loss`, unchanged), dead
features resampled, plain AdamW. SAELens's ``standard`` SAE, without the clip.

Everything it writes is as before the other architectures existed: its SAE config holds
the original's three fields, and a run's ``metrics.json`` names no architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from sae_jax.architectures.base import (
    Architecture,
    EncoderSpec,
    groups_not_applicable,
    resampling_dead_metric,
)
from sae_jax.losses import sae_loss
from sae_jax.model import SAEConfig


@dataclass(frozen=True)
class ReluL1(Architecture):
    name = "relu_l1"
    display_name = "ReLU + L1"
    saelens_architecture = "standard"
    masked_weight_decay = False
    penalty_setting = "l1_coeff"

    def settings_errors(self, cfg, check, d_sae):
        return groups_not_applicable(self.name, cfg)

    def sae_config(self, cfg, input_dim):
        return SAEConfig(input_dim, cfg.expansion_factor, cfg.clip_max)

    def check_sae_config(self, config):
        if not config.clip:
            raise ValueError("a relu_l1 SAE always clips its features (SAEConfig.clip)")

    def encoder_spec(self, config):
        return EncoderSpec(self.name, 0, config.clip_max)

    def check_encoder(self, spec):
        if spec.clip_max is None:
            raise ValueError("a relu_l1 encoder always clips: clip_max must be set")

    def activate(self, params, pre, spec):
        return jnp.clip(jax.nn.relu(pre), 0.0, spec.clip_max)

    def init_params(self, params, cfg):
        return params

    def init_extra(self, cfg, d_sae):
        return {}

    def loss(self, params, x, usage_ema, extra, step, cfg, *, members_axis=None):
        return sae_loss(params, x, usage_ema, step, cfg)

    def apply_state_updates(self, params, extra, aux, cfg):
        return params, extra

    def metric_names(self, cfg):
        return ()

    def resampled_params(self, new_params, params, dead, cfg):
        return new_params

    def curve_metrics(self, cfg):
        return (("l1", "L1 (sum of |h| per row)"), ("kl", "usage KL"))

    def dead_metric(self, cfg):
        return resampling_dead_metric(cfg)

    def summary_fields(self, config):
        return {}

    def export_tensors(self, params, d_sae):
        return {}

    def export_fields(self, config):
        return {}

    def import_params(self, tensors):
        return {}


ARCHITECTURE = ReluL1()
