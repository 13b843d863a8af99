"""Concept recovery: does some single SAE feature detect each planted concept?

The synthetic build world records, for every build, which concepts made it
(ground truth). For every concept ``c`` we find the single SAE feature whose
activation, thresholded, best predicts ``c`` over the evaluation builds, with
its F1 at the best threshold and its AUROC. The baseline is the best single
neuron of the raw pooled vector, taken with either sign (``x`` or ``-x``), so
the SAE gets credit only for what the raw basis does not already give.

Everything is matrix work over ``features x thresholds x concepts``: every
activation value of a feature is a candidate threshold; sorting each feature's
column once and a cumulative sum of the labels in that order give the true
positives at all thresholds for all concepts together (chunked over features
to bound memory).

SAE activations may come sparse (:class:`~sae_jax.sparse_activations.SparseActivations`,
each feature's positive entries sorted by value): the same exact F1 and AUROC then come
from the positive entries alone, the zeros of a feature being one tied block at the
bottom (:func:`sparse_best_f1_auroc`), so a 24,576 x 100,000 analysis never holds the
dense matrix.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from runkit.jsonio import write_json
from sae_jax.sparse_activations import SparseActivations

RECOVERED_F1 = 0.8  # a concept counts as recovered when its best SAE feature reaches this F1
CHUNK_ELEMENTS = 1 << 24  # (rows x features x concepts) per chunk: bounds device memory
SPARSE_CHUNK = 1 << 19  # sparse entries per chunk (each carries C label counts)


@jax.jit
def _best_f1_chunk(scores: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``scores (n, Fc)``, ``labels (n, C)`` float -> best F1 and its threshold, ``(Fc, C)``.

    Predict positive when ``score >= threshold``; the candidate thresholds are the
    distinct score values (a cut between equal values is not a threshold).
    """
    n = scores.shape[0]
    order = jnp.argsort(-scores, axis=0)  # (n, Fc) rows by descending score
    sorted_scores = jnp.take_along_axis(scores, order, axis=0)
    tp = jnp.cumsum(labels[order], axis=0)  # (n, Fc, C): true positives among the top k+1
    predicted = jnp.arange(1, n + 1, dtype=jnp.float32)[:, None, None]
    positives = labels.sum(0)[None, None, :]
    f1 = 2.0 * tp / (predicted + positives)
    is_cut = jnp.concatenate(
        [sorted_scores[:-1] > sorted_scores[1:], jnp.ones((1, scores.shape[1]), bool)], axis=0)
    f1 = jnp.where(is_cut[:, :, None], f1, -1.0)
    best = jnp.argmax(f1, axis=0)  # (Fc, C)
    best_f1 = jnp.take_along_axis(f1, best[None], axis=0)[0]
    threshold = jnp.take_along_axis(sorted_scores.T, best, axis=1)
    return jnp.where(positives[0] > 0, best_f1, 0.0), threshold


