"""The device-resident activation buffer: wraparound, valid mask, sampling, bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from runkit.sharding import batch_sharding, make_mesh
from sae_jax.buffer import create_buffer, push, sample, valid_rows


def _rows(start, n, d=3):
    return jnp.arange(start, start + n, dtype=jnp.float32)[:, None] * jnp.ones((1, d))


def test_push_wraps_around_and_overwrites_oldest():
    buf = create_buffer(5, 3)
    buf = push(buf, _rows(0, 3))
    buf = push(buf, _rows(3, 4))  # rows 3..6: 5 and 6 overwrite slots 0 and 1
    assert int(buf.fill) == 5 and int(buf.write_pos) == 2
    np.testing.assert_array_equal(np.asarray(buf.data[:, 0]), [5, 6, 2, 3, 4])


def test_push_writes_only_valid_rows_in_order():
    buf = create_buffer(6, 3)
    valid = jnp.array([True, False, True, False, True])
    buf = push(buf, _rows(10, 5), valid)
    assert int(buf.fill) == 3 and int(buf.write_pos) == 3
    np.testing.assert_array_equal(np.asarray(valid_rows(buf)[:, 0]), [10, 12, 14])
    np.testing.assert_array_equal(np.asarray(buf.data[3:]), 0)


def test_push_refuses_batch_larger_than_capacity():
    with pytest.raises(ValueError, match="larger than the buffer"):
        push(create_buffer(2, 3), _rows(0, 3))


def test_sample_draws_only_filled_rows():
    buf = push(create_buffer(100, 2), _rows(1, 7, d=2))
    x = jax.jit(sample, static_argnums=2)(buf, jax.random.PRNGKey(0), 512)
    assert x.shape == (512, 2) and x.dtype == jnp.float32
    values = np.unique(np.asarray(x[:, 0]))
    assert values.min() >= 1 and values.max() <= 7
    assert len(values) == 7  # 512 draws over 7 rows hit them all


def test_bfloat16_storage_returns_float32_samples():
    buf = create_buffer(8, 4, "bfloat16")
    assert buf.data.dtype == jnp.bfloat16
    x = jnp.full((4, 4), 1.0 + 2.0**-10)  # not representable in bfloat16
    buf = push(buf, x)
    out = sample(buf, jax.random.PRNGKey(1), 16)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), 1.0)  # rounded by bfloat16 storage


def test_sharded_buffer_keeps_sharding_and_contents():
    mesh = make_mesh(jax.devices()[:4])
    buf = create_buffer(8, 2, sharding=batch_sharding(mesh))
    buf = push(buf, _rows(0, 6, d=2))
    buf = push(buf, _rows(6, 4, d=2))
    assert buf.data.sharding.is_equivalent_to(batch_sharding(mesh), 2)
    np.testing.assert_array_equal(np.asarray(buf.data[:, 0]), [8, 9, 2, 3, 4, 5, 6, 7])
