"""``batchtopk`` (Bussmann et al. 2024): in training, the ``k x batch`` largest
pre-activations of the whole batch (ReLU'd); at inference, a JumpReLU with one global
threshold ``params["threshold"]``, so a row's encoding does not depend on the rest of its
batch. ``total = mse + aux_coeff * auxk`` (:mod:`.auxk`).

The inference threshold: each step's smallest selected activation, averaged by an EMA
(``cfg.threshold_decay``; the first step takes its value), stored as the scalar parameter
``threshold`` (set by the step, never by the optimiser). SAELens saves such an SAE as a
``jumprelu`` with every feature's threshold the global one.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sae_jax.architectures.auxk import AuxKRecipe
from sae_jax.architectures.masks import batch_topk_mask


@dataclass(frozen=True)
class BatchTopK(AuxKRecipe):
    name = "batchtopk"
    display_name = "BatchTopK"
    saelens_architecture = "jumprelu"
    saelens_training_architecture = "batchtopk"
    extra_params = (("threshold", "scalar"),)

    def training_features(self, params, pre, cfg):
        return jnp.where(batch_topk_mask(pre, cfg.k), jax.nn.relu(pre), 0.0)

    def inference_features(self, params, pre, spec):
        return jnp.where(pre > params["threshold"], jax.nn.relu(pre), 0.0)

    def recipe_settings_errors(self, cfg, check, d_sae):
        errors = super().recipe_settings_errors(cfg, check, d_sae)
        check("threshold_decay", 0 < cfg.threshold_decay < 1, "must be in (0, 1)")
        return errors

    def metric_names(self, cfg):
        return super().metric_names(cfg) + ("threshold",)

    def curve_metrics(self, cfg):
        return super().curve_metrics(cfg) + (("threshold", "inference threshold"),)

    def upkeep(self, total, params, seen, extra, step, cfg, aux, *, members_axis):
        total = super().upkeep(total, params, seen, extra, step, cfg, aux,
                               members_axis=members_axis)
        smallest = jnp.min(jnp.where(seen.h > 0, seen.h, jnp.inf))
        old = params["threshold"].astype(jnp.float32)
        decay = cfg.threshold_decay
        updated = jnp.where(jnp.asarray(step) == 0, smallest,
                            decay * old + (1.0 - decay) * smallest)
        aux["threshold"] = jnp.where(jnp.isfinite(smallest), updated, old)  # nothing fired
        return total

    def apply_state_updates(self, params, extra, aux, cfg):
        params = {**params, "threshold": aux["threshold"].astype(params["threshold"].dtype)}
        return super().apply_state_updates(params, extra, aux, cfg)

    def export_tensors(self, params, d_sae):
        return {"threshold": jnp.full((d_sae,), params["threshold"])}

    def import_params(self, tensors):
        thresholds = tensors["threshold"]
        if not np.all(thresholds == thresholds[0]):
            raise ValueError(f"a {self.name} export has one threshold for every feature; "
                             "these differ")
        return {"threshold": jnp.asarray(thresholds[0])}


ARCHITECTURE = BatchTopK()
