"""Harvesting pooled vectors of the frozen primary into the activation buffer."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bridge.harvest import harvest_into_buffer, make_harvest_fn, pad_batch
from runkit.sharding import batch_sharding, make_mesh, replicate, shard_batch
from sae_jax.buffer import create_buffer, valid_rows
from tests.tiny_setup import HIDDEN, primary_for, tiny_world


def tiny_primary():
    _, vocab, weapon_vocab = tiny_world()
    return primary_for(vocab, weapon_vocab)


def random_batch(seed, b=8, length=6):
    _, vocab, weapon_vocab = tiny_world()
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, size=b)
    tokens = rng.integers(0, len(vocab), size=(b, length))
    tokens = np.where(tokens == vocab.pad_id, vocab.null_id, tokens)
    mask = np.arange(length)[None, :] >= lengths[:, None]
    tokens = np.where(mask, vocab.pad_id, tokens).astype(np.int32)
    weapons = rng.integers(0, len(weapon_vocab), size=(b, 1)).astype(np.int32)
    weight = np.ones((b,), np.float32)
    return {"tokens": tokens, "weapons": weapons, "key_padding_mask": mask, "weight": weight}


@nnx.jit
def _reference_pooled(model, tokens, weapons, mask):
    return model.pooled(tokens, weapons, mask)


def expected_pooled(model, batch):
    """The model's own pooled vectors (reference, jitted separately from the harvest path)."""
    return np.asarray(_reference_pooled(model, jnp.asarray(batch["tokens"]),
                                        jnp.asarray(batch["weapons"]),
                                        jnp.asarray(batch["key_padding_mask"])))


def test_harvest_equals_pooled_and_keeps_only_valid_rows():
    model = tiny_primary()
    graphdef, state = nnx.split(model)
    harvest = make_harvest_fn(graphdef)
    b1, b2 = random_batch(1), random_batch(2)
    b2["weight"][[1, 4, 5]] = 0.0  # padding rows: must not reach the buffer
    buf = create_buffer(32, HIDDEN)
    buf, ok1 = harvest(state, buf, b1)
    buf, ok2 = harvest(state, buf, b2)
    assert bool(ok1) and bool(ok2)
    kept = expected_pooled(model, b2)[b2["weight"] > 0]
    want = np.concatenate([expected_pooled(model, b1), kept])
    assert int(buf.fill) == len(want) == 13
    np.testing.assert_allclose(np.asarray(valid_rows(buf)), want, rtol=1e-5, atol=1e-6)


def test_harvest_into_buffer_matches_harvest_fn():
    model = tiny_primary()
    graphdef, state = nnx.split(model)
    batch = random_batch(5)
    a = harvest_into_buffer(graphdef, state, create_buffer(32, HIDDEN), batch)
    b, _ = make_harvest_fn(graphdef)(state, create_buffer(32, HIDDEN), batch)
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    np.testing.assert_allclose(np.asarray(valid_rows(a)), expected_pooled(model, batch),
                               rtol=1e-5, atol=1e-6)


def test_non_finite_activations_are_flagged_only_for_valid_rows():
    model = nnx.clone(tiny_primary())
    weapons = model.weapon_embedding.embedding
    weapons[...] = weapons[...].at[2].set(jnp.nan)  # builds with weapon 2 give NaN vectors
    graphdef, state = nnx.split(model)
    harvest = make_harvest_fn(graphdef)
    batch = random_batch(7)
    batch["weapons"][:] = 0
    _, ok = harvest(state, create_buffer(32, HIDDEN), batch)
    assert bool(ok)
    batch["weapons"][3] = 2
    _, bad = harvest(state, create_buffer(32, HIDDEN), batch)
    assert not bool(bad)
    batch["weight"][3] = 0.0  # the NaN row is padding: not pushed, not a fault
    buf, ok = harvest(state, create_buffer(32, HIDDEN), batch)
    assert bool(ok) and np.isfinite(np.asarray(valid_rows(buf))).all()


def test_sharded_harvest_equals_single_device():
    model = tiny_primary()
    graphdef, state = nnx.split(model)
    harvest = make_harvest_fn(graphdef)
    batch = random_batch(9, b=8)
    one, _ = harvest(state, create_buffer(24, HIDDEN), batch)
    mesh = make_mesh(jax.devices()[:4])
    buf = create_buffer(24, HIDDEN, sharding=batch_sharding(mesh))
    four, _ = harvest(replicate(state, mesh), buf, shard_batch(batch, mesh))
    assert four.data.sharding.is_equivalent_to(batch_sharding(mesh), 2)
    np.testing.assert_allclose(np.asarray(four.data), np.asarray(one.data), rtol=1e-5, atol=1e-6)


def test_pad_batch_appends_zero_weight_rows():
    batch = random_batch(11, b=3)
    padded = pad_batch(batch, 8)
    assert all(len(v) == 8 for v in padded.values())
    np.testing.assert_array_equal(padded["weight"], [1, 1, 1, 0, 0, 0, 0, 0])
    assert not padded["key_padding_mask"][3:].all(axis=1).any()  # no all-padding row


def test_harvest_array_streams_every_example_in_order():
    from bridge.harvest import harvest_array
    from primary.examples import iterate_batches, make_examples

    builds, vocab, weapon_vocab = tiny_world()
    examples = make_examples(builds.subset(np.arange(5)), vocab, weapon_vocab, seed=1)
    model = tiny_primary()
    got = harvest_array(model, examples, 8)  # 5 builds x 6 examples: last batch padded
    batches = list(iterate_batches(examples, 1000, seed=0, epoch=0, shuffle=False,
                                   drop_remainder=False))
    assert len(batches) == 1
    batch = batches[0]
    valid = np.asarray(batch["weight"]) > 0
    want = expected_pooled(model, batch)[valid]
    assert got.shape == (int(valid.sum()), HIDDEN) and got.shape[0] % 8 != 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_padding_to_full_width_leaves_harvest_unchanged():
    from primary.examples import pad_to_width

    _, vocab, _ = tiny_world()
    graphdef, state = nnx.split(tiny_primary())
    harvest = make_harvest_fn(graphdef)
    batch = random_batch(13)
    wide = pad_to_width(batch, 16, vocab.pad_id)
    assert wide["tokens"].shape == (8, 16) and wide["key_padding_mask"][:, 6:].all()
    assert (wide["tokens"][:, 6:] == vocab.pad_id).all()
    narrow_buf, _ = harvest(state, create_buffer(32, HIDDEN), batch)
    wide_buf, _ = harvest(state, create_buffer(32, HIDDEN), wide)
    np.testing.assert_allclose(np.asarray(wide_buf.data), np.asarray(narrow_buf.data),
                               rtol=1e-5, atol=1e-6)


def test_pooled_of_partial_builds_equals_the_full_width_forward_in_row_order():
    from bridge.harvest import pooled_of_inputs, pooled_of_partial_builds
    from primary.build_inputs import token_inputs
    from primary.partial_builds import partial_builds

    builds, vocab, weapon_vocab = tiny_world()
    part = partial_builds(builds, vocab, weapon_vocab, instances=3, seed=2)
    model = tiny_primary()
    # Batches of 8 over rows of several lengths: groups of each width, the last padded.
    got = pooled_of_partial_builds(model, part, vocab, weapon_vocab, batch_size=8)
    inputs = token_inputs(part.tokens, part.weapons, vocab, weapon_vocab)
    assert len(set((~inputs["key_padding_mask"]).sum(1).tolist())) > 2
    want = pooled_of_inputs(model, inputs, batch_size=8)
    assert got.shape == (len(part), HIDDEN)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
