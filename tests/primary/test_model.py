"""Properties of SetCompletionModel that the original's design promises."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from primary.model import PrimaryConfig, _Keys, count_params, create_model

VOCAB, WEAPONS, PAD = 140, 78, 139  # the sizes of the training tests, to share compiled ops


@functools.partial(jax.jit, static_argnames="graphdef")
def _pooled_and_last_layer(params, tokens, weapons, mask, *, graphdef):
    """(pooled (b, D), output of the last set-transformer layer (b, n, D)), one compile."""
    model = nnx.merge(graphdef, params)
    e = model.ability_embedding(tokens) + model.weapon_embedding(weapons)
    x = model.input_proj(e) if model.input_proj is not None else e
    for layer in model.transformer_layers:
        x = layer(x, mask, keys=_Keys(None))
    return model.pooled(tokens, weapons, mask), x


@functools.partial(jax.jit, static_argnames="graphdef")
def _logits(params, tokens, weapons, mask, dropout_key=None, *, graphdef):
    return nnx.merge(graphdef, params)(tokens, weapons, mask, dropout_key=dropout_key)


def pooled(model, tokens, weapons, mask):
    graphdef, params = nnx.split(model, nnx.Param)
    return _pooled_and_last_layer(params, tokens, weapons, mask, graphdef=graphdef)[0]


def logits(model, tokens, weapons, mask, dropout_key=None):
    graphdef, params = nnx.split(model, nnx.Param)
    return _logits(params, tokens, weapons, mask, dropout_key, graphdef=graphdef)


def tiny_config(**over) -> PrimaryConfig:
    base = dict(vocab_size=VOCAB, weapon_vocab_size=WEAPONS, embedding_dim=8, hidden_dim=16,
                num_layers=1, num_heads=2, num_inducing_points=4, use_layer_norm=True,
                dropout=0.0, pad_token_id=PAD)
    base.update(over)
    return PrimaryConfig(**base)


def random_batch(seed: int, batch: int = 4, length: int = 6):
    """Right-padded token rows with 1..length real tokens each (never the pad id)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, batch)
    lengths[0] = length  # one full row, so no column is padding everywhere
    tokens = np.full((batch, length), PAD, np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.choice(PAD, size=n, replace=False)
    weapons = rng.integers(0, WEAPONS, (batch, 1)).astype(np.int32)
    return tokens, weapons, tokens == PAD, lengths


def test_extra_padding_changes_nothing():
    model = create_model(tiny_config(), seed=1)
    tokens, weapons, mask, _ = random_batch(0)
    padded = np.concatenate([tokens, np.full((len(tokens), 3), PAD, np.int32)], axis=1)
    a = pooled(model, tokens, weapons, mask)
    b = pooled(model, padded, weapons, padded == PAD)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_set_order_changes_nothing():
    model = create_model(tiny_config(), seed=1)
    tokens, weapons, mask, lengths = random_batch(1)
    rng = np.random.default_rng(7)
    shuffled = tokens.copy()
    for i, n in enumerate(lengths):
        shuffled[i, :n] = tokens[i, rng.permutation(n)]
    assert not np.array_equal(shuffled, tokens)
    a = pooled(model, tokens, weapons, mask)
    b = pooled(model, shuffled, weapons, shuffled == PAD)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_pooled_is_masked_mean_of_last_layer():
    model = create_model(tiny_config(), seed=1)
    tokens, weapons, mask, lengths = random_batch(2)
    tokens[1], lengths[1] = PAD, 1  # a row with a single token pools to that position
    tokens[1, 0] = 3
    mask = tokens == PAD
    graphdef, params = nnx.split(model, nnx.Param)
    got, x = _pooled_and_last_layer(params, tokens, weapons, mask, graphdef=graphdef)
    x = np.asarray(x)
    expected = np.stack([x[i, :n].mean(axis=0) for i, n in enumerate(lengths)])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], x[1, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_layer_norm, embedding_dim", [(False, 8), (True, 16)])
def test_variants_run(use_layer_norm, embedding_dim):
    cfg = tiny_config(use_layer_norm=use_layer_norm, embedding_dim=embedding_dim)
    model = create_model(cfg, seed=5)
    assert (model.input_proj is None) == (embedding_dim == cfg.hidden_dim)
    mab = model.transformer_layers[0].cross_attention
    assert (mab.layer_norm1 is None) == (not use_layer_norm)
    assert count_params(model) == expected_param_count(cfg)
    tokens, weapons, mask, _ = random_batch(3)
    out = logits(model, tokens, weapons, mask)
    assert out.shape == (len(tokens), VOCAB)
    assert np.isfinite(np.asarray(out)).all()


def test_dropout_only_with_a_key():
    model = create_model(tiny_config(dropout=0.3), seed=6)
    tokens, weapons, mask, _ = random_batch(4)
    plain = [np.asarray(logits(model, tokens, weapons, mask)) for _ in range(2)]
    np.testing.assert_array_equal(plain[0], plain[1])
    # "rbg" keys: the same semantics as the default keys, and a much quicker compile.
    k1, k2 = jax.random.key(0, impl="rbg"), jax.random.key(1, impl="rbg")
    d1 = np.asarray(logits(model, tokens, weapons, mask, k1))
    d1_again = np.asarray(logits(model, tokens, weapons, mask, k1))
    d2 = np.asarray(logits(model, tokens, weapons, mask, k2))
    np.testing.assert_array_equal(d1, d1_again)
    assert not np.allclose(d1, d2)
    assert not np.allclose(d1, plain[0])


def test_pad_embedding_row_is_zero_and_gets_no_gradient():
    model = create_model(tiny_config(), seed=1)
    graphdef, params = nnx.split(model, nnx.Param)
    table = params["ability_embedding"]["embedding"][...]
    np.testing.assert_array_equal(table[PAD], 0.0)
    tokens, weapons, mask, _ = random_batch(5)
    assert mask.any()

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(tokens, weapons, mask) ** 2)

    grad = jax.jit(jax.grad(loss))(params)["ability_embedding"]["embedding"][...]
    np.testing.assert_array_equal(grad[PAD], 0.0)
    used = np.unique(tokens[~mask])
    assert np.all(np.abs(np.asarray(grad)[used]).sum(axis=1) > 0)


