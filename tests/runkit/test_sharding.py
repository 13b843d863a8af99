"""Data-parallel placement helpers over the 4 forced CPU devices."""

import jax
import numpy as np
import pytest

from runkit.sharding import (
    DATA_AXIS,
    batch_sharding,
    make_mesh,
    replicate,
    shard_batch,
)


def test_mesh_spans_all_devices_by_default_or_the_ones_given():
    assert make_mesh().shape == {DATA_AXIS: 4}
    assert make_mesh(jax.devices()[:2]).shape == {DATA_AXIS: 2}
    with pytest.raises(ValueError, match="at least one device"):
        make_mesh([])


def test_shard_batch_splits_rows_and_keeps_values():
    mesh = make_mesh()
    batch = {"tokens": np.arange(24, dtype=np.int32).reshape(8, 3),
             "weight": np.linspace(0, 1, 8, dtype=np.float32)}
    out = shard_batch(batch, mesh)
    for name, x in out.items():
        assert x.sharding.is_equivalent_to(batch_sharding(mesh), x.ndim)
        np.testing.assert_array_equal(np.asarray(x), batch[name])
        rows = sorted(s.index[0].start for s in x.addressable_shards)
        assert rows == [0, 2, 4, 6]


def test_replicate_puts_a_full_copy_everywhere():
    tree = {"w": np.ones((3, 2), np.float32)}
    out = replicate(tree, make_mesh())
    assert len(out["w"].addressable_shards) == 4
    assert all(s.data.shape == (3, 2) for s in out["w"].addressable_shards)


@pytest.mark.parametrize("rows", [6, 0])
def test_shard_batch_refuses_batches_that_do_not_split(rows):
    batch = {"tokens": np.zeros((rows, 3), np.int32)}
    msg = "batch size 6 is not divisible by the 4 devices" if rows else "empty batch"
    with pytest.raises(ValueError, match=f"my batch: {msg}"):
        shard_batch(batch, make_mesh(), where="my batch")


def test_shard_batch_refuses_disagreeing_leading_sizes():
    batch = {"tokens": np.zeros((8, 3)), "weight": np.zeros((4,))}
    with pytest.raises(ValueError, match="disagree on the batch size"):
        shard_batch(batch, make_mesh())


def test_per_process_placement_builds_the_same_array():
    """The several-processes path (each process copies only its devices' rows), forced in
    this one process, gives the array the single-process path gives."""
    mesh = make_mesh()
    batch = {"tokens": np.arange(24, dtype=np.int32).reshape(8, 3),
             "mask": np.arange(8) % 3 == 0}
    fast = shard_batch(batch, mesh)
    own = shard_batch(batch, mesh, per_process=True)
    for name in batch:
        assert own[name].sharding.is_equivalent_to(fast[name].sharding, own[name].ndim)
        assert own[name].dtype == fast[name].dtype
        np.testing.assert_array_equal(np.asarray(own[name]), batch[name])
        for a, b in zip(own[name].addressable_shards, fast[name].addressable_shards):
            assert a.index == b.index and a.device == b.device
            np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    with pytest.raises(ValueError, match="batch size 6 is not divisible by the 4 devices"):
        shard_batch({"tokens": np.zeros((6, 3))}, mesh, per_process=True)


def test_replicating_across_processes_goes_through_the_host():
    """The several-processes form of ``replicate`` (forced here in one process) gives full,
    readable copies of plain arrays and typed keys, and leaves replicated arrays alone."""
    from runkit.sharding import _replicate_across_processes, replicated

    mesh = make_mesh()
    sharding = replicated(mesh)
    x = _replicate_across_processes(jax.numpy.arange(3.0), sharding)
    assert x.sharding.is_equivalent_to(sharding, 1) and len(x.addressable_shards) == 4
    np.testing.assert_array_equal(np.asarray(x), [0.0, 1.0, 2.0])
    key = _replicate_across_processes(jax.random.key(7), sharding)
    assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    assert key.sharding.is_equivalent_to(sharding, 0)
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(jax.random.key(7)))
    assert _replicate_across_processes(x, sharding) is x
    np.testing.assert_array_equal(np.asarray(_replicate_across_processes([1, 2], sharding)), [1, 2])
