"""Optax transforms that keep the SAE dictionary on the unit sphere, and the optimiser.

The params pytree is the dict of ``SparseAutoencoder.params()``: ``W_enc``
(d_in, d_sae), ``b_enc`` (d_sae,), ``W_dec`` (d_sae, d_in) whose rows are the
atoms, ``b_dec`` (d_in,).

``make_optimizer`` chains, in order: global-norm clipping, removal of the
decoder-gradient component parallel to each atom (a radial step would only be
undone by the projection and would disturb Adam's moments), AdamW with the
cosine learning-rate schedule, and the projection of every atom back onto the
unit sphere (last, so that ``params + updates`` is exactly unit-norm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sae_jax.architectures import THRESHOLD_PARAMS
from sae_jax.config import SAETrainConfig
from sae_jax.model import unit_rows
from sae_jax.schedules import learning_rate_schedule

DECODER_KEY = "W_dec"


def _decoder(tree, name: str, key: str) -> jax.Array:
    if tree is None:
        raise ValueError(f"{name} needs the current params: call update(updates, state, params)")
    if key not in tree:
        raise KeyError(f"{name}: params have no decoder entry {key!r} (keys: {sorted(tree)})")
    return tree[key]


def remove_parallel_decoder_grad(decoder_key: str = DECODER_KEY) -> optax.GradientTransformation:
    """For each decoder row (atom) ``a``, drop from its gradient ``g`` the part along
    ``a / |a|``: ``g - (g . u) u`` with ``u`` the unit atom. Other leaves pass through."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        w = _decoder(params, "remove_parallel_decoder_grad", decoder_key)
        g = updates[decoder_key]
        u = unit_rows(w).astype(g.dtype)
        g = g - jnp.sum(g * u, axis=-1, keepdims=True) * u
        return {**updates, decoder_key: g}, state

    return optax.GradientTransformation(init_fn, update_fn)


def project_decoder_to_unit_norm(decoder_key: str = DECODER_KEY) -> optax.GradientTransformation:
    """Rewrite the decoder update so that ``params + updates`` has unit-norm rows:
    ``u = unit_rows(W + u) - W``. Must come last in a chain. Other leaves pass through."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        w = _decoder(params, "project_decoder_to_unit_norm", decoder_key)
        u = updates[decoder_key]
        return {**updates, decoder_key: unit_rows(w + u) - w}, state

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(cfg: SAETrainConfig, total_steps: int) -> optax.GradientTransformation:
    """clip(global norm) -> remove parallel decoder grad -> AdamW(cosine lr) -> unit-norm
    projection. ``total_steps`` is the number of SAE updates the lr schedule spans."""
    if not cfg.grad_clip > 0:
        raise ValueError(f"grad_clip must be positive, got {cfg.grad_clip}")
    # Thresholds take no weight decay (a decayed BatchTopK threshold would drift between the
    # steps that set it); relu_l1 has none and keeps its unmasked AdamW.
    mask = _decayed if cfg.arch.masked_weight_decay else None
    clip = optax.clip_by_global_norm(cfg.grad_clip)
    adamw = optax.adamw(learning_rate_schedule(cfg, total_steps), weight_decay=cfg.weight_decay,
                        mask=mask)
    if cfg.decoder_init_norm:  # free-norm rows: no projection, nothing to take out of it
        return optax.chain(clip, adamw)
    return optax.chain(clip, remove_parallel_decoder_grad(), adamw,
                       project_decoder_to_unit_norm())


def _decayed(params: dict) -> dict:
    return {k: jax.tree.map(lambda _, keep=k not in THRESHOLD_PARAMS: keep, v)
            for k, v in params.items()}