def expected_param_count(c: PrimaryConfig) -> int:
    """Parameter count of the architecture in docs/original.md §3, term by term."""
    d, m = c.hidden_dim, c.num_inducing_points
    mha = 3 * d * d + 3 * d + d * d + d
    ff = d * 4 * d + 4 * d + 4 * d * d + d
    ln = 2 * d
    mab = mha + ff + (2 * ln if c.use_layer_norm else 0)
    isab = m * d + 2 * mab + ln
    pma = m * d + mab + d * d + d
    set_transformer = 2 * isab + pma + 2 * mab
    layer = set_transformer + mab + ff + (2 * ln if c.use_layer_norm else 0)
    embed = (c.vocab_size + c.weapon_vocab_size) * c.embedding_dim
    proj = c.embedding_dim * d + d if c.embedding_dim != d else 0
    return embed + proj + c.num_layers * layer + d * c.output_dim + c.output_dim


def test_published_size_shapes_without_allocating():
    cfg = PrimaryConfig(vocab_size=140, weapon_vocab_size=130)  # the original's defaults
    abstract = nnx.eval_shape(lambda: create_model(cfg))
    n = count_params(abstract)
    assert n == expected_param_count(cfg)
    assert n == 83_001_420  # "83.0 M parameters"
    state = nnx.state(abstract, nnx.Param)
    layer = state["transformer_layers"][2]
    assert layer["set_transformer"]["enc_layer1"]["mab1"]["mha"]["in_proj"]["kernel"].shape == (
        512, 1536)
    assert layer["set_transformer"]["dec_layer1"]["seed_vectors"].shape == (32, 512)
    assert state["input_proj"]["kernel"].shape == (32, 512)
    assert state["output_layer"]["kernel"].shape == (512, 140)



def test_shared_queries_equal_their_per_set_copies():
    """Learned queries (inducing points, PMA seeds) are projected once per batch; the
    result must equal projecting a copy for every set, as the original does."""
    from primary.model import MAB

    mab = MAB(16, 2, True, 0.0, rngs=nnx.Rngs(0))
    k1, k2 = jax.random.split(jax.random.key(7))
    points = jax.random.normal(k1, (4, 16))
    x = jax.random.normal(k2, (3, 5, 16))
    mask = jnp.asarray(random_batch(2, batch=3, length=5)[2])
    shared = mab(points, x, mask, keys=_Keys(None))
    per_set = mab(jnp.broadcast_to(points, (3, 4, 16)), x, mask, keys=_Keys(None))
    assert shared.shape == per_set.shape == (3, 4, 16)
    np.testing.assert_allclose(np.asarray(shared), np.asarray(per_set), rtol=1e-5, atol=1e-6)
    # The sets differ, so a shared result that ignored x would fail above; check it.
    assert float(jnp.max(jnp.abs(shared[0] - shared[1]))) > 1e-3
