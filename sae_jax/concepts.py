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
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from runkit.jsonio import write_json

RECOVERED_F1 = 0.8  # a concept counts as recovered when its best SAE feature reaches this F1
CHUNK_ELEMENTS = 1 << 24  # (rows x features x concepts) per chunk: bounds device memory


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


def concept_recovery(sae_acts, pooled, labels, concept_names, *, return_matrices=False):
    """Best SAE feature and best raw neuron (either sign) for each concept.

    ``sae_acts (n, F)``, ``pooled (n, D)``, ``labels (n, C)`` bool. Returns the
    ``concepts.json`` dict: ``{"rows": [...], "summary": {...}}``; with
    ``return_matrices`` also the SAE's ``(F, C)`` best-F1 and AUROC matrices.
    """
    labels = np.asarray(labels, bool)
    n, c = labels.shape
    if len(concept_names) != c:
        raise ValueError(f"{len(concept_names)} concept names for {c} label columns")
    if np.shape(sae_acts)[0] != n or np.shape(pooled)[0] != n:
        raise ValueError(f"rows differ: sae_acts {np.shape(sae_acts)}, pooled "
                         f"{np.shape(pooled)}, labels {labels.shape}")
    # SAE features and both signs of every neuron in one matrix: one sort, one compile.
    num_features = np.shape(sae_acts)[1]
    d = np.shape(pooled)[1]
    pooled = np.asarray(pooled, np.float32)
    scores = np.concatenate([np.asarray(sae_acts, np.float32), pooled, -pooled], axis=1)
    f1_all, thr_all = best_f1(scores, labels)
    auc_all = np.asarray(auroc(scores, labels))
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
