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

import os

import jax
import jax.numpy as jnp
import numpy as np

from runkit.jsonio import read_json, write_json
from runkit.progress import show_progress
from sae_jax.sparse_activations import SparseActivations

RECOVERED_F1 = 0.8  # a concept counts as recovered when its best SAE feature reaches this F1
CHUNK_ELEMENTS = 1 << 24  # (rows x features x concepts) per chunk: bounds device memory
SPARSE_CHUNK = 1 << 21  # entries (or dense column values) per chunk: bounds temporary memory


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


def _segment_scores(values, rows, feat, zeros_of, labels_t, positives):
    """Best F1, its threshold, positive entries and their rank sum, per (segment, concept),
    for entries grouped in segments (``feat``, non-decreasing) and sorted by descending
    value within each; ``zeros_of[segment]`` more rows of each column are zero (a tied
    block below the entries). ``labels_t (C, n)`` bool. Returns ``(segments, best (S, C),
    threshold (S, C), pos_entries (S, C), rank_sum (S, C))`` where ``segments`` lists the
    segment ids; best is -1 where a concept has no positive entry in a segment.

    Only a concept's positive entries are visited: the best cut ends a run of equal values
    that holds a positive (a cut after negatives only has the same true positives and more
    predicted), with true positives = the positives up to the run's end."""
    m = len(values)
    idx = np.arange(m)
    new_seg = np.concatenate([[True], feat[1:] != feat[:-1]])
    firsts = np.flatnonzero(new_seg)
    segments = feat[firsts]
    seg_start = _segment_first(new_seg, idx)
    size = np.diff(np.concatenate([firsts, [m]]))[np.cumsum(new_seg) - 1]
    run_end_flag = np.concatenate([new_seg[1:], [True]]) | np.concatenate(
        [values[:-1] != values[1:], [True]])
    new_run = new_seg | np.concatenate([[False], values[1:] != values[:-1]])
    run_start = _segment_first(new_run, idx)
    run_end = m - 1 - _segment_first(run_end_flag[::-1], idx)[::-1]  # inclusive
    # Average rank in the whole column (ascending, ties averaged): below an entry lie the
    # zeros and the smaller entries; a run of equal values shares its ranks.
    zeros = zeros_of[feat]
    rank = zeros + (2.0 * size - (run_start - seg_start) - (run_end + 1 - seg_start) + 1) / 2.0
    num_seg, num_c = len(segments), len(positives)
    seg_index = np.cumsum(new_seg) - 1
    best = np.full((num_seg, num_c), -1.0, np.float32)
    threshold = np.zeros((num_seg, num_c), np.float32)
    pos_entries = np.zeros((num_seg, num_c), np.int64)
    rank_sum = np.zeros((num_seg, num_c), np.float64)
    for c in range(num_c):
        pos = np.flatnonzero(labels_t[c][rows])  # this concept's positive entries
        if not len(pos):
            continue
        seg = seg_index[pos]
        per_seg = np.bincount(seg, minlength=num_seg)
        pos_entries[:, c] = per_seg
        rank_sum[:, c] = np.bincount(seg, weights=rank[pos], minlength=num_seg)
        # True positives at the end of each positive's run (the positives up to it, in
        # its segment); predicted = the run's end. A run of one ends at the positive.
        end = run_end[pos]
        upto = np.arange(1, len(pos) + 1)
        tied = np.flatnonzero(end != pos)
        upto[tied] = np.searchsorted(pos, end[tied], side="right")
        tp = upto - np.concatenate([[0], np.cumsum(per_seg)])[seg]
        predicted = end - seg_start[pos] + 1
        f1 = np.float32(2.0) * tp.astype(np.float32) / (
            predicted.astype(np.float32) + np.float32(positives[c]))
        starts = np.flatnonzero(np.concatenate([[True], seg[1:] != seg[:-1]]))
        seg_best = np.maximum.reduceat(f1, starts)
        which = np.cumsum(np.concatenate([[True], seg[1:] != seg[:-1]])) - 1
        hit = np.where(f1 == seg_best[which], np.arange(len(pos)), len(pos))
        first = np.minimum.reduceat(hit, starts)  # the highest threshold among ties
        best[seg[starts], c] = seg_best
        threshold[seg[starts], c] = values[end[first]]
    return segments, best, threshold, pos_entries, rank_sum


def _finish_scores(best, threshold, pos_entries, rank_sum, zeros, top, positives, n):
    """Complete ``(F, C)`` best F1, threshold and AUROC from :func:`_segment_scores`' parts
    of every column: the zero block of ``zeros[f]`` rows (a threshold of 0 predicts every
    row; taken only when strictly better, as a higher threshold wins ties) and the
    columns' ``top`` values (the threshold where a concept has no positives)."""
    pos32 = positives.astype(np.float32)
    zero_f1 = np.float32(2.0) * pos32 / (np.float32(n) + pos32)
    take_zero = (zeros[:, None] > 0) & (zero_f1[None, :] > best)
    best = np.where(take_zero, zero_f1[None, :], best)
    threshold = np.where(take_zero, np.float32(0.0), threshold)
    none = positives[None, :] == 0
    best = np.where(none, np.float32(0.0), best).astype(np.float32)
    threshold = np.where(none, top[:, None], threshold).astype(np.float32)
    rank_sum = rank_sum + (positives[None, :] - pos_entries) * (zeros[:, None] + 1) / 2.0
    negatives = n - positives
    auc = (rank_sum - positives * (positives + 1) / 2.0) / np.maximum(positives * negatives, 1)
    auc = np.where((positives > 0) & (negatives > 0), auc, 0.5)
    return best, threshold, auc


