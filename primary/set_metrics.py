"""Micro-averaged precision, recall and F1 of predicted token sets.

Every (example, token) pair of a multi-hot target counts once, so the scores
weigh frequent tokens by how often they occur.
"""

from __future__ import annotations


def scores_from_counts(tp: float, fp: float, fn: float) -> dict[str, float]:
    """``{"f1", "precision", "recall"}`` from true/false positive and false negative counts.

    An undefined ratio (nothing predicted, or nothing to find) is reported as 0.
    """
    tp, fp, fn = float(tp), float(fp), float(fn)
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}
