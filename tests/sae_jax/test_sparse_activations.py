"""Sparse activations: collected from padded batches, sorted by value, equal to the dense."""

import numpy as np
import pytest

from sae_jax.sparse_activations import SparseActivations, collect


def _padded(h, batch_size):
    for start in range(0, len(h), batch_size):
        part = h[start:start + batch_size]
        valid = np.ones(batch_size, bool)
        if len(part) < batch_size:  # padding rows with values that must not be kept
            valid[len(part):] = False
            part = np.concatenate([part, np.full((batch_size - len(part), h.shape[1]), 7.0,
                                                 np.float32)])
        yield part, valid


@pytest.fixture(scope="module")
def acts():
    rng = np.random.default_rng(4)
    h = np.maximum(rng.normal(size=(97, 11)) - 0.8, 0.0).astype(np.float32)
    h[:, 2] = 0.0  # never positive
    h[:, 5] = np.round(h[:, 5], 1)  # ties
    h[:, 9] = 0.5 + rng.random(97).astype(np.float32)  # positive everywhere
    return h


def test_collect_keeps_every_positive_entry_and_no_padding(acts):
    sparse = collect(_padded(acts, 16), acts.shape[1])
    assert sparse.num_rows == len(acts) and sparse.num_features == acts.shape[1]
    assert sparse.nnz == int((acts > 0).sum())
    np.testing.assert_array_equal(sparse.counts(), (acts > 0).sum(0))
    np.testing.assert_array_equal(sparse.dense(), acts)
    for f in range(acts.shape[1]):  # rows ascend within a feature before sorting
        rows = sparse.rows[sparse.indptr[f]:sparse.indptr[f + 1]]
        assert np.all(np.diff(rows) > 0)


def test_sort_by_value_descends_with_ties_by_row(acts, monkeypatch):
    import sae_jax.sparse_activations as module

    monkeypatch.setattr(module, "SORT_CHUNK", 40)  # several chunks, one feature past a chunk
    sparse = collect(_padded(acts, 32), acts.shape[1]).sort_by_value()
    np.testing.assert_array_equal(sparse.dense(), acts)
    for f in range(acts.shape[1]):
        a, b = sparse.indptr[f], sparse.indptr[f + 1]
        order = np.lexsort((np.arange(len(acts)), -acts[:, f]))[:b - a]
        np.testing.assert_array_equal(sparse.rows[a:b], order)


def test_feature_of_entries_and_chunks(acts):
    sparse = collect([(acts, np.ones(len(acts), bool))], acts.shape[1])
    feat = np.repeat(np.arange(acts.shape[1]), sparse.counts())
    for start, stop in [(0, sparse.nnz), (3, 50), (50, 51), (10, 10)]:
        np.testing.assert_array_equal(sparse.feature_of_entries(start, stop), feat[start:stop])
    chunks = list(sparse.feature_chunks(30))
    assert chunks[0][0] == 0 and chunks[-1][1] == acts.shape[1]
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        collect([(np.array([[0.5, -0.1]], np.float32), np.ones(1, bool))], 2)
    with pytest.raises(ValueError, match=r"expected \(B, 3\)"):
        collect([(np.zeros((2, 2), np.float32), np.ones(2, bool))], 3)
    empty = collect([], 3)
    assert isinstance(empty, SparseActivations) and empty.nnz == 0 and empty.num_rows == 0
