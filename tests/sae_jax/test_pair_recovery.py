"""Concepts two features detect together: a planted conjunction is found, dense and sparse
agree, and the best pair matches an exhaustive search from first principles."""

from itertools import combinations

import numpy as np
import pytest

from sae_jax.concept_recovery import best_f1, concept_recovery
from sae_jax.pair_recovery import (
    best_pairs,
    detector_features,
    pair_memberships,
    pairs_line,
    with_pairs,
)
from sae_jax.sparse_activations import collect


def _sparse(acts):
    return collect([(acts[i:i + 64], np.ones(len(acts[i:i + 64]), bool))
                    for i in range(0, len(acts), 64)], acts.shape[1]).sort_by_value()


@pytest.fixture(scope="module")
def conjunction():
    """Concept 0 = part A and part B, each a feature of its own (1 and 4) that also fires
    without the other; ten distractors detect the concept better alone than either part."""
    rng = np.random.default_rng(0)
    n = 4000
    part_a, part_b = rng.random(n) < 0.3, rng.random(n) < 0.3
    concept = part_a & part_b
    other = rng.random(n) < 0.2  # concept 1: a plain single-feature concept
    acts = np.maximum(rng.normal(size=(n, 16)) - 1.5, 0.0).astype(np.float32)
    acts[:, 1] = np.where(part_a, 1.0 + rng.random(n), 0.0)
    acts[:, 4] = np.where(part_b, 3.0 + rng.random(n), 0.0)
    acts[:, 9] = np.where(other, 2.0, 0.0)
    for f in range(10, 16):  # noisy partial detectors: precision ~0.67, recall ~0.6
        fires = np.where(concept, rng.random(n) < 0.6, rng.random(n) < 0.03)
        acts[:, f] = np.where(fires, rng.random(n) + 0.5, 0.0)
    labels = np.stack([concept, other], axis=1)
    return acts, labels


def test_a_planted_conjunction_is_found_as_its_two_parts(conjunction):
    acts, labels = conjunction
    single, _ = best_f1(acts, labels)
    assert single[:, 0].max() < 0.8  # no single feature recovers it
    assert single[1, 0] < single[10:, 0].max()  # the parts are not the best singles
    pairs = best_pairs(acts, labels, single, candidates=4)
    assert pairs[0]["features"] == [1, 4]
    assert pairs[0]["f1"] == pytest.approx(1.0)
    # Dense and sparse activations give the same pairs.
    assert best_pairs(_sparse(acts), labels, single, candidates=4) == pairs


def test_with_pairs_counts_concepts_only_a_pair_detects(conjunction):
    acts, labels = conjunction
    pooled = np.random.default_rng(1).normal(size=(len(acts), 8)).astype(np.float32)
    result, single, _ = concept_recovery(acts, pooled, labels, ["both", "other"],
                                         return_matrices=True)
    assert result["summary"]["recovered"] == 1  # "other", by feature 9
    out = with_pairs(result, acts, labels, single)
    assert out["summary"]["recovered_with_pairs"] == 2
    assert out["rows"][0]["pair_features"] == [1, 4]
    # The pair is worth showing for "both" only: "other" has a perfect single detector.
    assert [r["pair_better"] for r in out["rows"]] == [True, False]
    assert detector_features(out) == {out["rows"][0]["feature"], 1, 4, 9}
    member = pair_memberships(out)
    assert member == {1: [{"concept": "both", "partner": 4, "f1": out["rows"][0]["pair_f1"]}],
                      4: [{"concept": "both", "partner": 1, "f1": out["rows"][0]["pair_f1"]}]}
    assert result["summary"].get("recovered_with_pairs") is None  # the input is left as is
    assert pairs_line(out).startswith("with two-feature conjunctions: 2/2 (both = 1 AND 4")


def _brute_best_pair(acts, label):
    """Every pair, min of the two activations over each one's median on the concept's
    builds where it fires, F1 at every threshold."""
    best = 0.0
    for a, b in combinations(range(acts.shape[1]), 2):
        scales = []
        for f in (a, b):
            on = acts[label, f]
            scales.append(np.median(on[on > 0]) if (on > 0).any() else 1.0)
        score = np.minimum(acts[:, a] / np.float32(scales[0]), acts[:, b] / np.float32(scales[1]))
        for t in np.unique(score):
            pred = score >= t
            best = max(best, 2 * np.sum(pred & label) / (pred.sum() + label.sum()))
    return best


def test_best_pair_matches_an_exhaustive_search():
    rng = np.random.default_rng(2)
    n, f = 200, 6
    labels = rng.random((n, 2)) < np.array([0.2, 0.4])
    acts = np.maximum(rng.normal(size=(n, f)) + labels[:, :1] * 0.8 - 0.6, 0).astype(np.float32)
    acts[:, 3] = np.round(acts[:, 3], 1)  # ties
    acts *= np.array([1.0, 10.0, 0.1, 3.0, 0.3, 1.0], np.float32)  # scales that matter
    single, _ = best_f1(acts, labels)
    pairs = best_pairs(acts, labels, single, candidates=f)  # every feature a candidate
    for c in range(2):
        assert pairs[c]["f1"] == pytest.approx(_brute_best_pair(acts, labels[:, c]), abs=1e-6)


def test_concepts_without_positives_or_pairs_get_none():
    acts = np.abs(np.random.default_rng(3).normal(size=(50, 3))).astype(np.float32)
    labels = np.zeros((50, 1), bool)
    single, _ = best_f1(acts, labels)
    assert best_pairs(acts, labels, single) == [None]
    labels[:10] = True
    assert best_pairs(acts[:, :1], labels, single[:1]) == [None]  # one feature: no pair
    no_concepts = np.zeros((50, 0), bool)
    assert best_pairs(_sparse(acts), no_concepts, np.zeros((3, 0))) == []
