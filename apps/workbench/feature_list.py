"""The workbench's feature list: search, filter, sort and page over every feature of a run.

The table is made once per run from the run's index (:class:`apps.workbench.run_state.RunData`),
its explanations, labels and logit influence; a query is then a filter over plain arrays
and one list of search strings, never a pass over the builds.

The list opens (and ``GET /api/features`` answers with no parameters) on the
interpretable features: those firing on 1-30% of the analysis builds (the window), best
explained first (held-out explanation F1, then score); ``scope="all"`` lists every
feature. A search puts exact matches of a name first (:mod:`apps.workbench.search_rank`),
each tier in the list's order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from apps.workbench.run_state import RunData, search_text
from apps.workbench.search_rank import MatchKeys, match_tier
from sae_jax.activity import window_mask

SORTS = ("f1", "score", "frequency", "id")
SCOPES = ("window", "all")  # the 1-30% window, or every feature
DEFAULT_SORT, DEFAULT_SCOPE = "f1", "window"
MAX_LIMIT = 500
PAGE_SIZE = 50


@dataclass(frozen=True)
class FeatureQuery:
    """One request of the list. ``fmin``/``fmax``: frequency window in [0, 1]; ``scope``:
    the 1-30% window or all features. The defaults are the list page's."""

    q: str = ""
    sort: str = DEFAULT_SORT
    offset: int = 0
    limit: int = PAGE_SIZE
    fmin: float = 0.0
    fmax: float = 1.0
    scope: str = DEFAULT_SCOPE
    arch: str = ""

    def __post_init__(self):
        if self.sort not in SORTS:
            raise ValueError(f"sort: unknown order {self.sort!r}; one of {', '.join(SORTS)}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope: unknown scope {self.scope!r}; one of {', '.join(SCOPES)}")
        if self.offset < 0:
            raise ValueError(f"offset: must be >= 0, got {self.offset}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit: must be 1..{MAX_LIMIT}, got {self.limit}")
        for name in ("fmin", "fmax"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name}: a frequency in [0, 1], got {v}")
        if self.fmin > self.fmax:
            raise ValueError(f"fmin: {self.fmin} is above fmax {self.fmax}")


class FeatureTable:
    """Rows of every feature, made lazily on the first query."""

    def __init__(self, run: RunData):
        self.run = run
        self._lock = threading.Lock()
        self._ready = False

    def _build(self) -> None:
        run = self.run
        idx = run.index()
        self.num_features = len(idx["score"])
        explained = run.explanations().get("features") or {}
        self.f1 = np.full(self.num_features, np.nan)
        self.rule = [""] * self.num_features
        # Where each rule was read and how its precision stands to its recall.
        self.reading = [{}] * self.num_features
        for key, e in explained.items():
            f = int(key)
            if 0 <= f < self.num_features:
                self.f1[f] = e.get("f1", np.nan)
                self.rule[f] = e.get("rule_text", "")
                self.reading[f] = {k: e.get(k) for k in ("distribution", "precision", "recall",
                                                         "broader", "frequency_partial")}
        self.tokens = idx["top_tokens"].tolist()
        self.concept = [""] * self.num_features
        for r in (run.concepts() or {}).get("rows", []):
            if 0 <= r.get("feature", -1) < self.num_features:
                self.concept[r["feature"]] = r["concept"]
        self.labels = run.labels()
        self.search = [search_text(f, explained.get(str(f)), self.labels.get(str(f)),
                                   self.tokens[f], self.concept[f])
                       for f in range(self.num_features)]
        self.keys = [self._keys(f) for f in range(self.num_features)]
        self.in_window = window_mask(idx["frequency"])
        self._ready = True

    def _keys(self, f: int) -> MatchKeys:
        label = self.labels.get(str(f))
        return MatchKeys.of(f, [self.concept[f], label["name"] if label else ""], self.rule[f],
                            self.search[f])

    def ensure(self) -> None:
        with self._lock:
            if not self._ready:
                self._build()

    def relabel(self, feature: int) -> None:
        """Refresh one feature's label and search text after a label edit."""
        with self._lock:
            if not self._ready:
                return
            self.labels = self.run.labels()
            expl = (self.run.explanations().get("features") or {}).get(str(feature))
            self.search[feature] = search_text(feature, expl, self.labels.get(str(feature)),
                                               self.tokens[feature], self.concept[feature])
            self.keys[feature] = self._keys(feature)

    def query(self, query: FeatureQuery) -> dict:
        """``{"total", "offset", "limit", "sort", "scope", "counts", "features": [row...]}``:
        rows as in :meth:`row`; ``counts``: how many features pass the other filters in
        each scope (``{"window": n, "all": m}``, for the switch between them)."""
        self.ensure()
        idx = self.run.index()
        freq = idx["frequency"]
        keep = (freq >= query.fmin) & (freq <= query.fmax)
        if query.arch and query.arch != self.run.architecture:
            keep[:] = False
        ids = np.flatnonzero(keep)
        tiers = None
        if query.q.strip():
            graded = [(f, match_tier(query.q, self.keys[f])) for f in ids]
            ids = np.array([f for f, t in graded if t is not None], np.int64)
            tiers = np.array([t for _, t in graded if t is not None], np.int64)
        counts = {"window": int(self.in_window[ids].sum()), "all": int(len(ids))}
        if query.scope == "window":
            inside = self.in_window[ids]
            ids = ids[inside]
            tiers = tiers[inside] if tiers is not None else None
        order = np.lexsort(self._sort_keys(query.sort, ids, tiers))
        ordered = ids[order]
        page = ordered[query.offset:query.offset + query.limit]
        return {"total": int(len(ordered)), "offset": query.offset, "limit": query.limit,
                "sort": query.sort, "scope": query.scope, "counts": counts,
                "features": [self.row(int(f)) for f in page]}

    def _sort_keys(self, sort: str, ids: np.ndarray, tiers) -> tuple:
        """``np.lexsort`` keys, least significant first: the order ``sort`` names, ties by
        id; a search's match tier above all."""
        idx = self.run.index()
        if sort == "id":
            keys = (ids,)
        elif sort == "f1":  # the best explained first; features without one by score
            keys = (ids, -idx["score"][ids], -np.nan_to_num(self.f1, nan=-1.0)[ids])
        else:
            keys = (ids, -{"score": idx["score"], "frequency": idx["frequency"]}[sort][ids])
        return keys if tiers is None else (*keys, tiers)

    def row(self, f: int) -> dict:
        idx = self.run.index()
        label = self.labels.get(str(f))
        return {"id": f, "score": float(idx["score"][f]), "frequency": float(idx["frequency"][f]),
                "mean_when_active": float(idx["mean_when_active"][f]),
                "max_act": float(idx["max_act"][f]), "in_window": bool(self.in_window[f]),
                "f1": None if np.isnan(self.f1[f]) else float(self.f1[f]),
                "explanation": self.rule[f], "label": label["name"] if label else "",
                "distribution": self.reading[f].get("distribution"),
                "precision": self.reading[f].get("precision"),
                "recall": self.reading[f].get("recall"),
                "broader": bool(self.reading[f].get("broader")),
                # The list's frequency counts full builds; a feature read on partial builds
                # fires mostly there.
                "frequency_partial": self.reading[f].get("frequency_partial"),
                "tokens": self.tokens[f], "concept": self.concept[f]}
