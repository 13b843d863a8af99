"""Feature analysis of a trained SAE over a whole dataset, in one streaming pass on device.

Per feature (docs/original.md §7): firing count and frequency (active as
:mod:`sae_jax.activity` defines it: the original's ``|h| > 0.01``), activation sum
and mean when active, maximum, the top-k activating rows, a histogram over fixed
bins on ``(0, clip_max]``, and co-activation counts ``active^T active`` over a
chosen set of features. Then
the original's sparsity ranking and each feature's logit influence (its
decoder atom pushed through the primary's output layer, without bias).

The accumulators are device arrays updated by one jitted, donated function per
batch; batches have a fixed size with a ``valid`` row mask, so the last partial
batch does not trigger a recompile. At scale the same statistics come from the
positive entries alone (:func:`stats_from_sparse` over
:class:`~sae_jax.sparse_activations.SparseActivations`), with co-activation of
chosen features against all features (:func:`coactivation_counts`); the histogram
then spans the data's range when the architecture does not clip
(:func:`histogram_max`).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sae_jax.activity import (
    MAX_FREQUENCY,
    MIN_FREQUENCY,
    is_active,
    window_mask,
)
from sae_jax.sparse_activations import SparseActivations


class FeatureStats(NamedTuple):
    """Streaming accumulators. ``F`` features, ``k`` top rows, ``nb`` bins, ``N`` co-act features.

    num_rows ``()`` int32; active_count ``(F,)`` int32; act_sum ``(F,)`` float32 (sum of
    ``h`` over all rows, the original's numerator); max_act ``(F,)``; top_values / top_rows
    ``(F, k)`` (row = global index of the row in the stream, -1 while unfilled); hist
    ``(F, nb)`` int32 over ``(0, clip_max]``; coact ``(N, N)`` int32 over ``coact_features``.
    """

    num_rows: jax.Array
    active_count: jax.Array
    act_sum: jax.Array
    max_act: jax.Array
    top_values: jax.Array
    top_rows: jax.Array
    hist: jax.Array
    coact: jax.Array
    coact_features: jax.Array


def init_stats(num_features: int, *, top_k: int = 16, num_bins: int = 32,
               coact_features=None) -> FeatureStats:
    """Empty accumulators; ``coact_features`` (N,) ints selects the co-activation features
    (None = all, which costs ``F^2`` ints)."""
    if top_k <= 0 or num_bins <= 0:
        raise ValueError(f"top_k and num_bins must be positive, got {top_k}, {num_bins}")
    if coact_features is None:
        coact_features = np.arange(num_features)
    coact_features = np.asarray(coact_features, np.int32)
    if coact_features.size and (coact_features.min() < 0 or coact_features.max() >= num_features):
        raise IndexError(f"coact_features must lie in [0, {num_features}), got "
                         f"{coact_features.min()}..{coact_features.max()}")
    n = len(coact_features)
    return FeatureStats(
        num_rows=jnp.zeros((), jnp.int32),
        active_count=jnp.zeros((num_features,), jnp.int32),
        act_sum=jnp.zeros((num_features,), jnp.float32),
        max_act=jnp.zeros((num_features,), jnp.float32),
        top_values=jnp.full((num_features, top_k), -jnp.inf, jnp.float32),
        top_rows=jnp.full((num_features, top_k), -1, jnp.int32),
        hist=jnp.zeros((num_features, num_bins), jnp.int32),
        coact=jnp.zeros((n, n), jnp.int32),
        coact_features=jnp.asarray(coact_features),
    )


def histogram_edges(num_bins: int, clip_max: float) -> np.ndarray:
    """``(nb + 1,)`` fixed edges over ``(0, clip_max]``: ``0``, then log-spaced from
    ``clip_max / 1000`` to ``clip_max``, so small and large activations both resolve.
    Bin ``b`` holds ``(edges[b], edges[b + 1]]``."""
    if num_bins < 2:
        return np.array([0.0, clip_max])
    return np.concatenate([[0.0], np.geomspace(clip_max * 1e-3, clip_max, num_bins)])


@partial(jax.jit, static_argnames=("clip_max",), donate_argnums=0)
def update_stats(stats: FeatureStats, h: jax.Array, valid: jax.Array, row_offset: jax.Array,
                 *, clip_max: float) -> FeatureStats:
    """Fold one batch of activations ``h (B, F)`` into ``stats``.

    ``valid (B,)`` bool marks real rows; ``row_offset`` is the global index of row 0.
    """
    h = h.astype(jnp.float32)
    valid_f = valid.astype(jnp.float32)[:, None]
    hv = h * valid_f
    active = is_active(h) & valid[:, None]
    count = stats.active_count + active.sum(0, dtype=jnp.int32)
    act_sum = stats.act_sum + hv.sum(0)
    max_act = jnp.maximum(stats.max_act, jnp.where(valid[:, None], h, -jnp.inf).max(0))

    # Top-k merge: running best and this batch, side by side, one lax.top_k.
    k = stats.top_values.shape[1]
    rows = row_offset + jnp.arange(h.shape[0], dtype=jnp.int32)
    batch_vals = jnp.where(valid[:, None], h, -jnp.inf).T  # (F, B)
    cand_vals = jnp.concatenate([stats.top_values, batch_vals], axis=1)
    cand_rows = jnp.concatenate(
        [stats.top_rows, jnp.broadcast_to(rows, batch_vals.shape)], axis=1)
    top_values, pick = jax.lax.top_k(cand_vals, k)
    top_rows = jnp.take_along_axis(cand_rows, pick, axis=1)

    # Histogram over (0, clip_max] with fixed edges; zeros are not counted.
    nb = stats.hist.shape[1]
    upper = jnp.asarray(histogram_edges(nb, clip_max)[1:], h.dtype)
    bins = jnp.minimum(jnp.searchsorted(upper, h, side="left"), nb - 1)
    counted = ((h > 0) & valid[:, None]).astype(jnp.int32)
    feat = jnp.broadcast_to(jnp.arange(h.shape[1]), h.shape)
    hist = stats.hist.at[feat, bins].add(counted)

    # Co-activation counts of the chosen features (exact in float32 per batch).
    fired = (is_active(h[:, stats.coact_features]) & valid[:, None]).astype(jnp.float32)
    coact = stats.coact + jnp.round(fired.T @ fired).astype(jnp.int32)

    return FeatureStats(stats.num_rows + valid.sum(dtype=jnp.int32), count, act_sum, max_act,
                        top_values, top_rows, hist, coact, stats.coact_features)


def stats_from_batches(batches, num_features: int, *, clip_max: float, top_k: int = 16,
                       num_bins: int = 32, coact_features=None) -> FeatureStats:
    """Stream an iterable of ``(h (B, F), valid (B,))`` through :func:`update_stats`."""
    stats = init_stats(num_features, top_k=top_k, num_bins=num_bins,
                       coact_features=coact_features)
    offset = 0
    for h, valid in batches:
        stats = update_stats(stats, jnp.asarray(h), jnp.asarray(valid, bool),
                             jnp.int32(offset), clip_max=float(clip_max))
        offset += int(np.shape(h)[0])
    return stats


STATS_CHUNK = 1 << 22  # entries read at once by stats_from_sparse and coactivation_counts


def histogram_max(clip_max: float | None, sparse: SparseActivations) -> float:
    """The histogram's upper end: the architecture's clip when it has one, else the
    largest activation in the data (1.0 when nothing fires)."""
    if clip_max is not None:
        return float(clip_max)
    return float(sparse.values.max()) if sparse.nnz else 1.0


def stats_from_sparse(sparse: SparseActivations, *, top_k: int = 16,
                      hist_edges: np.ndarray) -> FeatureStats:
    """:class:`FeatureStats` (host arrays; no co-activation) of value-sorted ``sparse``
    activations (:meth:`~SparseActivations.sort_by_value`): the numbers
    :func:`stats_from_batches` streams, read from the positive entries. Top rows past a
    feature's positive entries are -1 with value -inf; ``hist_edges (nb + 1,)`` as
    :func:`histogram_edges` makes them (bin ``b`` holds ``(edges[b], edges[b + 1]]``,
    values past the last edge in the last bin)."""
    if top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    num = sparse.num_features
    starts, counts = sparse.indptr[:-1], sparse.counts()
    max_act = np.zeros(num, np.float32)
    filled = counts > 0
    max_act[filled] = sparse.values[starts[filled]]  # each feature's entries descend

    take = np.minimum(counts, top_k)
    top_values = np.full((num, top_k), -np.inf, np.float32)
    top_rows = np.full((num, top_k), -1, np.int32)
    slot = np.arange(top_k)
    keep = slot[None, :] < take[:, None]
    src = (starts[:, None] + slot[None, :])[keep]
    top_values[keep] = sparse.values[src]
    top_rows[keep] = sparse.rows[src]

    nb = len(hist_edges) - 1
    upper = np.asarray(hist_edges[1:], np.float32)
    hist = np.zeros(num * nb, np.int64)
    active_count = np.zeros(num, np.int64)
    act_sum = np.zeros(num, np.float64)
    for f0, f1 in sparse.feature_chunks(STATS_CHUNK):
        a, b = int(sparse.indptr[f0]), int(sparse.indptr[f1])
        if a == b:
            continue
        values = sparse.values[a:b]
        feat = sparse.feature_of_entries(a, b).astype(np.int64)
        bins = np.minimum(np.searchsorted(upper, values, side="left"), nb - 1)
        hist += np.bincount(feat * nb + bins, minlength=num * nb)
        active_count[f0:f1] = np.bincount(feat - f0, weights=is_active(values),
                                          minlength=f1 - f0).astype(np.int64)
        act_sum[f0:f1] = np.bincount(feat - f0, weights=values, minlength=f1 - f0)
    return FeatureStats(
        num_rows=np.int64(sparse.num_rows), active_count=active_count, act_sum=act_sum,
        max_act=max_act, top_values=top_values, top_rows=top_rows,
        hist=hist.reshape(num, nb), coact=np.zeros((0, 0), np.int64),
        coact_features=np.zeros(0, np.int32))


def coactive_features(counts: np.ndarray, feature: int, live: np.ndarray, top: int = 5
                      ) -> list[tuple[int, float]]:
    """``[(g, P(g fires | feature fires)), ...]``, the ``top`` largest over the ``live``
    features (neither dead nor dense) other than ``feature`` itself, from its row of
    :func:`coactivation_counts`; empty when the feature never fires."""
    if counts[feature] <= 0:
        return []
    ratio = np.where(live, counts / counts[feature], 0.0)
    ratio[feature] = 0
    return [(int(g), float(ratio[g])) for g in np.argsort(-ratio)[:top] if ratio[g] > 0]


def coactivation_counts(sparse: SparseActivations, features) -> np.ndarray:
    """``(S, F)`` int64: for each chosen feature ``features[s]`` and every feature ``g``,
    the rows where both are active (so ``[s, features[s]]`` is the feature's own count).

    A block of features at a time, their active entries as a sparse 0/1 ``(block, n)``
    matrix times the chosen features' dense 0/1 ``(n, S)`` columns: work in proportion to
    the active entries, exact in float32 while counts stay below 2**24 rows."""
    from scipy import sparse as scipy_sparse  # a dependency of jax

    features = np.asarray(features, np.int64)
    num, n = sparse.num_features, sparse.num_rows
    if features.size and (features.min() < 0 or features.max() >= num):
        raise IndexError(f"features must lie in [0, {num}), got "
                         f"{features.min()}..{features.max()}")
    if n >= 2**24:
        raise ValueError(f"{n} rows: float32 counts are exact only below 2**24")
    chosen = np.zeros((n, len(features)), np.float32)  # (n, S) active rows
    for s, f in enumerate(features):
        a, b = sparse.indptr[f], sparse.indptr[f + 1]
        chosen[sparse.rows[a:b][is_active(sparse.values[a:b])], s] = 1.0
    out = np.zeros((len(features), num), np.int64)
    if not len(features) or not n:
        return out
    for f0, f1 in sparse.feature_chunks(STATS_CHUNK):
        a, b = int(sparse.indptr[f0]), int(sparse.indptr[f1])
        active = is_active(sparse.values[a:b])
        feat = sparse.feature_of_entries(a, b)[active] - f0
        indptr = np.concatenate([[0], np.cumsum(np.bincount(feat, minlength=f1 - f0))])
        block = scipy_sparse.csr_matrix(
            (np.ones(len(feat), np.float32), sparse.rows[a:b][active], indptr),
            shape=(f1 - f0, n))
        out[:, f0:f1] = np.rint(block @ chosen).T.astype(np.int64)
    return out


class FeatureSummary(NamedTuple):
    """Host-side per-feature numbers derived from :class:`FeatureStats` (all ``(F,)``)."""

    frequency: np.ndarray  # fraction of rows where the feature is active
    mean_when_active: np.ndarray  # act_sum / active_count (0 where never active)
    score: np.ndarray  # mean_when_active / sqrt(frequency) (0 where never active)
    max_act: np.ndarray


def summarize(stats: FeatureStats) -> FeatureSummary:
    n = max(int(stats.num_rows), 1)
    count = np.asarray(stats.active_count, np.float64)
    freq = count / n
    mean = np.divide(np.asarray(stats.act_sum, np.float64), count, out=np.zeros_like(count),
                     where=count > 0)
    score = np.divide(mean, np.sqrt(freq), out=np.zeros_like(freq), where=freq > 0)
    return FeatureSummary(freq, mean, score, np.asarray(stats.max_act, np.float64))


def rank_features(summary: FeatureSummary, *, top_k: int | None = None,
                  min_frequency: float = MIN_FREQUENCY,
                  max_frequency: float = MAX_FREQUENCY) -> np.ndarray:
    """The original's sparsity ranking: keep ``min < frequency < max``, order by score
    (descending; ties by feature id), return the first ``top_k`` feature ids."""
    keep = np.flatnonzero(window_mask(summary.frequency, min_frequency=min_frequency,
                                      max_frequency=max_frequency))
    order = keep[np.lexsort((keep, -summary.score[keep]))]
    return order if top_k is None else order[:top_k]


def logit_influence(atoms: jax.Array, output_kernel: jax.Array) -> jax.Array:
    """``(F, V)``: each unit decoder atom ``(F, d_in)`` through the output layer's kernel
    ``(d_in, V)``, without bias: how a unit of the feature moves every token's logit."""
    return jnp.asarray(atoms) @ jnp.asarray(output_kernel)


def top_tokens(influence: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the ``n`` most promoted and the ``n`` most suppressed token ids,
    ``(F, n)`` each (promoted by descending influence, suppressed by ascending)."""
    influence = np.asarray(influence)
    n = min(n, influence.shape[1])
    promoted = np.argsort(-influence, axis=1, kind="stable")[:, :n]
    suppressed = np.argsort(influence, axis=1, kind="stable")[:, :n]
    return promoted, suppressed
