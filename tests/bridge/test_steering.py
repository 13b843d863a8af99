"""edit_feature and the hook modes: purity under jit/vmap/grad, identities, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bridge.steering import HookMode, edit_feature, edit_feature_params, hooked_forward
from primary.model import PrimaryConfig, create_model
from sae_jax.model import SAEConfig, create_sae, decode, encode

D_IN, D_SAE = 16, 48


@pytest.fixture(scope="module")
def sae():
    sae = create_sae(SAEConfig(input_dim=D_IN, expansion_factor=D_SAE / D_IN), seed=1)
    # A negative encoder bias shift keeps some features off, like a trained SAE.
    params = sae.params()
    params["b_enc"] = jax.random.normal(jax.random.key(5), (D_SAE,)) * 0.3
    params["b_dec"] = jax.random.normal(jax.random.key(6), (D_IN,)) * 0.1
    sae.set_params(params)
    return sae


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(0), (7, D_IN))


@pytest.fixture(scope="module")
def primary():
    cfg = PrimaryConfig(vocab_size=20, weapon_vocab_size=5, embedding_dim=8, hidden_dim=D_IN,
                        num_layers=1, num_heads=2, num_inducing_points=4)
    return create_model(cfg, seed=3)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 19, size=(5, 6)).astype(np.int32)
    tokens[:, 4:] = 19  # pad id is vocab_size - 1
    tokens[0, 2:] = 19
    mask = tokens == 19
    weapons = rng.integers(0, 5, size=(5, 1)).astype(np.int32)
    return jnp.asarray(tokens), jnp.asarray(weapons), jnp.asarray(mask)


@pytest.fixture(scope="module")
def model_logits(primary, batch):
    return primary(*batch)


def _manual_edit(sae, x, feature, value):
    params = sae.params()
    _, h = encode(params, x, sae.config.clip_max)
    h = np.array(h)
    h[..., feature] = value
    return np.asarray(decode(params, jnp.asarray(h)))


def test_edit_sets_the_feature_and_matches_manual_decode(sae, x):
    out = edit_feature(sae, x, 5, 2.5)
    np.testing.assert_allclose(out, _manual_edit(sae, x, 5, 2.5), rtol=1e-5, atol=1e-6)
    # Params-dict form gives the same result.
    out2 = edit_feature(sae.params(), x, 5, 2.5, clip_max=sae.config.clip_max)
    np.testing.assert_array_equal(out, out2)


def test_edit_under_jit_equals_eager(sae, x):
    eager = edit_feature(sae, x, 3, 1.25)
    jitted = jax.jit(lambda p, x, f, v: edit_feature_params(p, 6.0, x, f, v))(
        sae.params(), x, jnp.int32(3), jnp.float32(1.25))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)


def test_edit_under_grad(sae, x):
    def loss(value):
        return jnp.sum(edit_feature(sae, x, 4, value) ** 2)

    g = jax.grad(loss)(1.0)
    eps = 1e-2
    numeric = (loss(1.0 + eps) - loss(1.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(g, numeric, rtol=1e-3)
    # d out / d value is the unit atom of the feature, for every row.
    jac = jax.jacobian(lambda v: edit_feature(sae, x, 4, v))(0.7)
    atom = np.asarray(sae.atoms()[4])
    np.testing.assert_allclose(jac, np.broadcast_to(atom, jac.shape), rtol=1e-5, atol=1e-6)


def test_vmap_sweep_over_all_features_equals_loop(sae, x):
    features = jnp.arange(D_SAE)
    swept = jax.vmap(lambda f: edit_feature(sae, x, f, 3.0))(features)
    assert swept.shape == (D_SAE, *x.shape)
    for f in range(D_SAE):
        np.testing.assert_allclose(swept[f], edit_feature(sae, x, f, 3.0), rtol=1e-5, atol=1e-6)


def test_vmap_sweep_over_values(sae, x):
    values = jnp.linspace(0.0, 6.0, 5)
    swept = jax.vmap(lambda v: edit_feature(sae, x, 2, v, keep_error=True))(values)
    for i, v in enumerate(values):
        np.testing.assert_allclose(swept[i], edit_feature(sae, x, 2, float(v), keep_error=True),
                                   rtol=1e-5, atol=1e-6)


def test_keep_error_with_current_value_is_identity(sae, x):
    _, h = sae.encode(x)
    for f in (0, 7, D_SAE - 1):
        out = edit_feature(sae, x, f, h[:, f], keep_error=True)
        np.testing.assert_array_equal(out, x)


def test_keep_error_edit_adds_only_the_edit(sae, x):
    out = edit_feature(sae, x, 9, 4.0, keep_error=True)
    recon_edit = edit_feature(sae, x, 9, 4.0)
    recon = sae(x)[0]
    np.testing.assert_allclose(out, x + recon_edit - recon, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [D_SAE, D_SAE + 10, -1])
def test_out_of_range_feature_raises(sae, x, bad):
    with pytest.raises(IndexError, match=rf"feature {bad}.*{D_SAE} features"):
        edit_feature(sae, x, bad, 1.0)


def test_params_dict_needs_clip_max(sae, x):
    with pytest.raises(ValueError, match="clip_max"):
        edit_feature(sae.params(), x, 0, 1.0)


def test_bypass_equals_model_logits(primary, batch, model_logits):
    tokens, weapons, mask = batch
    res = hooked_forward(primary, None, tokens, weapons, mask, HookMode.BYPASS)
    np.testing.assert_allclose(res.logits, model_logits, rtol=1e-5, atol=1e-5)
    assert res.sae_pre is None and res.sae_post is None


def test_no_change_keeps_logits_and_records_encoding(primary, sae, batch):
    tokens, weapons, mask = batch
    base = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.BYPASS)
    probe = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.NO_CHANGE)
    np.testing.assert_array_equal(probe.logits, base.logits)
    pre, post = sae.encode(base.pooled)
    np.testing.assert_allclose(probe.sae_pre, pre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probe.sae_post, post, rtol=1e-5, atol=1e-6)
    assert probe.sae_post.shape == (tokens.shape[0], D_SAE)


def test_recon_and_edit_modes_are_consistent(primary, sae, batch):
    tokens, weapons, mask = batch
    probe = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.NO_CHANGE)
    recon = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.RECON)
    np.testing.assert_allclose(recon.logits, primary.head(sae(probe.pooled)[0]),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(recon.logits, probe.logits)
    # EDIT with a feature set to its current value reproduces RECON.
    f = int(np.argmax(np.asarray(probe.sae_post).sum(0)))
    same = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.EDIT, feature=f,
                          value=probe.sae_post[:, f])
    np.testing.assert_allclose(same.logits, recon.logits, rtol=1e-5, atol=1e-5)
    # ... and under keep_error it reproduces the untouched model.
    ident = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.EDIT, feature=f,
                           value=probe.sae_post[:, f], keep_error=True)
    np.testing.assert_allclose(ident.logits, probe.logits, rtol=1e-6, atol=1e-6)
    edited = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.EDIT, feature=f,
                            value=5.0)
    np.testing.assert_allclose(
        edited.logits, primary.head(edit_feature(sae, probe.pooled, f, 5.0)), rtol=1e-5,
        atol=1e-5)
    assert not np.allclose(edited.logits, recon.logits)


def test_hook_edit_checks_arguments(primary, sae, batch):
    tokens, weapons, mask = batch
    with pytest.raises(IndexError, match=str(D_SAE)):
        hooked_forward(primary, sae, tokens, weapons, mask, HookMode.EDIT, feature=D_SAE,
                       value=1.0)
    with pytest.raises(ValueError, match="feature and value"):
        hooked_forward(primary, sae, tokens, weapons, mask, HookMode.EDIT, feature=1)
    with pytest.raises(ValueError, match="needs an SAE"):
        hooked_forward(primary, None, tokens, weapons, mask, HookMode.RECON)
