"""Harvesting pooled vectors of the frozen primary into the activation buffer."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bridge.harvest import harvest_into_buffer, make_harvest_fn, pad_batch
from primary.model import PrimaryConfig, create_model
from primary.sharding import batch_sharding, make_mesh, replicate, shard_batch
from sae_jax.buffer import create_buffer, valid_rows

VOCAB, WEAPONS, HIDDEN = 20, 5, 16


def tiny_primary(seed=0):
    cfg = PrimaryConfig(vocab_size=VOCAB, weapon_vocab_size=WEAPONS, embedding_dim=8,
                        hidden_dim=HIDDEN, num_layers=1, num_heads=2, num_inducing_points=4)
    return create_model(cfg, seed)


def random_batch(seed, b=8, length=6):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, size=b)
    tokens = rng.integers(0, VOCAB - 1, size=(b, length))
    mask = np.arange(length)[None, :] >= lengths[:, None]
    tokens = np.where(mask, VOCAB - 1, tokens).astype(np.int32)
    weapons = rng.integers(0, WEAPONS, size=(b, 1)).astype(np.int32)
    weight = np.ones((b,), np.float32)
    return {"tokens": tokens, "weapons": weapons, "key_padding_mask": mask, "weight": weight}


def expected_pooled(model, batch):
    return np.asarray(model.pooled(jnp.asarray(batch["tokens"]), jnp.asarray(batch["weapons"]),
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
    model = tiny_primary(3)
    graphdef, state = nnx.split(model)
    batch = random_batch(5)
    a = harvest_into_buffer(graphdef, state, create_buffer(16, HIDDEN), batch)
    b, _ = make_harvest_fn(graphdef)(state, create_buffer(16, HIDDEN), batch)
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    np.testing.assert_allclose(np.asarray(valid_rows(a)), expected_pooled(model, batch),
                               rtol=1e-5, atol=1e-6)


def test_non_finite_activations_are_flagged_only_for_valid_rows():
    model = tiny_primary()
    weapons = model.weapon_embedding.embedding
    weapons[...] = weapons[...].at[2].set(jnp.nan)  # builds with weapon 2 give NaN vectors
    graphdef, state = nnx.split(model)
    harvest = make_harvest_fn(graphdef)
    batch = random_batch(7)
    batch["weapons"][:] = 0
    _, ok = harvest(state, create_buffer(16, HIDDEN), batch)
    assert bool(ok)
    batch["weapons"][3] = 2
    _, bad = harvest(state, create_buffer(16, HIDDEN), batch)
    assert not bool(bad)
    batch["weight"][3] = 0.0  # the NaN row is padding: not pushed, not a fault
    buf, ok = harvest(state, create_buffer(16, HIDDEN), batch)
    assert bool(ok) and np.isfinite(np.asarray(valid_rows(buf))).all()


def test_sharded_harvest_equals_single_device():
    model = tiny_primary(4)
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