def sparse_best_f1_auroc(sparse: SparseActivations, labels, *, progress: bool = False
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`best_f1` and :func:`auroc` of value-sorted sparse activations: ``(F, C)``
    best F1 (float32), its threshold (float32) and AUROC (float64), equal to the dense
    functions' on ``sparse.dense()``. Work: each concept's positive entries."""
    labels = np.asarray(labels, bool)
    n, c = labels.shape
    if sparse.num_rows != n:
        raise ValueError(f"{sparse.num_rows} activation rows for {n} label rows")
    num = sparse.num_features
    positives = labels.sum(0).astype(np.int64)
    labels_t = np.ascontiguousarray(labels.T)
    zeros = n - sparse.counts()  # each feature's tied block of zeros
    best = np.full((num, c), -1.0, np.float32)
    threshold = np.zeros((num, c), np.float32)
    pos_entries = np.zeros((num, c), np.int64)
    rank_sum = np.zeros((num, c), np.float64)
    chunks = list(sparse.feature_chunks(SPARSE_CHUNK))
    for f0, f1 in show_progress(chunks, desc="concept recovery", unit="chunk", leave=False,
                                disable=not progress):
        a, b = int(sparse.indptr[f0]), int(sparse.indptr[f1])
        if a == b:
            continue
        feat = sparse.feature_of_entries(a, b)
        segs, *parts = _segment_scores(sparse.values[a:b], sparse.rows[a:b], feat, zeros,
                                       labels_t, positives)
        for whole, part in zip((best, threshold, pos_entries, rank_sum), parts):
            whole[segs] = part
    top = np.zeros(num, np.float32)
    filled = sparse.counts() > 0
    top[filled] = sparse.values[sparse.indptr[:-1][filled]]
    return _finish_scores(best, threshold, pos_entries, rank_sum, zeros, top, positives, n)


def dense_best_f1_auroc(scores, labels, *, progress: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`best_f1` and :func:`auroc` of dense ``scores (n, F)`` (any sign) through the
    same per-positive pass as the sparse form: each column sorted once, no zero block."""
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels, bool)
    n, num = scores.shape
    c = labels.shape[1]
    positives = labels.sum(0).astype(np.int64)
    labels_t = np.ascontiguousarray(labels.T)
    best = np.full((num, c), -1.0, np.float32)
    threshold = np.zeros((num, c), np.float32)
    pos_entries = np.zeros((num, c), np.int64)
    rank_sum = np.zeros((num, c), np.float64)
    width = max(1, SPARSE_CHUNK // max(n, 1))
    for f0 in show_progress(range(0, num, width), desc="neuron baseline", unit="chunk",
                            leave=False, disable=not progress):
        block = scores[:, f0:f0 + width]
        order = np.argsort(-block, axis=0, kind="stable")  # (n, w) descending per column
        values = np.take_along_axis(block, order, axis=0).T.ravel()
        rows = order.T.ravel().astype(np.int32)
        feat = np.repeat(np.arange(block.shape[1]), n)
        segs, *parts = _segment_scores(values, rows, feat, np.zeros(block.shape[1], np.int64),
                                       labels_t, positives)
        for whole, part in zip((best, threshold, pos_entries, rank_sum), parts):
            whole[f0 + segs] = part
    top = scores.max(0) if n else np.zeros(num, np.float32)
    return _finish_scores(best, threshold, pos_entries, rank_sum, np.zeros(num, np.int64),
                          top, positives, n)


def concept_recovery(sae_acts, pooled, labels, concept_names, *, return_matrices=False,
                     progress: bool = False):
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
        sae_f1, sae_thr, sae_auc = sparse_best_f1_auroc(sae_acts, labels, progress=progress)
    else:
        sae_f1, sae_thr, sae_auc = dense_best_f1_auroc(sae_acts, labels, progress=progress)
    # Both signs of every neuron.
    neuron_f1, _, neuron_auc = dense_best_f1_auroc(np.concatenate([pooled, -pooled], axis=1),
                                                   labels, progress=progress)
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
    return read_json(path, what="concept recovery file")


def assigned_concept(result: dict, feature: int) -> dict | None:
    """The concept ``feature`` is the detector of in the ``concepts.json`` dict ``result``
    (the first row naming it): ``{"name", "f1", "auroc", "best_detector": True}``, or None
    when no row names it. Whatever shows a feature's concept reads this one assignment: a
    feature's own best concept can be one that another feature detects better."""
    for row in result["rows"]:
        if row["feature"] == feature:
            return {"name": row["concept"], "f1": float(row["sae_f1"]),
                    "auroc": float(row["sae_auroc"]), "best_detector": True}
    return None
