"""Harvesting a block of primary batches grouped by length: the same pooled vectors as the
model's own forward on each row, whatever group, width or device count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from apps.training.chunk import batch_rows
from bridge.harvest_blocks import (
    BlockLayout,
    block_example_indices,
    create_staging,
    device_blocks,
    fits_example_table,
    gather_block,
    harvest_block,
    harvest_every_example,
    host_block,
    null_pooled_table,
    to_device,
)
from primary.examples import iterate_batches, make_examples
from runkit.sharding import make_mesh
from tests.tiny_setup import HIDDEN, primary_for, tiny_world


@pytest.fixture(scope="module")
def world():
    builds, vocab, weapon_vocab = tiny_world()
    examples = make_examples(builds, vocab, weapon_vocab, seed=2)
    return examples, primary_for(vocab, weapon_vocab)


@nnx.jit
def _pooled(model, tokens, weapons, mask):
    return model.pooled(tokens, weapons, mask)


def reference(model, examples, idx):
    """Each row alone at the full width of 16 (the widest padding there is)."""
    mask = examples.tokens[idx] == examples.pad_id
    return np.asarray(_pooled(model, jnp.asarray(examples.tokens[idx]),
                              jnp.asarray(examples.weapons[idx]), jnp.asarray(mask)))


def harvested(model, examples, indices, layout, mesh):
    graphdef, state = nnx.split(model)
    block = to_device(host_block(examples, layout, indices, 0), mesh)
    staging = harvest_block(graphdef, state, block, create_staging(layout, HIDDEN, mesh))
    table = null_pooled_table(model, examples.null_id, mesh)
    rows = jax.vmap(batch_rows, in_axes=(None, None, None, None, 0))(
        staging, table, block.is_null, block.weapons, jnp.arange(layout.batches))
    return np.asarray(rows), block


def test_block_rows_equal_the_models_pooled_vectors_at_any_width(world):
    examples, model = world
    layout = BlockLayout(batches=4, batch_size=8, group_rows=8)
    indices = block_example_indices(examples, seed=0, batch_size=8, batches_per_epoch=9,
                                    first_batch=0, num_batches=3)  # a short last block
    got, block = harvested(model, examples, indices, layout, make_mesh(jax.devices()[:1]))
    widths = {w for w, _ in block.groups}
    assert len(widths) >= 3  # several widths, so padding really differs between rows
    assert bool(np.asarray(block.is_null).any())  # some rows come from the weapon table
    want = reference(model, examples, indices.reshape(-1))
    np.testing.assert_allclose(got[:3].reshape(24, HIDDEN), want, rtol=1e-5, atol=2e-6)


def test_block_indices_follow_the_loops_batches(world):
    examples, _ = world
    per_epoch = len(examples) // 8
    indices = block_example_indices(examples, seed=5, batch_size=8, batches_per_epoch=per_epoch,
                                    first_batch=per_epoch - 1, num_batches=2)  # spans epochs
    want = [list(iterate_batches(examples, 8, seed=5, epoch=e))[b]
            for e, b in ((0, per_epoch - 1), (1, 0))]
    for i, batch in enumerate(want):
        np.testing.assert_array_equal(examples.weapons[indices[i]], batch["weapons"])
        np.testing.assert_array_equal(
            examples.tokens[indices[i], :batch["tokens"].shape[1]], batch["tokens"])
    with pytest.raises(ValueError, match="short"):
        block_example_indices(examples, seed=5, batch_size=8, batches_per_epoch=per_epoch + 1,
                              first_batch=per_epoch, num_batches=1)


def test_device_blocks_resume_mid_block_and_hold_the_loops_batches(world):
    examples, _ = world
    per_epoch = len(examples) // 8
    layout = BlockLayout(batches=4, batch_size=8, group_rows=8)
    total = 2 * per_epoch + 3  # spans epochs; the last block is short
    blocks = list(device_blocks(examples, layout, make_mesh(jax.devices()[:1]), seed=5,
                                batches_per_epoch=per_epoch, total_batches=total,
                                first_batch=6))  # mid-block: its block starts at 4
    starts = list(range(4, total, 4))
    assert [b.first_batch for b in blocks] == starts
    assert [b.num_batches for b in blocks] == [min(4, total - s) for s in starts]
    for b in blocks:
        want = block_example_indices(examples, seed=5, batch_size=8,
                                     batches_per_epoch=per_epoch, first_batch=b.first_batch,
                                     num_batches=b.num_batches)
        np.testing.assert_array_equal(np.asarray(b.weapons)[:b.num_batches],
                                      examples.weapons[want, 0])
    assert list(device_blocks(examples, layout, make_mesh(jax.devices()[:1]), seed=5,
                              batches_per_epoch=per_epoch, total_batches=total,
                              first_batch=total)) == []


def test_sharded_block_harvest_equals_single_device(world):
    examples, model = world
    layout = BlockLayout(batches=2, batch_size=8, group_rows=8)
    indices = block_example_indices(examples, seed=1, batch_size=8, batches_per_epoch=9,
                                    first_batch=2, num_batches=2)
    one, _ = harvested(model, examples, indices, layout, make_mesh(jax.devices()[:1]))
    four, _ = harvested(model, examples, indices, layout, make_mesh(jax.devices()[:4]))
    np.testing.assert_allclose(four, one, rtol=1e-5, atol=2e-6)


def test_layout_and_refusals(world):
    examples, _ = world
    assert BlockLayout.for_batch_size(32) == BlockLayout(128, 32, 128)
    assert BlockLayout.for_batch_size(256) == BlockLayout(16, 256, 256)
    assert BlockLayout.for_batch_size(5000).batches == 1
    with pytest.raises(ValueError, match="batch_size must be positive"):
        BlockLayout.for_batch_size(0)
    with pytest.raises(ValueError, match="does not fit the layout"):
        host_block(examples, BlockLayout(2, 8, 8), np.zeros((3, 8), int), 0)


def test_groups_never_outgrow_a_small_block():
    assert BlockLayout.for_batch_size(16, block_rows=64) == BlockLayout(4, 16, 16)
    assert BlockLayout.for_batch_size(16, block_rows=1024) == BlockLayout(64, 16, 128)


def test_every_example_table_gives_the_blocks_the_harvest_gives(world):
    """Each block read from the table of every example's pooled vector (harvested once)
    holds the vectors the block's own harvest computes, row for row."""
    examples, model = world
    graphdef, state = nnx.split(model)
    mesh = make_mesh(jax.devices()[:1])
    layout = BlockLayout(batches=4, batch_size=8, group_rows=8)
    table = harvest_every_example(graphdef, state, examples, layout, mesh, HIDDEN)
    assert table.shape == (-(-len(examples) // 8), 8, HIDDEN)
    null_table = null_pooled_table(model, examples.null_id, mesh)
    indices = block_example_indices(examples, seed=3, batch_size=8, batches_per_epoch=9,
                                    first_batch=9, num_batches=3)  # epoch 1, a short block
    want, block = harvested(model, examples, indices, layout, mesh)
    staging = gather_block(table, block.examples)
    got = jax.vmap(batch_rows, in_axes=(None, None, None, None, 0))(
        staging, null_table, block.is_null, block.weapons, jnp.arange(layout.batches))
    np.testing.assert_allclose(np.asarray(got)[:3], want[:3], rtol=1e-5, atol=1e-6)
    assert np.abs(want[:3]).sum() > 0


def test_the_table_is_kept_only_where_it_fits_the_buffer(world):
    examples, _ = world
    assert fits_example_table(examples, len(examples))
    assert not fits_example_table(examples, len(examples) - 1)
