"""The optax transforms that keep decoder atoms on the unit sphere, and the full chain."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEConfig, create_sae
from sae_jax.transforms import (
    make_optimizer,
    project_decoder_to_unit_norm,
    remove_parallel_decoder_grad,
)


def _params_and_grads(seed=0):
    params = create_sae(SAEConfig(input_dim=5, expansion_factor=3), seed=seed).params()
    # Atoms of assorted norms, so normalisation inside the transform is exercised.
    scale = jnp.linspace(0.3, 4.0, params["W_dec"].shape[0])[:, None]
    params["W_dec"] = params["W_dec"] * scale
    keys = jax.random.split(jax.random.key(seed + 100), 4)
    grads = {k: jax.random.normal(kk, v.shape) for kk, (k, v) in zip(keys, params.items())}
    return params, grads


def test_remove_parallel_component():
    params, grads = _params_and_grads()
    tx = remove_parallel_decoder_grad()
    out, _ = tx.update(grads, tx.init(params), params)
    unit = params["W_dec"] / jnp.linalg.norm(params["W_dec"], axis=1, keepdims=True)
    dots = jnp.sum(out["W_dec"] * unit, axis=1)
    np.testing.assert_allclose(np.asarray(dots), 0.0, atol=1e-6)
    # What was removed is exactly the parallel part.
    parallel = jnp.sum(grads["W_dec"] * unit, axis=1, keepdims=True) * unit
    np.testing.assert_allclose(np.asarray(out["W_dec"] + parallel), np.asarray(grads["W_dec"]),
                               rtol=1e-5, atol=1e-6)
    for k in ("W_enc", "b_enc", "b_dec"):
        assert out[k] is grads[k]


def test_projection_gives_unit_rows():
    params, grads = _params_and_grads(1)
    tx = project_decoder_to_unit_norm()
    out, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, out)
    np.testing.assert_allclose(np.asarray(jnp.linalg.norm(new["W_dec"], axis=1)), 1.0, rtol=1e-6)
    # Direction of W + u is kept.
    target = params["W_dec"] + grads["W_dec"]
    cos = jnp.sum(new["W_dec"] * target, axis=1) / jnp.linalg.norm(target, axis=1)
    np.testing.assert_allclose(np.asarray(cos), 1.0, rtol=1e-6)
    for k in ("W_enc", "b_enc", "b_dec"):
        assert out[k] is grads[k]


@pytest.mark.parametrize("make", [remove_parallel_decoder_grad, project_decoder_to_unit_norm])
def test_transforms_need_params(make):
    params, grads = _params_and_grads()
    tx = make()
    with pytest.raises(ValueError, match="needs the current params"):
        tx.update(grads, tx.init(params))


def test_chain_keeps_unit_norm_and_learns():
    cfg = SAETrainConfig(lr=1e-2, weight_decay=0.01, grad_clip=1.0)
    params, _ = _params_and_grads(2)
    opt = make_optimizer(cfg, total_steps=20)
    state = opt.init(params)
    start = params

    @jax.jit
    def step(params, state, key):
        keys = jax.random.split(key, 4)
        grads = {k: jax.random.normal(kk, v.shape) for kk, (k, v) in zip(keys, params.items())}
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(5):
        params, state = step(params, state, jax.random.key(i))
        norms = np.asarray(jnp.linalg.norm(params["W_dec"], axis=1))
        np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    for k in params:
        assert float(jnp.max(jnp.abs(params[k] - start[k]))) > 1e-3, k

