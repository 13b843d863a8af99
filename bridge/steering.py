"""Steering the primary model through SAE features (docs/original.md §6).

The SAE reads the pooled vector that feeds the primary model's output layer.
Steering encodes that vector, overwrites one feature and decodes it again; the
primary's ``head`` then turns the edited vector into logits. Because the
primary exposes ``pooled`` and ``head`` separately, no hooks are needed: every
mode is a pure function of (primary, sae, batch).

Shapes: ``x: Float[Array, "... d_in"]``; ``feature``: an int (or a traced int
scalar); ``value``: a float scalar or ``Float[Array, "..."]`` matching the rows
of ``x``.
"""

from __future__ import annotations

import enum
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from primary.model import SetCompletionModel
from sae_jax.model import SAEParams, SparseAutoencoder, decode, encode, unit_rows


def check_feature_index(feature, num_features: int, *, where: str = "edit_feature") -> None:
    """Raise IndexError for a concrete index outside ``[0, num_features)``.

    A traced index (inside jit/vmap) has no value to check and passes through;
    such an index outside the range selects no feature, so the edit is a no-op.
    """
    if isinstance(feature, jax.core.Tracer):
        return
    arr = np.asarray(feature)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{where}: feature index must be an integer, got {feature!r}")
    bad = (arr < 0) | (arr >= num_features)
    if bad.any():
        first = int(arr[bad].reshape(-1)[0])
        raise IndexError(f"{where}: feature {first} is out of range; the SAE has "
                         f"{num_features} features (valid 0..{num_features - 1})")


def edit_feature_params(params: SAEParams, clip_max, x: jax.Array, feature, value,
                        keep_error: bool = False) -> jax.Array:
    """Pure core of :func:`edit_feature` over a params dict.

    ``clip_max``: a float (the relu_l1 encoder clipped there), or the SAE's encoder spec
    (an SAEConfig or ``sae_jax.architectures.EncoderSpec``; hashable, static under jit).
    Encode ``x`` (``(..., d_in)``), set post-ReLU feature ``feature`` to ``value``
    in every row, decode. The value is used as given (not clipped), as in the
    original. With ``keep_error`` the reconstruction error is kept:
    ``x + decode(h') - decode(h)``, computed as ``x + (value - h_f) * atom_f`` since
    the decoder is linear, so an edit that changes nothing returns ``x`` exactly.
    """
    num_features = params["W_enc"].shape[-1]
    check_feature_index(feature, num_features)
    _, h = encode(params, x, clip_max)
    # One-hot selection rather than h[..., feature]: works for traced indices under vmap.
    select = jax.nn.one_hot(feature, num_features, dtype=h.dtype)
    value = jnp.asarray(value, h.dtype)[..., None]
    if keep_error:
        current = jnp.sum(h * select, axis=-1, keepdims=True)
        atom = select @ unit_rows(params["W_dec"])
        return x.astype(h.dtype) + (value - current) * atom
    return decode(params, h * (1.0 - select) + value * select)


def edit_feature(sae: SparseAutoencoder | SAEParams, x: jax.Array, feature, value, *,
                 keep_error: bool = False, clip_max=None) -> jax.Array:
    """Encode ``x``, set feature ``feature`` to ``value`` for every row, decode.

    ``sae`` is a :class:`SparseAutoencoder` (any architecture) or its params dict (then
    ``clip_max`` is required: a relu_l1 clip value, or the SAE's config or encoder spec).
    Pure: works under ``jax.jit``, ``jax.vmap`` (sweep features or values in one call) and
    ``jax.grad``. A concrete out-of-range ``feature``
    raises IndexError; a traced one cannot be checked (it edits nothing).

    Returns ``Float[Array, "... d_in"]``.
    """
    if isinstance(sae, SparseAutoencoder):
        params, clip = sae.params(), sae.config.encoder
    else:
        if clip_max is None:
            raise ValueError("edit_feature: clip_max is required when sae is a params dict")
        params, clip = sae, clip_max
    return edit_feature_params(params, clip, x, feature, value, keep_error)


