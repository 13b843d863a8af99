"""A feature's examples across its whole range of activation, not only its strongest.

The top builds show what a feature fires hardest on; what it does at middling strength is
often different (a broader or weaker form of the same thing, or something else). So the
feature page also shows builds from equal-count bands of the feature's active builds
(quantiles, strongest first, the last ending at the weakest active build), a few evenly
spaced from each: the intervals grid of SAE dashboards.
"""

from __future__ import annotations

import numpy as np

from sae_jax.activity import is_active

BANDS = 5
PER_BAND = 4


def activation_bands(rows: np.ndarray, values: np.ndarray, *, bands: int = BANDS,
                     per_band: int = PER_BAND) -> list[dict]:
    """``rows``/``values``: one feature's entries (any order). Returns up to ``bands`` bands
    of its active entries, strongest first, each ``{"band", "top_percent",
    "bottom_percent", "high", "low", "count", "examples": [(row, value)...]}`` (percent of
    the active builds from the strongest; ``high``/``low``: the band's activation range);
    fewer bands when there are too few builds to give each ``per_band`` examples."""
    if bands < 1 or per_band < 1:
        raise ValueError(f"bands and per_band must be >= 1, got {bands} and {per_band}")
    rows, values = np.asarray(rows), np.asarray(values)
    if rows.shape != values.shape or rows.ndim != 1:
        raise ValueError(f"rows {rows.shape} and values {values.shape} must be one same-length "
                         "vector each")
    keep = is_active(values)
    rows, values = rows[keep], values[keep]
    order = np.lexsort((rows, -values))  # strongest first, ties by row: deterministic
    rows, values = rows[order], values[order]
    n = len(values)
    if n == 0:
        return []
    count = min(bands, max(1, n // per_band))
    edges = np.linspace(0, n, count + 1).round().astype(np.int64)
    out = []
    for b in range(count):
        lo, hi = int(edges[b]), int(edges[b + 1])
        size = hi - lo
        k = min(per_band, size)
        # The centres of k equal slices of the band: spread over it, never only its top.
        picks = lo + (2 * np.arange(k) + 1) * size // (2 * k)
        out.append({"band": b, "top_percent": 100.0 * lo / n, "bottom_percent": 100.0 * hi / n,
                    "high": float(values[lo]), "low": float(values[hi - 1]), "count": size,
                    "examples": [(int(rows[p]), float(values[p])) for p in picks]})
    return out
