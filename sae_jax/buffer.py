"""Device-resident circular activation buffer.

A fixed-capacity device array plus a write pointer and a fill count, all
device scalars, so that pushing a harvested batch and drawing an SAE batch
happen inside jit with no host round trip. The oldest rows are overwritten
once the buffer is full (like the original's). Storage may be bfloat16 to
halve memory; samples come back as float32.

Sharding: pass a ``jax.sharding.Sharding`` for ``data`` (rows split over the
batch axis) and the buffer stays sharded through push and sample.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp


class ActivationBuffer(NamedTuple):
    data: jax.Array  # Float[Array, "capacity d"] (float32 or bfloat16)
    write_pos: jax.Array  # int32 scalar: next row to write
    fill: jax.Array  # int32 scalar: number of valid rows (<= capacity)

    @property
    def capacity(self) -> int:
        return self.data.shape[0]


def create_buffer(capacity: int, dim: int, dtype="float32", sharding=None) -> ActivationBuffer:
    if capacity <= 0 or dim <= 0:
        raise ValueError(f"buffer capacity and dim must be positive, got {capacity} x {dim}")
    dtype = jnp.dtype(dtype)
    zeros = jax.jit(lambda: jnp.zeros((capacity, dim), dtype), out_shardings=sharding)()
    return ActivationBuffer(zeros, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


@partial(jax.jit, donate_argnums=0)
def push(buf: ActivationBuffer, x: jax.Array, valid: jax.Array | None = None) -> ActivationBuffer:
    """Append the rows of ``x`` (b, d), overwriting the oldest; with ``valid`` (b,) bool,
    only the valid rows are written (their order kept), so padded batches never pollute it."""
    cap = buf.data.shape[0]
    b = x.shape[0]
    if b > cap:
        raise ValueError(f"batch of {b} rows is larger than the buffer's capacity {cap}")
    if valid is None:
        valid = jnp.ones((b,), bool)
    valid = valid.astype(bool)
    # Row i goes to slot write_pos + (number of valid rows before it); invalid rows are
    # sent out of range and dropped by the scatter.
    offset = jnp.cumsum(valid) - 1
    slots = jnp.where(valid, (buf.write_pos + offset) % cap, cap)
    data = buf.data.at[slots].set(x.astype(buf.data.dtype), mode="drop")
    n = valid.sum().astype(jnp.int32)
    return ActivationBuffer(data, (buf.write_pos + n) % cap, jnp.minimum(buf.fill + n, cap))


def sample(buf: ActivationBuffer, key: jax.Array, batch_size: int) -> jax.Array:
    """``batch_size`` rows drawn uniformly (with replacement) from the valid rows, as float32.

    Callable inside jit; ``fill`` must be positive.
    """
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buf.fill, 1))
    return buf.data[idx].astype(jnp.float32)


def valid_rows(buf: ActivationBuffer) -> jax.Array:
    """The valid rows (host-side helper: the shape depends on ``fill``)."""
    return buf.data[: int(buf.fill)].astype(jnp.float32)
