"""The scanned SAE training step: scan == single steps, learning, resampling, determinism."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax.buffer import create_buffer, push
from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEConfig, create_sae
from sae_jax.step import init_train_state, make_train_steps

D = 8
CFG = SAETrainConfig(
    expansion_factor=2, lr=3e-3, l1_coeff=1e-3, l1_warmup_steps=5, usage_warmup_steps=5,
    usage_period=50, sae_batch_size=32, buffer_size=256, min_buffer=32, resample_steps=(),
)
TOTAL = 200


def _low_rank_buffer(seed=0, rows=256):
    """Rows of a rank-3 dataset with sparse codes (the SAE can learn it)."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    basis = jax.random.normal(k1, (3, D))
    codes = jax.random.uniform(k2, (rows, 3)) * jax.random.bernoulli(k3, 0.4, (rows, 3))
    buf = create_buffer(CFG.buffer_size, D)
    return push(buf, codes @ basis)


def _state(cfg=CFG, seed=0):
    sae = create_sae(SAEConfig(input_dim=D, expansion_factor=cfg.expansion_factor), seed=seed)
    return init_train_state(sae, cfg, TOTAL)


def _copy(state):
    return jax.tree.map(jnp.copy, state)


def test_scan_equals_single_steps():
    buf, key = _low_rank_buffer(), jax.random.key(3)
    k = 4
    scanned, m_scan = make_train_steps(CFG, TOTAL, k)(_state(), buf, key)
    single_fn = make_train_steps(CFG, TOTAL, 1)
    state, losses = _state(), []
    for _ in range(k):
        state, m = single_fn(state, buf, key)
        losses.append(float(m["loss"]))
    assert int(scanned.step) == int(state.step) == k
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(m_scan["loss"]), np.mean(losses), rtol=1e-5)


def test_loss_decreases_and_metrics():
    buf = _low_rank_buffer(1)
    fn = make_train_steps(CFG, TOTAL, 4)
    state = _state()
    state, first = fn(state, buf, jax.random.key(0))
    for _ in range(49):
        state, last = fn(state, buf, jax.random.key(0))
    assert bool(last["finite"]) and int(last["step"]) == 200
    assert float(last["mse"]) < 0.5 * float(first["mse"])
    norms = np.asarray(jnp.linalg.norm(state.params["W_dec"], axis=1))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    for name in ("loss", "mse", "l1", "kl", "l0", "l1_coeff", "usage_coeff", "lr", "grad_norm",
                 "dead_count", "n_resampled", "finite", "step"):
        assert np.ndim(last[name]) == 0, name
    assert 0 < float(last["lr"]) < CFG.lr


def test_resample_fires_at_the_configured_step():
    cfg = dataclasses.replace(CFG, resample_steps=(3,))
    state = _state(cfg)
    # Features 0..3 can never fire: zero encoder column, negative bias.
    params = dict(state.params)
    params["W_enc"] = params["W_enc"].at[:, :4].set(0.0)
    params["b_enc"] = params["b_enc"].at[:4].set(-1.0)
    state = state._replace(params=params)
    fresh = _copy(state)  # for the single-scan run below
    buf, key = _low_rank_buffer(2), jax.random.key(5)

    one = make_train_steps(cfg, TOTAL, 1)
    for step in (1, 2):
        state, m = one(state, buf, key)
        assert int(m["n_resampled"]) == 0, step
    dead_before = int(m["dead_count"])
    assert dead_before >= 4
    state, m = one(state, buf, key)  # step 3
    assert int(m["n_resampled"]) == dead_before
    assert int(m["dead_count"]) == 0
    assert float(jnp.min(jnp.linalg.norm(state.params["W_enc"][:, :4], axis=0))) > 0
    state, m = one(state, buf, key)
    assert int(m["n_resampled"]) == 0

    # The same inside one longer scan.
    _, m5 = make_train_steps(cfg, TOTAL, 5)(fresh, buf, key)
    assert int(m5["n_resampled"]) == dead_before


def test_deterministic_given_key():
    buf = _low_rank_buffer(4)
    fn = make_train_steps(CFG, TOTAL, 4)
    a, _ = fn(_state(), buf, jax.random.key(9))
    b, _ = fn(_state(), buf, jax.random.key(9))
    c, _ = fn(_state(), buf, jax.random.key(10))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a.params["W_enc"]), np.asarray(c.params["W_enc"]))


def test_rejects_bad_step_counts():
    with pytest.raises(ValueError, match="num_steps"):
        make_train_steps(CFG, TOTAL, 0)
    with pytest.raises(ValueError, match="total_steps"):
        make_train_steps(CFG, 0, 1)


def test_sharded_buffer_and_batch_match_unsharded():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    assert len(jax.devices()) >= 4, "conftest forces 4 host devices"
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
    rows = NamedSharding(mesh, PartitionSpec("data"))
    whole = NamedSharding(mesh, PartitionSpec())
    buf = _low_rank_buffer(5)
    sharded_buf = buf._replace(data=jax.device_put(buf.data, rows),
                               write_pos=jax.device_put(buf.write_pos, whole),
                               fill=jax.device_put(buf.fill, whole))
    key = jax.random.key(2)
    plain, _ = make_train_steps(CFG, TOTAL, 4)(_state(), buf, key)
    state = jax.device_put(_state(), whole)
    sharded, metrics = make_train_steps(CFG, TOTAL, 4, batch_sharding=rows)(
        state, sharded_buf, key)
    assert bool(metrics["finite"])
    assert sharded.params["W_enc"].sharding.is_fully_replicated
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(sharded)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
