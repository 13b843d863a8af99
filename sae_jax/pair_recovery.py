"""Concepts that two SAE features detect together: the best conjunction (AND) per concept.

A concept made of parts that also occur apart (anchor = Ink Saver (Main) 13 with Quick Super
Jump 6, each common in other builds) is often learnt as those parts: one feature for each,
neither a good detector alone. Concept recovery (:mod:`sae_jax.concept_recovery`) counts single
features only; this module says whether the concept is there as a pair, and which pair.

The pair ``(a, b)`` scores a build by ``min(h_a / s_a, h_b / s_b)``, where ``s_f`` is
feature ``f``'s median activation over the concept's builds on which it fires (so both
parts are measured on the scale they take in the concept), and the pair's F1 is the best
over thresholds of that score, exactly as a single feature's. Only pairs among a few
candidates are scored: each concept's best single detectors and the features that fire
most selectively on it (recall minus false-firing rate), where a conjunction's parts rank
high although their precision is low.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from sae_jax.concept_recovery import RECOVERED_F1, sparse_best_f1_auroc
from sae_jax.sparse_activations import SparseActivations

CANDIDATES = 8  # features taken by each ranking (best F1; most selective firing) per concept
# A pair is shown beside its concept's single feature when it beats it by this much: a pair
# is the best of about a hundred, so smaller gains say little.
PAIR_GAIN = 0.05


def _fire_counts(acts, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(F, C)`` rows each feature fires on among each concept's positives, and ``(F,)``
    rows it fires on in all."""
    if isinstance(acts, SparseActivations):
        feature = acts.feature_of_entries(0, acts.nnz)
        fire_pos = np.zeros((acts.num_features, labels.shape[1]), np.int64)
        for c in range(labels.shape[1]):  # one concept at a time: small temporaries
            fire_pos[:, c] = np.bincount(feature[labels[acts.rows, c]],
                                         minlength=acts.num_features)
        return fire_pos, acts.counts()
    fires = np.asarray(acts) > 0
    return fires.T.astype(np.int64) @ labels.astype(np.int64), fires.sum(0)


def _columns(acts, features: np.ndarray) -> np.ndarray:
    if isinstance(acts, SparseActivations):
        return acts.dense(features)
    return np.asarray(acts, np.float32)[:, features]


def candidate_features(single_f1: np.ndarray, fire_pos: np.ndarray, fire_all: np.ndarray,
                       positives: int, n: int, concept: int, *,
                       candidates: int = CANDIDATES) -> np.ndarray:
    """Sorted feature ids worth pairing for ``concept``: the ``candidates`` best single
    detectors and the ``candidates`` features with the largest recall minus false-firing
    rate."""
    recall = fire_pos[:, concept] / max(positives, 1)
    false_rate = (fire_all - fire_pos[:, concept]) / max(n - positives, 1)
    by_f1 = np.argsort(-single_f1[:, concept], kind="stable")[:candidates]
    by_selectivity = np.argsort(-(recall - false_rate), kind="stable")[:candidates]
    return np.unique(np.concatenate([by_f1, by_selectivity]))


def pair_scores(columns: np.ndarray, on_concept: np.ndarray) -> tuple[SparseActivations, list]:
    """The AND scores of every pair of ``columns (n, K)`` (module doc), as value-sorted
    sparse columns (a pair scores 0 wherever one of its features is silent), and the ``P``
    column pairs; ``on_concept (n,)`` bool marks the concept's builds (the scale's rows)."""
    scale = np.ones(columns.shape[1], np.float32)
    for j in range(columns.shape[1]):
        active = columns[on_concept, j]
        active = active[active > 0]
        if len(active):
            scale[j] = np.median(active)
    scaled = columns / scale
    fires = scaled > 0
    pairs = list(combinations(range(columns.shape[1]), 2))
    rows, values = [], []
    for a, b in pairs:
        both = np.flatnonzero(fires[:, a] & fires[:, b]).astype(np.int32)
        rows.append(both)
        values.append(np.minimum(scaled[both, a], scaled[both, b]))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    sparse = SparseActivations(len(columns), indptr,
                               np.concatenate(rows) if rows else np.zeros(0, np.int32),
                               np.concatenate(values) if values else np.zeros(0, np.float32))
    return sparse.sort_by_value(), pairs


