"""The synthetic yardstick: its world keeps its hierarchy and L0, and its scores are 1 for a
dictionary that is the truth and low for a random one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import synth_yardstick as ys
from sae_jax.model import SAEConfig

WORLD = ys.World(num_features=32, d_in=32, roots=4, target_l0=3, seed=3)


def test_samples_keep_the_hierarchy_and_the_target_l0():
    tables = ys.make_tables(WORLD)
    x, acts = ys.sample(tables, jax.random.key(0), 2048, correlation_scale=0.3,
                        magnitude_std=0.15)
    on = np.asarray(acts) > 0
    roots, children = on[:, :4], on[:, 4:].reshape(-1, 4, WORLD.branches)
    assert not (children.any(2) & ~roots).any()  # a child fires only with its root
    assert children.sum(2).max() == 1  # and at most one child per root
    assert on.sum(1).mean() == pytest.approx(WORLD.target_l0, rel=0.05)
    np.testing.assert_allclose(np.asarray(x), np.asarray(acts) @ np.asarray(tables.directions),
                               rtol=1e-4, atol=1e-4)
    # Correlated roots: pairs of roots fire together more often than independence gives.
    p = roots.mean(0)
    together = (roots.T.astype(float) @ roots) / len(roots)
    off = ~np.eye(4, dtype=bool)
    assert np.abs(together - np.outer(p, p))[off].max() > 0.01


def test_the_true_dictionary_scores_one_and_a_random_one_does_not():
    tables = ys.make_tables(WORLD)._replace(directions=jnp.eye(32))  # orthonormal truth
    config = SAEConfig(32, 1.0, 100.0)  # relu_l1: ReLU(x W_enc + b_enc), clip far away
    truth = {"W_enc": jnp.eye(32), "b_enc": jnp.full(32, -0.3), "W_dec": jnp.eye(32),
             "b_dec": jnp.zeros(32)}
    got = ys.score(truth, config, tables, WORLD, rows=2048, key=jax.random.key(1))
    assert got["mcc"] == pytest.approx(1.0)
    assert got["f1"] > 0.99 and got["features_recovered"] > 0.99
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 32)).astype(np.float32)
    random = {**truth, "W_enc": jnp.asarray(w.T), "W_dec": jnp.asarray(w)}
    other = ys.score(random, config, tables, WORLD, rows=2048, key=jax.random.key(1))
    assert other["mcc"] < 0.6 and other["f1"] < 0.5 and other["features_recovered"] < 0.2


def test_the_matching_is_one_to_one():
    # Two latents both nearest to true direction 0: only one may take it.
    cos = np.array([[0.9, 0.1, 0.0], [0.8, 0.0, 0.3]])
    assert ys._matched_mcc(cos) == pytest.approx((0.9 + 0.3) / 2)
