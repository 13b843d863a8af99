"""Batched logistic probes: the Newton fit reaches the regularised optimum, shared and
per-problem inputs agree, and thresholds and F1 are the hand-counted ones."""

import numpy as np
import pytest

from sae_jax import logistic_probe
from sae_jax.logistic_probe import L2, best_f1_threshold, f1_at, fit_logistic, logits


def _problems(seed=0, b=5, n=3000, d=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    true_w = rng.normal(size=(b, d)) * 2
    true_b = rng.normal(size=b)
    y = rng.random((b, n)) < 1 / (1 + np.exp(-(true_w @ x.T + true_b[:, None])))
    return x, y, true_w, true_b


def _gradient(x, y, w, l2=L2):
    """The gradient of the mean cross-entropy plus the decay, from first principles."""
    n = len(x)
    x1 = np.concatenate([x, np.ones((n, 1))], axis=1).astype(np.float64)
    out = []
    for wb, yb in zip(w.astype(np.float64), y):
        p = 1 / (1 + np.exp(-(x1 @ wb)))
        g = x1.T @ (p - yb) / n
        g[:-1] += l2 * wb[:-1]
        out.append(g)
    return np.array(out)


def test_fit_reaches_the_optimum_and_the_generating_weights():
    x, y, true_w, true_b = _problems()
    w = fit_logistic(x, y)
    assert w.shape == (5, 5)
    # At the optimum the gradient vanishes; 3,000 rows put the weights near the truth.
    assert np.abs(_gradient(x, y, w)).max() < 1e-5
    assert np.abs(w[:, :-1] - true_w).max() < 0.45
    assert np.abs(w[:, -1] - true_b).max() < 0.3


def test_shared_and_per_problem_inputs_agree():
    x, y, _, _ = _problems(seed=1, b=3)
    shared = fit_logistic(x, y)
    each = fit_logistic(np.broadcast_to(x, (3, *x.shape)), y)
    # Both reach the optimum (float32 sums in another order: a hair apart).
    assert np.abs(_gradient(x, y, shared)).max() < 1e-5
    assert np.abs(_gradient(x, y, each)).max() < 1e-5
    np.testing.assert_allclose(shared, each, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits(x, shared), logits(np.broadcast_to(x, (3, *x.shape)),
                                                         shared), atol=1e-4)


def test_wide_shared_inputs_solved_by_conjugate_gradients_give_the_same_fit(monkeypatch):
    x, y, _, _ = _problems(seed=2, b=3, n=800, d=24)
    # Correlated columns, as a model's pooled vector has: a poorly conditioned Hessian.
    mixing = np.random.default_rng(5).normal(size=(24, 24)) * 0.3 + np.eye(24)
    x = (x @ mixing).astype(np.float32)
    direct = fit_logistic(x, y)
    monkeypatch.setattr(logistic_probe, "OUTER_BUDGET", 0)  # never form the Hessians
    by_cg = fit_logistic(x, y)
    # Both at the optimum; along the poorly conditioned directions the weights may differ
    # by what a gradient of 1e-4 allows, the predictions hardly at all.
    assert np.abs(_gradient(x, y, by_cg)).max() < 1e-5
    assert np.abs(_gradient(x, y, direct)).max() < 1e-5
    np.testing.assert_allclose(logits(x, by_cg), logits(x, direct), atol=2e-4)


def test_a_column_of_zeros_keeps_a_zero_weight_and_separable_data_stays_finite():
    rng = np.random.default_rng(3)
    x = np.zeros((400, 3), np.float32)
    x[:, 0] = rng.normal(size=400)
    y = (x[:, 0] > 0)[None]  # separable: only the decay bounds the weight
    w = fit_logistic(x, y)
    assert np.all(np.isfinite(w))
    assert w[0, 1] == 0 and w[0, 2] == 0
    assert w[0, 0] > 5
    assert np.abs(_gradient(x, y, w)).max() < 1e-5


def test_best_threshold_skips_cuts_between_equal_scores():
    scores = np.array([[3.0, 2.0, 2.0, 1.0], [0.5, 0.4, 0.3, 0.2]])
    labels = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
    threshold, f1 = best_f1_threshold(scores, labels)
    # Row 0: >= 3 gives 2/3, >= 2 (both 2s) 0.8, >= 1 2/3; a cut inside the 2s is none.
    assert threshold[0] == 2.0 and f1[0] == pytest.approx(0.8)
    assert f1[1] == 0 and np.isinf(threshold[1])  # no positives


def test_f1_at_counts_hits():
    scores = np.array([[0.9, 0.8, 0.1, 0.7]])
    labels = np.array([[1, 0, 1, 1]], bool)
    # >= 0.75: predicts rows 0 and 1; one hit of 2 predicted and 3 positives.
    assert f1_at(scores, labels, np.array([0.75]))[0] == pytest.approx(2 * 1 / (2 + 3))


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        fit_logistic(np.zeros((10, 2)), np.zeros((1, 9), bool))
