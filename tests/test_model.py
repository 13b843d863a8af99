"""Properties of SetCompletionModel that the original's design promises."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from primary.model import PrimaryConfig, count_params, create_model

VOCAB, WEAPONS, PAD = 12, 5, 11


def tiny_config(**over) -> PrimaryConfig:
    base = dict(vocab_size=VOCAB, weapon_vocab_size=WEAPONS, embedding_dim=8, hidden_dim=16,
                num_layers=1, num_heads=2, num_inducing_points=3, use_layer_norm=True,
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
    a = model.pooled(tokens, weapons, mask)
    b = model.pooled(padded, weapons, padded == PAD)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_set_order_changes_nothing():
    model = create_model(tiny_config(), seed=2)
    tokens, weapons, mask, lengths = random_batch(1)
    rng = np.random.default_rng(7)
    shuffled = tokens.copy()
    for i, n in enumerate(lengths):
        shuffled[i, :n] = tokens[i, rng.permutation(n)]
    assert not np.array_equal(shuffled, tokens)
    a = model(tokens, weapons, mask)
    b = model(shuffled, weapons, shuffled == PAD)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _last_layer_output(model, tokens, weapons, mask):
    """The per-position output of the last set-transformer layer, rebuilt step by step."""
    e = model.ability_embedding(tokens) + model.weapon_embedding(weapons)
    x = model.input_proj(e) if model.input_proj is not None else e
    from primary.model import _Keys

    for layer in model.transformer_layers:
        x = layer(x, mask, keys=_Keys(None))
    return np.asarray(x)


def test_pooled_is_masked_mean_of_last_layer():
    model = create_model(tiny_config(num_layers=2), seed=3)
    tokens, weapons, mask, lengths = random_batch(2)
    x = _last_layer_output(model, tokens, weapons, mask)
    expected = np.stack([x[i, :n].mean(axis=0) for i, n in enumerate(lengths)])
    np.testing.assert_allclose(model.pooled(tokens, weapons, mask), expected, rtol=1e-5,
                               atol=1e-6)


def test_single_token_row_pools_to_that_position():
    model = create_model(tiny_config(), seed=4)
    tokens = np.full((2, 5), PAD, np.int32)
    tokens[0, 0], tokens[1, :3] = 4, [1, 2, 3]
    weapons = np.array([[0], [3]], np.int32)
    mask = tokens == PAD
    x = _last_layer_output(model, tokens, weapons, mask)
    np.testing.assert_allclose(model.pooled(tokens, weapons, mask)[0], x[0, 0], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("use_layer_norm", [True, False])
@pytest.mark.parametrize("embedding_dim", [8, 16])
def test_variants_run(use_layer_norm, embedding_dim):
    cfg = tiny_config(use_layer_norm=use_layer_norm, embedding_dim=embedding_dim)
    model = create_model(cfg, seed=5)
    assert (model.input_proj is None) == (embedding_dim == cfg.hidden_dim)
    mab = model.transformer_layers[0].cross_attention
    assert (mab.layer_norm1 is None) == (not use_layer_norm)
    assert count_params(model) == expected_param_count(cfg)
    tokens, weapons, mask, _ = random_batch(3)
    logits = model(tokens, weapons, mask)
    assert logits.shape == (len(tokens), VOCAB)
    assert np.isfinite(np.asarray(logits)).all()
    np.testing.assert_allclose(logits, model.head(model.pooled(tokens, weapons, mask)),
                               rtol=1e-6)


def test_dropout_only_with_a_key():
    model = create_model(tiny_config(dropout=0.3), seed=6)
    tokens, weapons, mask, _ = random_batch(4)
    plain = [np.asarray(model(tokens, weapons, mask)) for _ in range(2)]
    np.testing.assert_array_equal(plain[0], plain[1])
    graphdef, params = nnx.split(model, nnx.Param)
    with_key = jax.jit(lambda p, k: nnx.merge(graphdef, p)(tokens, weapons, mask, dropout_key=k))
    d1 = np.asarray(with_key(params, jax.random.key(0)))
    d1_again = np.asarray(with_key(params, jax.random.key(0)))
    d2 = np.asarray(with_key(params, jax.random.key(1)))
    np.testing.assert_array_equal(d1, d1_again)
    assert not np.allclose(d1, d2)
    assert not np.allclose(d1, plain[0])


def test_pad_embedding_row_is_zero_and_gets_no_gradient():
    model = create_model(tiny_config(), seed=7)
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
    """Parameter count of the architecture in REFERENCE.md §3, term by term."""
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

