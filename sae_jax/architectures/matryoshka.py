"""``matryoshka`` (Bussmann et al. 2025): BatchTopK (:mod:`.batchtopk`) with nested prefix
losses; it encodes and exports like ``batchtopk``.

With the BatchTopK features ``h`` and the groups ``g_1..g_m`` (``cfg.matryoshka_groups``),
prefix ``i`` is the first ``g_1 + .. + g_i`` features, reconstructing ``x_i = h[:, :c_i] @
atoms[:c_i] + b_dec``; ``total = sum_i mse(x_i, x) + aux_coeff * auxk`` (the last prefix
is the full SAE, its mse the one logged), so early features must reconstruct well on
their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from sae_jax.architectures.batchtopk import BatchTopK
from sae_jax.model import unit_rows
from sae_jax.precision import matmul


def nested_groups(d_sae: int, levels: int = 4) -> tuple[int, ...]:
    """Group sizes for ``d_sae`` features that double from prefix to prefix: each group
    is the back half of the features the earlier groups leave (16 -> 2, 2, 4, 8)."""
    groups, rest = [], d_sae
    for _ in range(levels - 1):
        if rest < 2:
            break
        half = rest // 2
        groups.append(rest - half)
        rest = half
    return (rest, *reversed(groups))


@dataclass(frozen=True)
class Matryoshka(BatchTopK):
    name = "matryoshka"
    display_name = "Matryoshka BatchTopK"
    saelens_training_architecture = "matryoshka_batchtopk"

    def required_settings(self, d_sae):
        return {**super().required_settings(d_sae), "matryoshka_groups": nested_groups(d_sae)}

    def groups_errors(self, cfg, d_sae):
        groups = cfg.matryoshka_groups
        if not groups or any(g <= 0 for g in groups):
            return [f"--matryoshka_groups must be positive group sizes summing to the "
                    f"number of features, got {groups}"]
        if d_sae is not None and sum(groups) != d_sae:
            return [f"--matryoshka_groups {','.join(map(str, groups))} sum to "
                    f"{sum(groups)}, not to the number of features {d_sae}"]
        return []

    def metric_names(self, cfg):
        return super().metric_names(cfg) + ("prefix_mse",)

    def curve_metrics(self, cfg):
        return super().curve_metrics(cfg) + (("prefix_mse", "sum of the nested prefixes' MSE"),)

    def reconstruction(self, params, h, x, cfg, aux):
        atoms = unit_rows(params["W_dec"])
        recon, start, prefix_mse = params["b_dec"], 0, jnp.zeros((), jnp.float32)
        for size in cfg.matryoshka_groups:
            part = matmul(h[:, start:start + size], atoms[start:start + size],
                          cfg.compute_dtype)
            recon = recon + part
            prefix_mse = prefix_mse + jnp.mean(jnp.square(recon - x))
            start += size
        mse = jnp.mean(jnp.square(recon - x))
        aux["prefix_mse"] = prefix_mse
        return recon, mse, prefix_mse


ARCHITECTURE = Matryoshka()