class HookMode(enum.Enum):
    """What happens to the pooled vector before the output layer."""

    BYPASS = "bypass"  # no SAE at all
    NO_CHANGE = "no_change"  # probe: record SAE activations, logits unchanged
    RECON = "recon"  # the output layer sees decode(encode(x))
    EDIT = "edit"  # the output layer sees the vector with one feature overwritten


class HookResult(NamedTuple):
    """``logits (B, V)``, ``pooled (B, d_in)`` (the unedited pooled vector), and the SAE
    activations of that pooled vector, ``sae_pre``/``sae_post (B, d_sae)`` (None in BYPASS)."""

    logits: jax.Array
    pooled: jax.Array
    sae_pre: jax.Array | None
    sae_post: jax.Array | None


@partial(jax.jit, static_argnames=("graphdef",))
def _pooled_step(graphdef, state, tokens, weapons, key_padding_mask):
    return nnx.merge(graphdef, state).pooled(tokens, weapons, key_padding_mask)


# Kept apart from the (large) pooled computation so that every mode reuses one compiled
# primary forward and only this small function is compiled per mode.
@partial(jax.jit, static_argnames=("graphdef", "clip_max", "mode", "keep_error"))
def _head_step(graphdef, state, sae_params, pooled, feature, value, *, clip_max, mode,
               keep_error):
    primary = nnx.merge(graphdef, state)
    if mode == HookMode.BYPASS:
        return HookResult(primary.head(pooled), pooled, None, None)
    pre, post = encode(sae_params, pooled, clip_max)
    if mode == HookMode.NO_CHANGE:
        onward = pooled
    elif mode == HookMode.RECON:
        onward = decode(sae_params, post)
    else:
        onward = edit_feature_params(sae_params, clip_max, pooled, feature, value, keep_error)
    return HookResult(primary.head(onward), pooled, pre, post)


def hooked_forward(primary: SetCompletionModel, sae: SparseAutoencoder | None, tokens, weapons,
                   key_padding_mask, mode: HookMode, *, feature=None, value=None,
                   keep_error: bool = False) -> HookResult:
    """Run the primary model with the SAE spliced in before its output layer.

    ``tokens (B, L)`` int, ``weapons (B, 1)`` int, ``key_padding_mask (B, L)`` bool
    (True = padding). ``mode`` is a :class:`HookMode`; EDIT needs ``feature`` and
    ``value`` (see :func:`edit_feature`; ``keep_error`` applies to EDIT only).
    """
    mode = HookMode(mode)
    if mode != HookMode.BYPASS and sae is None:
        raise ValueError(f"hooked_forward: mode {mode.name} needs an SAE, got None")
    if mode == HookMode.EDIT:
        if feature is None or value is None:
            raise ValueError("hooked_forward: EDIT mode needs both feature and value, got "
                             f"feature={feature!r}, value={value!r}")
        check_feature_index(feature, sae.hidden_dim, where="hooked_forward")
    else:
        feature, value = 0, 0.0  # unused; fixed so the jitted step is not retraced
    if sae is not None and sae.config.input_dim != primary.config.hidden_dim:
        raise ValueError(f"hooked_forward: SAE input_dim {sae.config.input_dim} does not match "
                         f"the primary model's hidden_dim {primary.config.hidden_dim}")
    graphdef, state = nnx.split(primary)
    sae_params = sae.params() if sae is not None else None
    clip_max = sae.config.encoder if sae is not None else 0.0
    pooled = _pooled_step(graphdef, state, jnp.asarray(tokens), jnp.asarray(weapons),
                          jnp.asarray(key_padding_mask, bool))
    return _head_step(graphdef, state, sae_params, pooled, jnp.asarray(feature, jnp.int32),
                      jnp.asarray(value, jnp.float32), clip_max=clip_max, mode=mode,
                      keep_error=bool(keep_error))

__all__ = ["HookMode", "HookResult", "check_feature_index", "edit_feature", "edit_feature_params",
           "hooked_forward"]
