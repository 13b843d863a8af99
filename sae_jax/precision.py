"""Matrix products of the SAE step in a chosen compute dtype.

``compute_dtype="float32"`` is a plain ``a @ b``. ``"bfloat16"`` rounds both
operands to bfloat16 and accumulates in float32, in the forward pass *and* in
both backward products: autodiff of a mixed-precision dot would otherwise hand
the backward pass a float32 cotangent and run it at float32 speed. Parameters,
optimiser state, biases, the loss and every elementwise operation stay float32,
so only the five big products of a step lose precision (8 mantissa bits in,
float32 sums out), which is what bfloat16 matrix units (GPU tensor cores, CPU
AVX-512 BF16) are fast at.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16")


def _low_dot(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    # Transposes stay in the contraction spec: a materialised ``.T`` before a bfloat16
    # product made XLA's CPU backend fall back to a float32 kernel.
    return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _low_matmul(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    return _low_dot("mk,kn->mn", a, b, dtype)


def _low_matmul_fwd(a, b, dtype):
    # Keep the rounded operands: the backward products use them as they are.
    a_low, b_low = a.astype(dtype), b.astype(dtype)
    return _low_dot("mk,kn->mn", a_low, b_low, dtype), (a_low, b_low)


def _low_matmul_bwd(dtype, residuals, g):
    a_low, b_low = residuals
    return _low_dot("mn,kn->mk", g, b_low, dtype), _low_dot("mk,mn->kn", a_low, g, dtype)


_low_matmul.defvjp(_low_matmul_fwd, _low_matmul_bwd)


def matmul(a: jax.Array, b: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    """``a @ b`` for 2-d ``a`` (m, k) and ``b`` (k, n), computed in ``compute_dtype``
    with a float32 result (and float32 gradients for float32 inputs)."""
    if compute_dtype == "float32":
        return a @ b
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"low-precision matmul takes 2-d operands, got {a.shape} @ {b.shape}")
    # float32 primal inputs, so the (float32) products in the backward pass are their
    # gradients as they are; the casts outside carry other input dtypes through autodiff.
    return _low_matmul(a.astype(jnp.float32), b.astype(jnp.float32), jnp.dtype(compute_dtype))
