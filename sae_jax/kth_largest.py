"""The exact k-th largest value by bisection, for the TopK family's masks.

``jax.lax.top_k`` sorts on the CPU, which made a TopK step several times slower than
a ReLU one and BatchTopK's global selection (``k x batch`` of ``batch x F`` values)
slower still. The k-th largest value alone is enough for a mask, and it can be found
without sorting: map each float32 to a uint32 key whose unsigned order is the float
order, then bisect on the key with counts (``count(key >= t) >= k``). 32 halvings of
the 2**32 keys pin it exactly, each one a compare-and-count pass over the data, so the
result equals ``top_k(x, k)[0][..., -1]`` bit for bit (NaN excepted).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_SIGN = 0x80000000
_KEY_BITS = 32


def ordered_keys(x: jax.Array) -> jax.Array:
    """uint32 keys of float32 ``x`` whose unsigned order is the float order
    (negative floats: all bits flipped; others: the sign bit set)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(_SIGN))


def float_of_key(key: jax.Array) -> jax.Array:
    """Inverse of :func:`ordered_keys`."""
    nonnegative = (key >> 31) == 1
    bits = jnp.where(nonnegative, key & jnp.uint32(_SIGN - 1), ~key)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _bisect(keys: jax.Array, k: int, count, shape) -> jax.Array:
    """Largest key ``t (shape)`` with ``count(keys, t) >= k``."""
    lo = jnp.zeros(shape, jnp.uint32)  # count(keys >= 0) = n >= k always holds
    hi = jnp.full(shape, 0xFFFFFFFF, jnp.uint32)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2 + (hi > lo).astype(jnp.uint32)  # upper middle, no overflow
        enough = count(keys, mid) >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - 1)

    lo, _ = jax.lax.fori_loop(0, _KEY_BITS, halve, (lo, hi))
    return lo


def kth_largest_per_row(x: jax.Array, k: int) -> jax.Array:
    """``(...,)``: the k-th largest of each row of ``x (..., F)``, ``1 <= k <= F``."""
    if not 1 <= k <= x.shape[-1]:
        raise ValueError(f"k must be in 1..{x.shape[-1]} (the row width), got {k}")
    keys = ordered_keys(x)
    key = _bisect(keys, k, lambda keys, t: jnp.sum(keys >= t[..., None], axis=-1),
                  x.shape[:-1])
    return float_of_key(key).astype(x.dtype)


def kth_largest(x: jax.Array, k: int) -> jax.Array:
    """Scalar: the k-th largest of all entries of ``x``, ``1 <= k <= x.size``."""
    if not 1 <= k <= x.size:
        raise ValueError(f"k must be in 1..{x.size} (the number of entries), got {k}")
    keys = ordered_keys(x).reshape(-1)
    key = _bisect(keys, k, lambda keys, t: jnp.sum(keys >= t), ())
    return float_of_key(key).astype(x.dtype)
