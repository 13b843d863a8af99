"""The SAE step's matmuls in a low compute dtype: values, gradients, the step."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from sae_jax.buffer import create_buffer, push
from sae_jax.config import SAETrainConfig
from sae_jax.losses import sae_loss
from sae_jax.model import SAEConfig, create_sae
from sae_jax.precision import matmul
from sae_jax.step import init_train_state, make_train_steps


def _operands(seed=0, m=16, k=24, n=8):
    ka, kb, kg = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(ka, (m, k)), jax.random.normal(kb, (k, n)),
            jax.random.normal(kg, (m, n)))


def _rounded(a) -> np.ndarray:
    """float64 copy of ``a`` rounded to bfloat16 (what a bfloat16 matmul multiplies)."""
    return np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float64)


def test_float32_is_the_plain_product():
    a, b, _ = _operands()
    np.testing.assert_array_equal(np.asarray(matmul(a, b)), np.asarray(a @ b))


def test_bfloat16_forward_multiplies_rounded_operands_with_float32_sums():
    a, b, _ = _operands(1)
    out = matmul(a, b, "bfloat16")
    assert out.dtype == jnp.float32
    expect = _rounded(a) @ _rounded(b)
    np.testing.assert_allclose(np.asarray(out), expect, rtol=1e-5, atol=1e-5)
    # ...and that is not the float32 product: the rounding really happens.
    assert np.max(np.abs(np.asarray(a @ b) - expect)) > 1e-3


def test_bfloat16_gradients_are_rounded_products():
    a, b, g = _operands(2)

    def f(a, b):
        return jnp.sum(matmul(a, b, "bfloat16") * g)

    da, db = jax.grad(f, argnums=(0, 1))(a, b)
    assert da.dtype == db.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(da), _rounded(g) @ _rounded(b).T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(db), _rounded(a).T @ _rounded(g), rtol=1e-5, atol=1e-5)
    # Close to the exact float32 gradient (bfloat16 keeps 8 significant bits).
    da32 = g @ b.T
    assert float(jnp.linalg.norm(da - da32) / jnp.linalg.norm(da32)) < 1e-2


def test_backward_products_are_emitted_in_bfloat16():
    """All three products (forward and both backward) take bfloat16 operands in the
    program jax hands to the compiler, so bfloat16 matrix units can run them."""
    a, b, g = _operands(3)
    text = jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(matmul(a, b, "bfloat16") * g),
                                      argnums=(0, 1))).lower(a, b).as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line]
    assert len(dots) == 3, dots
    assert all("bf16" in line for line in dots), dots


def test_unknown_compute_dtype_is_named():
    a, b, _ = _operands()
    with pytest.raises(ValueError, match="float16"):
        matmul(a, b, "float16")
    with pytest.raises(ValueError, match="compute_dtype.*'float16'"):
        SAETrainConfig(compute_dtype="float16").validate()


def test_sae_loss_in_bfloat16_is_close_to_float32():
    sae = create_sae(SAEConfig(input_dim=32, expansion_factor=4), seed=0)
    params = sae.params()
    x = jax.random.normal(jax.random.key(4), (64, 32))
    usage = jnp.full((128,), 0.05)
    out = {}
    for dtype in ("float32", "bfloat16"):
        cfg = SAETrainConfig(compute_dtype=dtype)
        (loss, aux), grads = jax.value_and_grad(
            lambda p, c=cfg: sae_loss(p, x, usage, 100, c), has_aux=True)(params)
        out[dtype] = (float(loss), grads)
    assert out["bfloat16"][0] != out["float32"][0]
    assert out["bfloat16"][0] == pytest.approx(out["float32"][0], rel=1e-2)
    for k in params:
        g32, g16 = out["float32"][1][k], out["bfloat16"][1][k]
        assert g16.dtype == jnp.float32
        assert float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32)) < 5e-2, k


@pytest.mark.parametrize("buffer_dtype", ["float32", "bfloat16"])
def test_bfloat16_step_learns_like_float32(buffer_dtype):
    d = 8
    cfg = SAETrainConfig(expansion_factor=2, lr=3e-3, l1_coeff=1e-3, l1_warmup_steps=5,
                         usage_warmup_steps=5, usage_period=50, sae_batch_size=32,
                         buffer_size=256, min_buffer=32, resample_steps=(),
                         buffer_dtype=buffer_dtype)
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    codes = jax.random.uniform(k2, (256, 3)) * jax.random.bernoulli(k3, 0.4, (256, 3))
    buf = push(create_buffer(256, d, buffer_dtype), codes @ jax.random.normal(k1, (3, d)))
    mse = {}
    for dtype in ("float32", "bfloat16"):
        c = dataclasses.replace(cfg, compute_dtype=dtype)
        state = init_train_state(create_sae(SAEConfig(d, 2), seed=0), c, 200)
        fn = make_train_steps(c, 200, 50)
        state, first = fn(state, buf, jax.random.key(0))
        for _ in range(3):
            state, last = fn(state, buf, jax.random.key(0))
        assert float(last["mse"]) < 0.5 * float(first["mse"]), dtype
        mse[dtype] = float(last["mse"])
    assert mse["bfloat16"] == pytest.approx(mse["float32"], rel=0.2)
