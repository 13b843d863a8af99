"""The TopK family's feature selections, on the exact k-th largest value
(:mod:`sae_jax.kth_largest`)."""

from __future__ import annotations

import jax

from sae_jax.kth_largest import kth_largest, kth_largest_per_row


def topk_mask(pre: jax.Array, k: int) -> jax.Array:
    """Per row, True at the ``k`` largest entries of ``pre (..., F)`` (ties at the k-th
    value all kept, which real-valued pre-activations almost never have)."""
    return pre >= kth_largest_per_row(pre, k)[..., None]


def batch_topk_mask(pre: jax.Array, k: int) -> jax.Array:
    """True at the ``k x rows`` largest positive entries of ``pre (rows, F)`` over the
    whole batch (fewer when fewer are positive)."""
    flat = jax.nn.relu(pre).reshape(-1)
    n = min(k * pre.shape[0], flat.shape[0])
    kth = kth_largest(flat, n)
    return (pre >= kth) & (pre > 0)