def best_f1(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Best F1 over all thresholds for every (feature, concept): ``(F, C)`` F1 and threshold.

    ``scores (n, F)`` float, ``labels (n, C)`` bool. A concept with no positives gets F1 0.
    """
    scores = jnp.asarray(scores, jnp.float32)
    labels = jnp.asarray(labels, jnp.float32)
    n, f = scores.shape
    c = labels.shape[1]
    chunk = int(max(1, min(f, CHUNK_ELEMENTS // max(1, n * c))))
    f1_parts, thr_parts = [], []
    for start in range(0, f, chunk):
        block = scores[:, start:start + chunk]
        if block.shape[1] < chunk:  # keep one compiled shape
            block = jnp.pad(block, ((0, 0), (0, chunk - block.shape[1])))
        f1_b, thr_b = _best_f1_chunk(block, labels)
        f1_parts.append(np.asarray(f1_b))
        thr_parts.append(np.asarray(thr_b))
    return (np.concatenate(f1_parts)[:f], np.concatenate(thr_parts)[:f])


def _average_ranks(column: jax.Array) -> jax.Array:
    """1-based ranks of ``column (n,)`` with ties given their average rank."""
    s = jnp.sort(column)
    below = jnp.searchsorted(s, column, side="left")
    upto = jnp.searchsorted(s, column, side="right")
    return (below + upto + 1) / 2.0


@jax.jit
def _auroc_chunk(scores: jax.Array, labels: jax.Array) -> jax.Array:
    ranks = jax.vmap(_average_ranks, in_axes=1, out_axes=1)(scores)  # (n, Fc)
    pos = labels.sum(0)
    neg = labels.shape[0] - pos
    rank_sum = ranks.T @ labels  # (Fc, C)
    auc = (rank_sum - pos * (pos + 1) / 2.0) / jnp.maximum(pos * neg, 1.0)
    return jnp.where((pos > 0) & (neg > 0), auc, 0.5)


def auroc(scores, labels) -> np.ndarray:
    """AUROC of every feature for every concept, ``(F, C)``, by the rank-sum formula
    (ties count one half). ``scores (n, F)``, ``labels (n, C)``; 0.5 where a concept has
    no positives or no negatives."""
    scores = jnp.asarray(scores, jnp.float32)
    labels = jnp.asarray(labels, jnp.float32)
    n, f = scores.shape
    chunk = int(max(1, min(f, CHUNK_ELEMENTS // max(1, 4 * n))))
    parts = []
    for start in range(0, f, chunk):
        block = scores[:, start:start + chunk]
        if block.shape[1] < chunk:
            block = jnp.pad(block, ((0, 0), (0, chunk - block.shape[1])))
        parts.append(np.asarray(_auroc_chunk(block, labels)))
    return np.concatenate(parts)[:f]


def _segment_first(flags: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Per entry, the largest ``index[j] <= i`` with ``flags[j]``, running forward."""
    return np.maximum.accumulate(np.where(flags, index, 0))


def sparse_best_f1_auroc(sparse: SparseActivations, labels
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`best_f1` and :func:`auroc` of value-sorted sparse activations: ``(F, C)``
    best F1 (float32), its threshold (float32) and AUROC (float64), equal to the dense
    functions' on ``sparse.dense()``. Memory: a chunk of entries times ``C``."""
    labels = np.asarray(labels, bool)
    n, c = labels.shape
    if sparse.num_rows != n:
        raise ValueError(f"{sparse.num_rows} activation rows for {n} label rows")
    num = sparse.num_features
    positives = labels.sum(0).astype(np.int64)  # (C,)
    pos32 = positives.astype(np.float32)
    counts = sparse.counts()
    zeros = n - counts  # each feature's tied block of zeros
    best = np.full((num, c), -1.0, np.float32)
    threshold = np.zeros((num, c), np.float32)
    pos_entries = np.zeros((num, c), np.int64)  # positives among each feature's entries
    rank_sum = np.zeros((num, c), np.float64)  # of those, in the ranks of the whole column
    for f0, f1 in sparse.feature_chunks(SPARSE_CHUNK):
        a, b = int(sparse.indptr[f0]), int(sparse.indptr[f1])
        if a == b:
            continue
        values = sparse.values[a:b]
        m = b - a
        feat = sparse.feature_of_entries(a, b)
        idx = np.arange(m)
        new_feature = np.concatenate([[True], feat[1:] != feat[:-1]])
        seg_start = _segment_first(new_feature, idx)
        firsts = np.flatnonzero(new_feature)
        last_of_feature = np.concatenate([new_feature[1:], [True]])
        # A cut (a threshold) after entry i: the next entry is smaller or another feature's.
        is_cut = last_of_feature | np.concatenate([values[:-1] > values[1:], [True]])
        lab = labels[sparse.rows[a:b]].astype(np.int32)  # (m, C)
        cum = np.cumsum(lab, axis=0, dtype=np.int32)
        before = np.where(seg_start[:, None] > 0, cum[seg_start - 1], 0)
        tp = cum - before
        del before
        predicted = (idx - seg_start + 1).astype(np.float32)
        f1 = np.float32(2.0) * tp.astype(np.float32) / (predicted[:, None] + pos32[None, :])
        f1[~is_cut] = -1.0
        fs = feat[firsts]
        seg_best = np.maximum.reduceat(f1, firsts, axis=0)  # (features here, C)
        hit = f1 == seg_best[np.searchsorted(firsts, seg_start)]
        first_hit = np.minimum.reduceat(np.where(hit, idx[:, None], m), firsts, axis=0)
        best[fs] = seg_best
        threshold[fs] = values[first_hit]
        pos_entries[fs] = tp[np.concatenate([firsts[1:], [m]]) - 1]
        del f1, hit, tp
        # Average ranks (ascending, ties averaged) of the entries in their whole column:
        # below them the zeros and the smaller entries; a run of equal values shares.
        new_run = new_feature | np.concatenate([[False], values[1:] != values[:-1]])
        run_start = _segment_first(new_run, idx) - seg_start  # in the feature's entries
        run_end = (m - 1 - _segment_first(is_cut[::-1], idx)[::-1]) - seg_start + 1
        size = counts[feat]
        rank = zeros[feat] + (2.0 * size - run_start - run_end + 1) / 2.0
        rank_sum[fs] = np.add.reduceat(rank[:, None] * lab, firsts, axis=0)
    # The zero block: a threshold of 0 predicts every row (when the feature has zeros,
    # it is a candidate of its own, taken only when strictly better: a higher threshold
    # wins ties, as in best_f1); its rows take the block's average rank.
    zero_f1 = np.float32(2.0) * pos32 / (np.float32(n) + pos32)
    take_zero = (zeros[:, None] > 0) & (zero_f1[None, :] > best)
    best = np.where(take_zero, zero_f1[None, :], best)
    threshold = np.where(take_zero, np.float32(0.0), threshold)
    best = np.where(positives[None, :] > 0, best, np.float32(0.0))
    rank_sum += (positives[None, :] - pos_entries) * (zeros[:, None] + 1) / 2.0
    negatives = n - positives
    auc = (rank_sum - positives * (positives + 1) / 2.0) / np.maximum(positives * negatives, 1)
    auc = np.where((positives > 0) & (negatives > 0), auc, 0.5)
    return best.astype(np.float32), threshold, auc


def concept_recovery(sae_acts, pooled, labels, concept_names, *, return_matrices=False):
    """Best SAE feature and best raw neuron (either sign) for each concept.

    ``sae_acts (n, F)`` (dense, or :class:`SparseActivations` sorted by value),
    ``pooled (n, D)``, ``labels (n, C)`` bool. Returns the
    ``concepts.json`` dict: ``{"rows": [...], "summary": {...}}``; with
    ``return_matrices`` also the SAE's ``(F, C)`` best-F1 and AUROC matrices.
    """
    labels = np.asarray(labels, bool)
    n, c = labels.shape
    if len(concept_names) != c:
        raise ValueError(f"{len(concept_names)} concept names for {c} label columns")
    acts_rows = (sae_acts.num_rows if isinstance(sae_acts, SparseActivations)
                 else np.shape(sae_acts)[0])
    if acts_rows != n or np.shape(pooled)[0] != n:
        raise ValueError(f"rows differ: sae_acts {acts_rows} rows, pooled "
                         f"{np.shape(pooled)}, labels {labels.shape}")
    d = np.shape(pooled)[1]
    pooled = np.asarray(pooled, np.float32)
    if isinstance(sae_acts, SparseActivations):
        sae_f1, sae_thr, sae_auc = sparse_best_f1_auroc(sae_acts, labels)
        scores = np.concatenate([pooled, -pooled], axis=1)  # both signs of every neuron
    else:  # SAE features and both signs of every neuron in one matrix: one sort, one compile
        scores = np.concatenate([np.asarray(sae_acts, np.float32), pooled, -pooled], axis=1)
    f1_all, thr_all = best_f1(scores, labels)
    auc_all = np.asarray(auroc(scores, labels))
    num_features = scores.shape[1] - 2 * d
    if num_features:
        sae_f1, sae_thr, sae_auc = (f1_all[:num_features], thr_all[:num_features],
                                    auc_all[:num_features])
    neuron_f1, neuron_auc = f1_all[num_features:], auc_all[num_features:]
    feature = np.argmax(sae_f1, axis=0)
    neuron_pick = np.argmax(neuron_f1, axis=0)

    rows = []
    for j, name in enumerate(concept_names):
        fj, nj = int(feature[j]), int(neuron_pick[j])
        rows.append({
            "concept": name,
            "positives": int(labels[:, j].sum()),
            "feature": fj,
            "sae_f1": float(sae_f1[fj, j]),
            "sae_auroc": float(sae_auc[fj, j]),
            "sae_threshold": float(sae_thr[fj, j]),
            "neuron": nj % d,
            "neuron_sign": 1 if nj < d else -1,
            "neuron_f1": float(neuron_f1[nj, j]),
            "neuron_auroc": float(neuron_auc[nj, j]),
        })
    summary = {
        "mean_sae_f1": float(np.mean([r["sae_f1"] for r in rows])) if rows else 0.0,
        "mean_neuron_f1": float(np.mean([r["neuron_f1"] for r in rows])) if rows else 0.0,
        "recovered": int(sum(r["sae_f1"] >= RECOVERED_F1 for r in rows)),
        "total": len(rows),
        "num_builds": int(n),
    }
    result = {"rows": rows, "summary": summary}
    return (result, sae_f1, sae_auc) if return_matrices else result


def write_concepts(path: str | os.PathLike, result: dict) -> None:
    write_json(path, result)


def load_concepts(path: str | os.PathLike) -> dict | None:
    """The ``concepts.json`` dict, or None when the file does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
