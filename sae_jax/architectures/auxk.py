"""AuxK (Gao et al. 2024) and the recipe of the architectures that select ``k`` features
(topk, batchtopk, matryoshka): their ``k`` settings, AuxK and its dead-feature counter.

A feature is dead once it has been active (:mod:`sae_jax.activity`: above 0.01, the
evaluation's test) on none of the last ``cfg.dead_after_rows`` training rows
(``extra["rows_since_fired"]`` counts them); with "above 0" instead, features firing only
as dust counted as alive in training and dead in the evaluation. Per row, the ``k_aux``
dead features with the largest pre-activations reconstruct the main reconstruction's error
``e = x - recon`` (no gradient through ``e``) through their atoms, without bias: ``auxk =
s * mean((e_hat - e)^2) / mean(e^2) * mean(x^2)``, Gao's normalised error of the error, in
the units of the main mse, scaled by ``s = min(n_dead / k_aux, 1)`` and zero without dead
features; ``total += aux_coeff * auxk``. It gives dead features a gradient towards what the
live ones miss, which is why these architectures do not resample. Its work is skipped
where it cannot change the value: without dead features nothing is decoded, and with at
most ``k_aux`` of them every row takes them all without a selection (in a stack, only when
no member needs it: :func:`any_member`).

By default the chosen pre-activations are used as they are (as SAELens does): a feature
that died negative on every row still gets a gradient, where a ReLU gives it none (on the
demo, ReLU'd AuxK left 44 of 256 BatchTopK features dead by step 2900, the default none).
``cfg.aux_relu`` ReLUs them (positive coefficients only), which revives features still
positive on some rows far better; the default can instead push such marginal features
further down (a planted case: 6% dead without AuxK, 28% with it). The tests plant both.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from sae_jax.activity import ACTIVE_THRESHOLD
from sae_jax.architectures.masks import topk_mask
from sae_jax.architectures.sparse_recipe import Seen, SparseRecipe
from sae_jax.model import SAEParams, unit_rows
from sae_jax.precision import matmul

# Counts saturate here so that a long-dead feature's counter cannot overflow int32.
ROWS_CAP = 2**30


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


@dataclass(frozen=True)
class AuxKRecipe(SparseRecipe):
    """A recipe that selects ``k`` features (per row or on average) and revives dead ones
    with AuxK instead of resampling."""

    uses_auxk = True

    def recipe_settings_errors(self, cfg, check, d_sae):
        errors = []
        arch = self.name
        check("k", cfg.k >= 1, f"must be >= 1 for --architecture={arch}")
        if d_sae is not None and cfg.k >= d_sae:
            errors.append(f"--k {cfg.k} must be smaller than the number of features "
                          f"{d_sae} (--architecture={arch})")
        check("k_aux", cfg.k_aux >= 0, "must be >= 0 (0: half the input size)")
        check("aux_coeff", cfg.aux_coeff >= 0, "must be >= 0")
        check("dead_after_rows", cfg.dead_after_rows > 0, "must be positive")
        if cfg.resample_steps:
            errors.append(f"--resample_steps {','.join(map(str, cfg.resample_steps))}: "
                          f"the AuxK loss replaces resampling for --architecture={arch}; "
                          "pass --resample_steps= (empty)")
        return errors

    def required_settings(self, d_sae):
        return {"resample_steps": ()}

    def sae_k(self, cfg):
        return cfg.k

    def check_sae_config(self, config):
        if not 0 < config.k < config.hidden_dim:
            raise ValueError(f"SAE architecture {self.name} needs 0 < k < the number "
                             f"of features {config.hidden_dim}, got k={config.k}")

    def init_extra(self, cfg, d_sae):
        return {"rows_since_fired": jnp.zeros((d_sae,), jnp.int32)}

    def apply_state_updates(self, params, extra, aux, cfg):
        return params, {**extra, "rows_since_fired": aux["rows_since_fired"]}

    def metric_names(self, cfg):
        return ("aux_loss", "dead_aux")

    def curve_metrics(self, cfg):
        return (("aux_loss", "AuxK loss"),)

    def dead_metric(self, cfg):
        return ("dead_aux", f"features not active (h > {ACTIVE_THRESHOLD:g}) on the last\n"
                            f"{cfg.dead_after_rows:,} training rows (AuxK's test)")

    def upkeep(self, total, params, seen: Seen, extra, step, cfg, aux, *, members_axis):
        d_in, d_sae = params["W_enc"].shape
        dead = extra["rows_since_fired"] >= cfg.dead_after_rows
        k_aux = cfg.aux_k(d_in, d_sae)
        aux_value = auxk_loss(params, seen.pre, seen.x, seen.recon, dead, k_aux,
                              relu=cfg.aux_relu, compute_dtype=cfg.compute_dtype,
                              members_axis=members_axis)
        total = total + cfg.aux_coeff * aux_value
        rows = jnp.minimum(extra["rows_since_fired"] + seen.x.shape[0], ROWS_CAP)
        aux.update(aux_loss=aux_value, dead_aux=jnp.sum(dead, dtype=jnp.float32),
                   rows_since_fired=jnp.where(seen.active_count > 0, 0, rows))
        return total
