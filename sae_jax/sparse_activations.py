"""SAE activations kept sparse: only the positive entries, grouped by feature.

An SAE's activations are non-negative (every architecture ReLUs or thresholds) and
sparse, so a dense ``(n, F)`` matrix wastes nearly all of its bytes: 24,576 features x
100,000 builds would be 9.8 GB of float32. :class:`SparseActivations` keeps, per feature,
the rows where it is positive and its values there (8 bytes an entry; a feature that is
zero on a row has no entry). Everything that needs whole columns (exact concept F1 and
AUROC, top rows, histograms, co-activation) reads them from here.

:func:`collect` builds one from a stream of ``(h (B, F), valid (B,))`` batches, batch by
batch, without ever holding the dense matrix; :meth:`SparseActivations.sort_by_value`
then orders each feature's entries by descending value (ties by ascending row).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from runkit.progress import show_progress

SORT_CHUNK = 1 << 22  # entries sorted at once: bounds the sort's temporary memory


@dataclass
class SparseActivations:
    """Positive activations of ``num_features`` features over ``num_rows`` rows, by feature
    (compressed sparse columns): feature ``f``'s entries are ``rows[indptr[f]:indptr[f+1]]``
    with values ``values[...]``; zero everywhere else."""

    num_rows: int
    indptr: np.ndarray  # (F + 1,) int64
    rows: np.ndarray  # (nnz,) int32
    values: np.ndarray  # (nnz,) float32, all > 0

    @property
    def num_features(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.rows.nbytes + self.values.nbytes

    def counts(self) -> np.ndarray:
        """``(F,)`` entries (positive rows) per feature."""
        return np.diff(self.indptr)

    def feature_of_entries(self, start: int, stop: int) -> np.ndarray:
        """The feature of every entry in ``[start, stop)``, ``(stop - start,)`` int32."""
        first = np.searchsorted(self.indptr, start, side="right") - 1
        last = np.searchsorted(self.indptr, stop, side="left")
        bounds = np.clip(self.indptr[first:last + 1], start, stop) - start
        return np.repeat(np.arange(first, last, dtype=np.int32), np.diff(bounds))

    def dense(self, features=None) -> np.ndarray:
        """``(n, len(features))`` float32 columns (all features when None): for tests and
        small selections only."""
        features = np.arange(self.num_features) if features is None else np.asarray(features)
        out = np.zeros((self.num_rows, len(features)), np.float32)
        for j, f in enumerate(features):
            a, b = self.indptr[f], self.indptr[f + 1]
            out[self.rows[a:b], j] = self.values[a:b]
        return out

    def feature_chunks(self, max_entries: int):
        """Yield ``(f0, f1)`` feature ranges whose entries number about ``max_entries``
        (a single feature with more entries is a chunk of its own)."""
        f0, num = 0, self.num_features
        while f0 < num:
            target = self.indptr[f0] + max_entries
            f1 = int(np.searchsorted(self.indptr, target, side="right")) - 1
            f1 = min(max(f1, f0 + 1), num)
            yield f0, f1
            f0 = f1

    def sort_by_value(self) -> SparseActivations:
        """Order each feature's entries by descending value, ties by ascending row (in
        place; returns ``self``). Rows must be ascending within each feature before, as
        :func:`collect` leaves them: the sort is stable."""
        for f0, f1 in self.feature_chunks(SORT_CHUNK):
            a, b = int(self.indptr[f0]), int(self.indptr[f1])
            if b - a < 2:
                continue
            feat = self.feature_of_entries(a, b).astype(np.uint64) - np.uint64(f0)
            # A non-negative float32's bits order like its value: invert them to descend.
            inverted = np.uint64(0xFFFFFFFF) - self.values[a:b].view(np.uint32).astype(np.uint64)
            order = np.argsort((feat << np.uint64(32)) | inverted, kind="stable")
            self.rows[a:b] = self.rows[a:b][order]
            self.values[a:b] = self.values[a:b][order]
        return self


def collect(batches: Iterable, num_features: int, *, total_rows: int | None = None,
            desc: str | None = None) -> SparseActivations:
    """Gather the positive entries of a stream of ``(h (B, F), valid (B,))`` batches (rows
    numbered in stream order, padding rows skipped). ``total_rows`` sizes the progress bar
    (shown when ``desc`` is given)."""
    parts = []  # per batch: (feature, row, value) of its entries, feature-major
    counts = np.zeros(num_features, np.int64)
    offset = 0
    bar = show_progress(total=total_rows, desc=desc, unit="row", leave=False,
                        disable=desc is None)
    for h, valid in batches:
        h = np.asarray(h)
        valid = np.asarray(valid, bool)
        if h.ndim != 2 or h.shape[1] != num_features:
            raise ValueError(f"activation batch of shape {h.shape}; expected (B, "
                             f"{num_features})")
        h = h[valid] if not valid.all() else h
        if (h < 0).any():
            raise ValueError("SAE activations must be non-negative; got a negative value in "
                             f"rows {offset}..{offset + len(h) - 1}")
        ht = np.ascontiguousarray(h.T)  # (F, b): nonzero then lists entries feature-major
        feat, row = np.nonzero(ht > 0)
        parts.append((feat.astype(np.int32), (row + offset).astype(np.int32), ht[feat, row]))
        counts += np.bincount(feat, minlength=num_features)
        offset += len(h)
        bar.update(len(h))
    bar.close()
    if offset >= 2**31:
        raise ValueError(f"{offset} rows do not fit int32 row numbers")
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.empty(indptr[-1], np.int32)
    values = np.empty(indptr[-1], np.float32)
    filled = indptr[:-1].copy()  # next free slot of each feature
    while parts:
        feat, row, val = parts.pop(0)  # freed as it is placed
        batch_counts = np.bincount(feat, minlength=num_features)
        batch_start = np.concatenate([[0], np.cumsum(batch_counts)[:-1]])
        where = filled[feat] + (np.arange(len(feat)) - batch_start[feat])
        rows[where] = row
        values[where] = val
        filled += batch_counts
    return SparseActivations(offset, indptr, rows, values)
