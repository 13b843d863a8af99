"""The bisection k-th largest equals a sort's, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
