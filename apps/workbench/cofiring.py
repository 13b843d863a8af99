"""The features that fire together with one feature, by Jaccard index over the analysis
builds: both active on a build / either active. Unlike the share of the feature's builds
that another fires on, the index does not favour features that fire on everything."""

from __future__ import annotations

import numpy as np

TOP = 8


def fires_together(both: np.ndarray, active: np.ndarray, feature: int, *, top: int = TOP
                   ) -> list[dict]:
    """``both (F,)``: builds where ``feature`` and each feature are active (its own entry:
    its active count), ``active (F,)``: each feature's active count. Returns the ``top``
    other features by Jaccard index (ties by id), each ``{"feature", "both", "share",
    "jaccard"}`` (``share``: of ``feature``'s active builds); empty when it never fires."""
    both, active = np.asarray(both, np.int64), np.asarray(active, np.int64)
    if both.shape != active.shape or both.ndim != 1:
        raise ValueError(f"both {both.shape} and active {active.shape} must be (F,) each")
    if not 0 <= feature < len(both):
        raise IndexError(f"feature {feature} is outside 0..{len(both) - 1}")
    own = int(active[feature])
    if own <= 0:
        return []
    if both[feature] != own:
        raise ValueError(f"feature {feature}: co-activation with itself {both[feature]} is not "
                         f"its active count {own}")
    union = own + active - both
    jaccard = np.where(union > 0, both / np.maximum(union, 1), 0.0)
    jaccard[feature] = 0.0
    ids = np.flatnonzero(jaccard > 0)
    ids = ids[np.lexsort((ids, -jaccard[ids]))][:top]
    return [{"feature": int(g), "both": int(both[g]), "share": float(both[g] / own),
             "jaccard": float(jaccard[g])} for g in ids]
