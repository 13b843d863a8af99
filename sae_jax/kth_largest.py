"""The exact k-th largest value by bisection, for the TopK family's masks.

``jax.lax.top_k`` sorts on the CPU, which made a TopK step several times slower than
a ReLU one and BatchTopK's global selection (``k x batch`` of ``batch x F`` values)
slower still. The k-th largest value alone is enough for a mask, and it can be found
without sorting: map each float32 to a uint32 key whose unsigned order is the float
order, then bisect on the key with counts (``count(key >= t) >= k``). 32 halvings of
the 2**32 keys pin it exactly, each one a compare-and-count pass over the data, so the
result equals ``top_k(x, k)[0][..., -1]`` bit for bit (NaN excepted).

The counts are float32 sums where that is exact (fewer than 2**24 entries counted: every
partial sum is then an integer float32 holds): XLA's CPU backend sums floats 1.5-1.8x
faster than integers (BENCHMARKS.md, "Sweeps").

Under ``jax.vmap`` (a stack of SAEs) a large selection runs one batch element at a time
on a CPU (``lax.map``): its 32 passes then re-read one member's keys from the cache
instead of streaming every member's from memory, 3.2x faster for 8 members of 1024 x
2048 pre-activations. Small ones, and other backends, stay batched.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

_SIGN = 0x80000000
_KEY_BITS = 32
# Counts of fewer entries than this are exact as float32 sums.
_EXACT_FLOAT_COUNT = 2**24
# Vmapped selections over at least this many entries per batch element run one element at
# a time on a CPU; below it the map's per-element loop costs more than it saves (measured
# 8 x 256 x 512: 3.9 ms batched, 4.9 ms mapped; 3 x 1024 x 256: 4.7 and 4.1 ms).
_MAP_FROM_ENTRIES = 2**18


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


def _count_at_least(keys: jax.Array, t: jax.Array, axis: int | None) -> jax.Array:
    """How many of ``keys`` are >= ``t``, over ``axis`` (None: all)."""
    hits = keys >= t
    counted = keys.size if axis is None else keys.shape[axis]
    dtype = jnp.float32 if counted < _EXACT_FLOAT_COUNT else jnp.int32
    return jnp.sum(hits.astype(dtype), axis=axis)


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


def _one_at_a_time_under_vmap(select):
    """``select`` (one array in, one out) whose vmap runs ``lax.map`` over the batch where
    that pays (module docstring)."""
    @jax.custom_batching.custom_vmap
    def run(x):
        return select(x)

    @run.def_vmap
    def _batched(axis_size, in_batched, x):
        if x[0].size >= _MAP_FROM_ENTRIES and jax.default_backend() == "cpu":
            return jax.lax.map(run, x), True
        return jax.vmap(select)(x), True

    return run


def _per_row(x: jax.Array, k: int) -> jax.Array:
    keys = ordered_keys(x)
    key = _bisect(keys, k, lambda keys, t: _count_at_least(keys, t[..., None], -1),
                  x.shape[:-1])
    return float_of_key(key).astype(x.dtype)


def _over_all(x: jax.Array, k: int) -> jax.Array:
    keys = ordered_keys(x).reshape(-1)
    key = _bisect(keys, k, lambda keys, t: _count_at_least(keys, t, None), ())
    return float_of_key(key).astype(x.dtype)


def kth_largest_per_row(x: jax.Array, k: int) -> jax.Array:
    """``(...,)``: the k-th largest of each row of ``x (..., F)``, ``1 <= k <= F``. No
    gradient flows through it (a mask's threshold)."""
    if not 1 <= k <= x.shape[-1]:
        raise ValueError(f"k must be in 1..{x.shape[-1]} (the row width), got {k}")
    return _one_at_a_time_under_vmap(partial(_per_row, k=k))(jax.lax.stop_gradient(x))


def kth_largest(x: jax.Array, k: int) -> jax.Array:
    """Scalar: the k-th largest of all entries of ``x``, ``1 <= k <= x.size``. No gradient
    flows through it."""
    if not 1 <= k <= x.size:
        raise ValueError(f"k must be in 1..{x.size} (the number of entries), got {k}")
    return _one_at_a_time_under_vmap(partial(_over_all, k=k))(jax.lax.stop_gradient(x))
