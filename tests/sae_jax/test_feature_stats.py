"""Streaming feature statistics equal one-shot numpy; ranking rule; logit influence."""

import numpy as np
import pytest

from sae_jax.feature_stats import (
    histogram_edges,
    logit_influence,
    rank_features,
    stats_from_batches,
    summarize,
    top_tokens,
)

CLIP = 6.0


@pytest.fixture(scope="module")
def acts():
    rng = np.random.default_rng(0)
    n, f = 203, 24  # not a multiple of the batch size: the last batch is partial
    h = np.clip(rng.normal(size=(n, f)) * 2 - 1.5, 0.0, CLIP).astype(np.float32)
    h[:, 3] = 0.0  # a dead feature
    h[5, 3] = 0.005  # below the activity threshold
    h[:, 4] = np.where(rng.random(n) < 0.5, 0.3, 0.0)  # a dense one
    h[10:14, 6] = CLIP  # values at the top edge
    return h


def _batches(h, batch_size):
    for start in range(0, len(h), batch_size):
        part = h[start:start + batch_size]
        valid = np.ones(batch_size, bool)
        if len(part) < batch_size:  # padded with garbage that must be ignored
            valid[len(part):] = False
            part = np.concatenate([part, np.full((batch_size - len(part), h.shape[1]), 5.5,
                                                 np.float32)])
        yield part, valid


@pytest.fixture(scope="module")
def stats(acts):
    return stats_from_batches(_batches(acts, 32), acts.shape[1], clip_max=CLIP, top_k=5,
                              num_bins=12)


def test_streaming_counts_sums_max_equal_numpy(acts, stats):
    assert int(stats.num_rows) == len(acts)
    np.testing.assert_array_equal(stats.active_count, (np.abs(acts) > 0.01).sum(0))
    np.testing.assert_allclose(stats.act_sum, acts.sum(0), rtol=1e-5)
    np.testing.assert_array_equal(stats.max_act, acts.max(0))


def test_topk_across_batches(acts, stats):
    for f in range(acts.shape[1]):
        expect = np.sort(acts[:, f])[::-1][:5]
        np.testing.assert_array_equal(stats.top_values[f], expect)
        rows = np.asarray(stats.top_rows[f])
        assert np.all((rows >= 0) & (rows < len(acts)))
        np.testing.assert_array_equal(acts[rows, f], expect)
        assert len(set(rows.tolist())) == 5


def test_histogram_equals_numpy(acts, stats):
    edges = histogram_edges(12, CLIP)
    for f in range(acts.shape[1]):
        col = acts[:, f]
        col = col[col > 0]
        # (lo, hi] bins: count values <= each upper edge, then difference.
        upto = np.array([(col <= e).sum() for e in edges[1:]])
        expect = np.diff(np.concatenate([[0], upto]))
        np.testing.assert_array_equal(stats.hist[f], expect, err_msg=f"feature {f}")


def test_coactivation_equals_numpy(acts, stats):
    fired = (acts > 0.01).astype(np.int64)  # active as sae_jax.activity defines it
    np.testing.assert_array_equal(stats.coact, fired.T @ fired)
    subset = np.array([4, 6, 0])
    sub = stats_from_batches(_batches(acts, 50), acts.shape[1], clip_max=CLIP,
                             coact_features=subset)
    np.testing.assert_array_equal(sub.coact, fired[:, subset].T @ fired[:, subset])


def test_summary_and_ranking_rule(acts, stats):
    s = summarize(stats)
    n = len(acts)
    count = (np.abs(acts) > 0.01).sum(0)
    freq = count / n
    np.testing.assert_allclose(s.frequency, freq)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, acts.sum(0) / count, 0.0)
        score = np.where(freq > 0, mean / np.sqrt(freq), 0.0)
    np.testing.assert_allclose(s.mean_when_active, mean, rtol=1e-5)
    np.testing.assert_allclose(s.score, score, rtol=1e-5)
    ranked = rank_features(s)
    keep = np.flatnonzero((freq > 0.01) & (freq < 0.30))
    assert set(ranked.tolist()) == set(keep.tolist())
    assert 3 not in ranked and 4 not in ranked  # dead and dense features are filtered
    assert np.all(np.diff(s.score[ranked]) <= 0)
    np.testing.assert_array_equal(rank_features(s, top_k=3), ranked[:3])


def test_ranking_window_edges():
    from sae_jax.feature_stats import FeatureSummary

    freq = np.array([0.01, 0.011, 0.2, 0.3, 0.29, 0.0])
    s = FeatureSummary(freq, np.ones(6), np.array([9.0, 1.0, 3.0, 9.0, 2.0, 0.0]), np.ones(6))
    np.testing.assert_array_equal(rank_features(s), [2, 4, 1])


def test_logit_influence_and_top_tokens():
    rng = np.random.default_rng(2)
    atoms = rng.normal(size=(5, 8)).astype(np.float32)
    kernel = rng.normal(size=(8, 11)).astype(np.float32)
    infl = np.asarray(logit_influence(atoms, kernel))
    np.testing.assert_allclose(infl, atoms @ kernel, rtol=1e-5, atol=1e-5)
    promoted, suppressed = top_tokens(infl, 3)
    for f in range(5):
        assert list(promoted[f]) == list(np.argsort(-infl[f])[:3])
        assert list(suppressed[f]) == list(np.argsort(infl[f])[:3])
        assert infl[f, promoted[f, 0]] == infl[f].max()
        assert infl[f, suppressed[f, 0]] == infl[f].min()


def test_sparse_statistics_equal_the_streamed_ones(acts, stats):
    from sae_jax.feature_stats import coactivation_counts, histogram_max, stats_from_sparse
    from sae_jax.sparse_activations import collect

    sparse = collect(_batches(acts, 32), acts.shape[1]).sort_by_value()
    got = stats_from_sparse(sparse, top_k=5, hist_edges=histogram_edges(12, CLIP))
    assert int(got.num_rows) == len(acts)
    np.testing.assert_array_equal(got.active_count, stats.active_count)
    np.testing.assert_allclose(got.act_sum, stats.act_sum, rtol=1e-5)
    np.testing.assert_array_equal(got.max_act, stats.max_act)
    np.testing.assert_array_equal(got.hist, stats.hist)
    # Top rows agree wherever the activation is positive; past that the sparse form has
    # no rows (-1, -inf) where the stream has zero-valued ones.
    positive = np.asarray(stats.top_values) > 0
    np.testing.assert_array_equal(got.top_values[positive], np.asarray(stats.top_values)[positive])
    np.testing.assert_array_equal(got.top_rows[positive], np.asarray(stats.top_rows)[positive])
    assert np.all(got.top_rows[~positive] == -1)
    fired = (acts > 0.01).astype(np.int64)
    chosen = [6, 4, 0, 3]
    np.testing.assert_array_equal(coactivation_counts(sparse, chosen),
                                  fired[:, chosen].T @ fired)
    # The histogram's range: the clip when there is one, else the data's largest value.
    assert histogram_max(2.5, sparse) == 2.5
    assert histogram_max(None, sparse) == pytest.approx(float(acts.max()))
