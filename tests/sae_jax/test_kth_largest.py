"""The bisection k-th largest equals a sort's, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sae_jax.kth_largest as kth_module
from sae_jax.kth_largest import float_of_key, kth_largest, kth_largest_per_row, ordered_keys


def test_keys_order_as_the_floats_and_invert():
    x = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 7.25, np.inf], np.float32)
    keys = np.asarray(ordered_keys(jnp.asarray(x))).astype(np.int64)
    assert np.all(np.diff(keys) > 0)
    np.testing.assert_array_equal(np.asarray(float_of_key(ordered_keys(jnp.asarray(x)))), x)


@pytest.mark.parametrize("k", [1, 3, 17, 40])
def test_per_row_matches_a_sort(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(6, 40)).astype(np.float32)
    x[0, :10] = 0.5  # ties, including at the k-th place
    x[1] = -np.abs(x[1])  # all negative
    want = -np.sort(-x, axis=-1)[:, k - 1]
    got = np.asarray(jax.jit(kth_largest_per_row, static_argnums=1)(jnp.asarray(x), k))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("k", [1, 50, 239, 240])
def test_over_all_entries_matches_a_sort(k):
    x = np.random.default_rng(k).normal(size=(8, 30)).astype(np.float32)
    x = np.maximum(x, 0)  # as BatchTopK uses it: many exact zeros
    want = np.sort(x.reshape(-1))[::-1][k - 1]
    assert float(kth_largest(jnp.asarray(x), k)) == want


@pytest.mark.parametrize("limit", [2**24, 8])
def test_integer_counts_where_a_float_count_would_not_be_exact(monkeypatch, limit):
    """Past 2**24 entries counts are integer sums; a lowered limit sends these small inputs
    down that path, and a limit of 2**24 the float one: both equal a sort."""
    monkeypatch.setattr(kth_module, "_EXACT_FLOAT_COUNT", limit)
    x = np.random.default_rng(5).normal(size=(5, 24)).astype(np.float32)
    x[2, :6] = 1.25  # ties
    np.testing.assert_array_equal(np.asarray(kth_largest_per_row(jnp.asarray(x), 7)),
                                  -np.sort(-x, axis=-1)[:, 6])
    flat = np.maximum(x, 0)
    assert float(kth_largest(jnp.asarray(flat), 31)) == np.sort(flat.reshape(-1))[::-1][30]


@pytest.mark.parametrize("map_from", [2**18, 8])
def test_vmapped_selections_equal_each_members_own(monkeypatch, map_from):
    """A stack's selections, batched (small members) or one member at a time (a lowered
    threshold sends these small members down the lax.map path), equal each member's own;
    gradients pass the masks and not the thresholds, as without vmap."""
    monkeypatch.setattr(kth_module, "_MAP_FROM_ENTRIES", map_from)
    x = np.random.default_rng(6).normal(size=(3, 4, 20)).astype(np.float32)
    rows = jax.jit(jax.vmap(lambda m: kth_largest_per_row(m, 5)))(jnp.asarray(x))
    overall = jax.jit(jax.vmap(lambda m: kth_largest(jnp.maximum(m, 0), 9)))(jnp.asarray(x))
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(rows[i]), -np.sort(-x[i], axis=-1)[:, 4])
        assert float(overall[i]) == np.sort(np.maximum(x[i], 0).reshape(-1))[::-1][8]

    def masked_energy(scale, m):
        pre = m * scale
        return jnp.sum(jnp.where(pre >= kth_largest_per_row(pre, 5)[:, None], pre, 0.0) ** 2)

    grads = jax.jit(jax.vmap(jax.grad(masked_energy)))(jnp.ones(3), jnp.asarray(x))
    for i in range(3):
        kept = x[i] >= -np.sort(-x[i], axis=-1)[:, 4:5]
        np.testing.assert_allclose(float(grads[i]), 2 * np.sum(x[i][kept] ** 2), rtol=1e-5)


def test_keeps_the_input_dtype():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32)), jnp.bfloat16)
    got = kth_largest_per_row(x, 5)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32),
                                  np.asarray(jax.lax.top_k(x, 5)[0][:, -1], np.float32))


def test_refuses_k_outside_the_data():
    with pytest.raises(ValueError, match="got 0"):
        kth_largest_per_row(jnp.zeros((2, 4)), 0)
    with pytest.raises(ValueError, match="got 9"):
        kth_largest(jnp.zeros((2, 4)), 9)
