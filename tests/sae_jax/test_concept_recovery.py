"""Concept recovery: planted detectors are found, F1/AUROC agree with brute force."""

import numpy as np
import pytest

from sae_jax.concept_recovery import assigned_concept, auroc, best_f1, concept_recovery


def _brute_best_f1(score, label):
    best = 0.0
    for t in np.unique(score):
        pred = score >= t
        tp = np.sum(pred & label)
        best = max(best, 2 * tp / (pred.sum() + label.sum()))
    return best


def _brute_auroc(score, label):
    pos, neg = score[label], score[~label]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    n, f, c = 300, 40, 3
    labels = rng.random((n, c)) < np.array([0.1, 0.3, 0.5])
    # Sparse, tied activations like a ReLU SAE: many exact zeros.
    acts = np.maximum(rng.normal(size=(n, f)) - 0.5, 0.0).astype(np.float32)
    acts[:, 7] = np.where(labels[:, 1], 1.0 + rng.random(n), 0.0)  # a perfect detector
    acts[:, 12] = np.round(acts[:, 12], 1)  # ties among positive values
    pooled = rng.normal(size=(n, 16)).astype(np.float32)
    pooled[:, 5] = -2.0 * labels[:, 2] + rng.normal(size=n) * 0.01  # the concept, negated
    return acts, pooled, labels


def test_best_f1_and_auroc_match_brute_force(world):
    acts, _, labels = world
    f1, thr = best_f1(acts, labels)
    auc = np.asarray(auroc(acts, labels))
    assert f1.shape == auc.shape == (acts.shape[1], labels.shape[1])
    for j in range(acts.shape[1]):
        for c in range(labels.shape[1]):
            assert f1[j, c] == pytest.approx(_brute_best_f1(acts[:, j], labels[:, c]), abs=1e-6)
            assert auc[j, c] == pytest.approx(_brute_auroc(acts[:, j], labels[:, c]), abs=1e-5)
            pred = acts[:, j] >= thr[j, c]
            tp = np.sum(pred & labels[:, c])
            assert 2 * tp / (pred.sum() + labels[:, c].sum()) == pytest.approx(f1[j, c], abs=1e-6)


def test_planted_detector_gets_f1_and_auroc_one(world):
    acts, pooled, labels = world
    result = concept_recovery(acts, pooled, labels, ["a", "b", "c"])
    row = result["rows"][1]
    assert row["concept"] == "b" and row["feature"] == 7
    assert row["sae_f1"] == pytest.approx(1.0) and row["sae_auroc"] == pytest.approx(1.0)
    assert row["sae_threshold"] > 0.0
    s = result["summary"]
    assert s["total"] == 3 and s["recovered"] >= 1
    assert s["mean_sae_f1"] == pytest.approx(np.mean([r["sae_f1"] for r in result["rows"]]))


def test_neuron_baseline_finds_negated_neuron(world):
    acts, pooled, labels = world
    row = concept_recovery(acts, pooled, labels, ["a", "b", "c"])["rows"][2]
    assert row["neuron"] == 5 and row["neuron_sign"] == -1
    assert row["neuron_f1"] == pytest.approx(1.0) and row["neuron_auroc"] == pytest.approx(1.0)
    # The same neuron, not negated, is found with sign +1.
    row_pos = concept_recovery(acts, -pooled, labels, ["a", "b", "c"])["rows"][2]
    assert row_pos["neuron"] == 5 and row_pos["neuron_sign"] == 1


def test_concept_without_positives_scores_zero():
    acts = np.random.default_rng(1).random((20, 4)).astype(np.float32)
    labels = np.zeros((20, 1), bool)
    f1, _ = best_f1(acts, labels)
    assert np.all(f1 == 0.0)
    assert np.all(np.asarray(auroc(acts, labels)) == 0.5)


def test_mismatched_inputs_are_refused(world):
    acts, pooled, labels = world
    with pytest.raises(ValueError, match="concept names"):
        concept_recovery(acts, pooled, labels, ["a"])
    with pytest.raises(ValueError, match="rows differ"):
        concept_recovery(acts[:10], pooled, labels, ["a", "b", "c"])


def test_sparse_activations_give_the_dense_f1_threshold_and_auroc(world):
    from sae_jax.concept_recovery import dense_best_f1_auroc, sparse_best_f1_auroc
    from sae_jax.sparse_activations import collect

    acts, pooled, labels = world
    acts = acts.copy()
    acts[:, 20] = 0.0  # never fires
    acts[:, 21] = 0.5 + np.round(acts[:, 21], 1)  # fires everywhere, with ties
    labels = np.concatenate([labels, np.zeros((len(labels), 1), bool)], axis=1)  # no positives
    sparse = collect([(acts[i:i + 64], np.ones(len(acts[i:i + 64]), bool))
                      for i in range(0, len(acts), 64)], acts.shape[1]).sort_by_value()
    f1, thr, auc = sparse_best_f1_auroc(sparse, labels)
    dense_f1, dense_thr = best_f1(acts, labels)
    np.testing.assert_allclose(f1, dense_f1, rtol=1e-6)
    np.testing.assert_array_equal(thr, dense_thr)
    np.testing.assert_allclose(auc, np.asarray(auroc(acts, labels)), atol=1e-6)
    names = ["a", "b", "c", "none"]
    # The dense form of the same pass, on columns of any sign (the neuron baseline's).
    mixed = np.concatenate([acts, pooled, -pooled], axis=1)
    f1, thr, auc = dense_best_f1_auroc(mixed, labels)
    want_f1, want_thr = best_f1(mixed, labels)
    np.testing.assert_allclose(f1, want_f1, rtol=1e-6)
    np.testing.assert_array_equal(thr, want_thr)
    np.testing.assert_allclose(auc, np.asarray(auroc(mixed, labels)), atol=1e-6)
    got, want = (concept_recovery(sparse, pooled, labels, names),
                 concept_recovery(acts, pooled, labels, names))
    for row, expect in zip(got["rows"], want["rows"]):
        assert row == pytest.approx(expect, abs=1e-6)
    assert got["summary"] == pytest.approx(want["summary"], abs=1e-6)


def test_assigned_concept_is_the_first_row_naming_the_feature():
    rows = [{"concept": "a", "feature": 3, "sae_f1": 0.5, "sae_auroc": 0.7},
            {"concept": "b", "feature": 7, "sae_f1": 0.9, "sae_auroc": 0.95},
            {"concept": "c", "feature": 7, "sae_f1": 0.95, "sae_auroc": 0.99}]
    result = {"rows": rows, "summary": {}}
    assert assigned_concept(result, 7) == {"name": "b", "f1": 0.9, "auroc": 0.95,
                                           "best_detector": True}
    assert assigned_concept(result, 3)["name"] == "a"
    assert assigned_concept(result, 4) is None
