"""Dead-feature resampling: what changes, what must not, and where candidates come from."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sae_jax.buffer import create_buffer, push
from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEConfig, create_sae, unit_rows
from sae_jax.resample import num_candidates, resample_dead_features
from sae_jax.transforms import make_optimizer

D, EXP = 6, 4
H = D * EXP
CFG = SAETrainConfig(expansion_factor=EXP, lr=1e-2, resample_weight=0.2, resample_bias=0.25,
                     dead_threshold=1e-3)
DEAD = np.array([1, 5, 6, 17, 23])
CAPACITY, FILL, LATE = 512, 400, 300  # rows [LATE, FILL) are the only badly reconstructed ones


def _trained_state():
    """Params and an optimiser state whose Adam moments are all non-zero (fresh dicts)."""
    params, opt_state, usage = _trained_state_cached()
    return dict(params), opt_state, usage


@functools.lru_cache(maxsize=1)
def _trained_state_cached():
    params = create_sae(SAEConfig(input_dim=D, expansion_factor=EXP), seed=0).params()
    opt = make_optimizer(CFG, total_steps=10)
    opt_state = opt.init(params)
    update = jax.jit(opt.update)
    for i in range(3):
        keys = jax.random.split(jax.random.key(i), 4)
        grads = {k: jax.random.normal(kk, v.shape) for kk, (k, v) in zip(keys, params.items())}
        updates, opt_state = update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    params["b_dec"] = jnp.zeros((D,))  # so that all-zero rows are reconstructed exactly
    params["b_enc"] = -jnp.abs(params["b_enc"]) - 1.0  # zero input -> no feature fires
    usage = jax.random.uniform(jax.random.key(7), (H,), minval=0.01, maxval=0.2)
    usage = usage.at[DEAD].set(0.0)
    return params, opt_state, usage


def _buffer():
    """Early rows are zeros (zero error); only the late rows carry signal."""
    late = jax.random.normal(jax.random.key(11), (FILL - LATE, D)) * 3.0
    rows = jnp.concatenate([jnp.zeros((LATE, D)), late])
    return push(create_buffer(CAPACITY, D), rows), np.asarray(late)


# One compiled resampler for every test (same shapes throughout).
_resample = jax.jit(lambda p, o, u, b, k: resample_dead_features(p, o, u, b, k, CFG))


def _adam(opt_state):
    return optax.tree_utils.tree_get_all_with_path(opt_state, "ScaleByAdamState")[0][1]


@pytest.fixture(scope="module")
def resampled():
    params, opt_state, usage = _trained_state()
    buf, late = _buffer()
    before = jax.tree.map(np.asarray, (params, opt_state, usage))
    after = _resample(params, opt_state, usage, buf, jax.random.key(3))
    return before, jax.tree.map(np.asarray, after), late


def test_counts_and_usage_reset(resampled):
    (_, _, usage), (_, _, new_usage, n), _ = resampled
    assert int(n) == len(DEAD)
    live = np.setdiff1d(np.arange(H), DEAD)
    np.testing.assert_allclose(new_usage[DEAD], usage[live].mean(), rtol=1e-6)
    np.testing.assert_array_equal(new_usage[live], usage[live])


def test_only_dead_features_change(resampled):
    (params, _, _), (new, _, _, _), _ = resampled
    live = np.setdiff1d(np.arange(H), DEAD)
    np.testing.assert_array_equal(new["W_enc"][:, live], params["W_enc"][:, live])
    np.testing.assert_array_equal(new["b_enc"][live], params["b_enc"][live])
    np.testing.assert_array_equal(new["W_dec"][live], params["W_dec"][live])
    np.testing.assert_array_equal(new["b_dec"], params["b_dec"])
    np.testing.assert_allclose(new["b_enc"][DEAD], CFG.resample_bias)
    assert not np.any(np.all(new["W_enc"][:, DEAD] == params["W_enc"][:, DEAD], axis=0))


def test_new_atoms_come_from_late_rows_and_encoder_scale(resampled):
    (params, _, _), (new, _, _, _), late = resampled
    atoms = new["W_dec"][DEAD]
    np.testing.assert_allclose(np.linalg.norm(atoms, axis=1), 1.0, rtol=1e-6)
    late_dirs = np.asarray(unit_rows(jnp.asarray(late)))  # b_dec is zero
    for atom in atoms:
        assert np.max(late_dirs @ atom) > 1 - 1e-5  # equals the direction of some late row
    assert len({tuple(np.round(a, 5)) for a in atoms}) == len(DEAD)  # drawn without replacement
    # Encoder columns point the same way, scaled to weight x the live mean column norm.
    live = np.setdiff1d(np.arange(H), DEAD)
    scale = CFG.resample_weight * np.linalg.norm(params["W_enc"][:, live], axis=0).mean()
    np.testing.assert_allclose(new["W_enc"][:, DEAD].T, atoms * scale, rtol=1e-5, atol=1e-7)


def test_adam_moments_zeroed_exactly_there(resampled):
    (_, opt_state, _), (_, new_state, _, _), _ = resampled
    old, new = _adam(opt_state), _adam(new_state)
    live = np.setdiff1d(np.arange(H), DEAD)
    for moment in ("mu", "nu"):
        a, b = getattr(old, moment), getattr(new, moment)
        assert np.all(a["W_enc"] != 0) and np.all(a["W_dec"] != 0)
        assert np.all(b["W_enc"][:, DEAD] == 0) and np.all(b["b_enc"][DEAD] == 0)
        assert np.all(b["W_dec"][DEAD] == 0)
        np.testing.assert_array_equal(b["W_enc"][:, live], a["W_enc"][:, live])
        np.testing.assert_array_equal(b["b_enc"][live], a["b_enc"][live])
        np.testing.assert_array_equal(b["W_dec"][live], a["W_dec"][live])
        np.testing.assert_array_equal(b["b_dec"], a["b_dec"])
    np.testing.assert_array_equal(old.count, new.count)
    # Nothing else in the optimiser state moved.
    rest_old = jax.tree.leaves(optax.tree.set(opt_state, mu=None, nu=None))
    rest_new = jax.tree.leaves(optax.tree.set(new_state, mu=None, nu=None))
    for a, b in zip(rest_old, rest_new):
        np.testing.assert_array_equal(a, b)


def test_nothing_dead_changes_nothing():
    params, opt_state, usage = _trained_state()
    usage = usage.at[DEAD].set(0.05)
    buf, _ = _buffer()
    before = jax.tree.map(np.asarray, (params, opt_state, usage))
    *after, n = _resample(params, opt_state, usage, buf, jax.random.key(0))
    assert int(n) == 0
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_all_errors_zero_falls_back_to_uniform():
    params, opt_state, usage = _trained_state()
    buf = push(create_buffer(CAPACITY, D), jnp.zeros((FILL, D)))
    # b_dec is zero and no feature fires: every error is zero, and every x - b_dec too.
    new, _, _, n = _resample(params, opt_state, usage, buf, jax.random.key(0))
    assert int(n) == len(DEAD)
    for leaf in jax.tree.leaves(new):
        assert np.all(np.isfinite(np.asarray(leaf)))
    # A zero direction is replaced by a random one: atoms stay unit norm.
    norms = np.linalg.norm(np.asarray(new["W_dec"])[DEAD], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)


def test_num_candidates_is_static_and_bounded():
    assert num_candidates(100, 16) == 100
    assert num_candidates(10**6, 16) == 4096
    assert num_candidates(10**6, 2048) == 8 * 2048


def test_rejects_mismatched_buffer():
    params, opt_state, usage = _trained_state()
    buf = create_buffer(16, D + 1)
    cfg = dataclasses.replace(CFG)
    with pytest.raises(ValueError, match="buffer rows have dim"):
        resample_dead_features(params, opt_state, usage, buf, jax.random.key(0), cfg)