def best_pairs(acts, labels, single_f1: np.ndarray, *,
               candidates: int = CANDIDATES) -> list[dict | None]:
    """Per concept, the best AND pair of features: ``{"features": [a, b], "f1": F1}`` (None
    for a concept with no positives or an SAE with fewer than two features).

    ``acts``: ``(n, F)`` dense activations or :class:`SparseActivations`; ``labels (n, C)``
    bool; ``single_f1 (F, C)``: every feature's own best F1 (candidate ranking).
    """
    labels = np.asarray(labels, bool)
    n, num_concepts = labels.shape
    fire_pos, fire_all = _fire_counts(acts, labels)
    out: list[dict | None] = []
    for c in range(num_concepts):
        positives = int(labels[:, c].sum())
        feats = candidate_features(single_f1, fire_pos, fire_all, positives, n, c,
                                   candidates=candidates) if positives else []
        if len(feats) < 2:
            out.append(None)
            continue
        scores, pairs = pair_scores(_columns(acts, feats), labels[:, c])
        f1, _, _ = sparse_best_f1_auroc(scores, labels[:, c:c + 1])
        best = int(np.argmax(f1[:, 0]))
        a, b = pairs[best]
        out.append({"features": [int(feats[a]), int(feats[b])], "f1": float(f1[best, 0])})
    return out


def pair_only(row: dict) -> bool:
    """Whether a ``concepts.json`` row's concept is recovered by its pair and not by any
    single feature."""
    return row["sae_f1"] < RECOVERED_F1 <= (row.get("pair_f1") or 0.0)


def with_pairs(result: dict, acts, labels, single_f1: np.ndarray, *,
               candidates: int = CANDIDATES) -> dict:
    """:func:`sae_jax.concept_recovery.concept_recovery`'s ``result`` with each row's best pair
    (``pair_features``, ``pair_f1``; None without one; ``pair_better``: it beats the single
    feature by :data:`PAIR_GAIN`, or it alone recovers the concept) and the summary's
    ``recovered_with_pairs``: concepts that one feature or a pair detects with F1 >=
    :data:`~sae_jax.concept_recovery.RECOVERED_F1`."""
    pairs = best_pairs(acts, labels, single_f1, candidates=candidates)
    rows = []
    for row, p in zip(result["rows"], pairs):
        row = dict(row, pair_features=p and p["features"], pair_f1=p and p["f1"])
        # A pair that alone recovers its concept is always worth showing.
        row["pair_better"] = bool(p and (p["f1"] >= row["sae_f1"] + PAIR_GAIN
                                         or pair_only(row)))
        rows.append(row)
    recovered = sum(r["sae_f1"] >= RECOVERED_F1 or pair_only(r) for r in rows)
    return {**result, "rows": rows,
            "summary": {**result["summary"], "recovered_with_pairs": int(recovered)}}


def _better_pairs(result: dict) -> list[dict]:
    """The rows whose pair detects the concept clearly better than its best single feature."""
    return [r for r in result["rows"] if r.get("pair_better")]


def detector_features(result: dict) -> set[int]:
    """Every concept's best single feature, and both features of each pair that detects
    its concept clearly better than that single feature (the features a report shows)."""
    return ({r["feature"] for r in result["rows"]}
            | {f for r in _better_pairs(result) for f in r["pair_features"]})


def pair_memberships(result: dict) -> dict[int, list[dict]]:
    """``{feature: [{"concept", "partner", "f1"}, ...]}``: the pairs (clearly better than
    their concept's single feature) each feature belongs to, for its card in the report."""
    out: dict[int, list[dict]] = {}
    for r in _better_pairs(result):
        a, b = r["pair_features"]
        for f, partner in ((a, b), (b, a)):
            out.setdefault(f, []).append({"concept": r["concept"], "partner": partner,
                                          "f1": r["pair_f1"]})
    return out


def pairs_line(result: dict) -> str:
    """One line on what pairs add: the count with pairs and the concepts only pairs
    detect, e.g. ``anchor = 7 AND 193 (F1 0.859)``."""
    only = [r for r in result["rows"] if pair_only(r)]
    parts = [f"{r['concept']} = {r['pair_features'][0]} AND {r['pair_features'][1]} "
             f"(F1 {r['pair_f1']:.3f})" for r in only]
    summary = result["summary"]
    return (f"with two-feature conjunctions: {summary.get('recovered_with_pairs')}/"
            f"{summary['total']}" + (f" ({'; '.join(parts)})" if parts else ""))
