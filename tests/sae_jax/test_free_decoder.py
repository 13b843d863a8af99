"""--decoder_init_norm: JumpReLU trained with decoder rows free in norm, folded back to
unit rows when the SAE leaves training (sae_jax.recipes.inference_params)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax.buffer import create_buffer, push
from sae_jax.config import SAETrainConfig
from sae_jax.model import create_sae, decode, encode
from sae_jax.recipes import inference_params
from sae_jax.step import init_train_state, make_train_steps

D, F, B = 6, 16, 32


def _cfg(**kw):
    base = dict(architecture="jumprelu", expansion_factor=F / D, resample_steps=(),
                lr=3e-3, sae_batch_size=B, buffer_size=256, min_buffer=B,
                l1_warmup_steps=0, l0_coeff=0.01, jumprelu_bandwidth=0.5,
                jumprelu_init_threshold=0.05, decoder_init_norm=0.1)
    return SAETrainConfig(**{**base, **kw})


def _free_params(seed=0):
    """JumpReLU params whose decoder rows have norms far from 1 and from each other."""
    ks = jax.random.split(jax.random.key(seed), 6)
    norms = jax.random.uniform(ks[3], (F, 1), minval=0.05, maxval=3.0)
    rows = jax.random.normal(ks[2], (F, D))
    return {"W_enc": 0.6 * jax.random.normal(ks[0], (D, F)),
            "b_enc": 0.1 * jax.random.normal(ks[1], (F,)),
            "W_dec": rows / jnp.linalg.norm(rows, axis=1, keepdims=True) * norms,
            "b_dec": 0.2 * jax.random.normal(ks[4], (D,)),
            "log_threshold": jnp.log(jax.random.uniform(ks[5], (F,), minval=0.05,
                                                        maxval=0.6))}


def test_folding_gives_the_same_sae_with_unit_rows():
    cfg = _cfg()
    spec = cfg.sae_config(D).encoder
    raw = _free_params()
    x = jax.random.normal(jax.random.key(1), (64, D))
    _, h_raw = encode(raw, x, spec)
    recon_raw = decode(raw, h_raw, unit_atoms=False)
    folded = inference_params(raw, cfg)
    np.testing.assert_allclose(np.linalg.norm(folded["W_dec"], axis=1), 1.0, rtol=1e-5)
    _, h = encode(folded, x, spec)
    norms = np.linalg.norm(raw["W_dec"], axis=1)
    # The same features fire, each activation scaled by its row's norm, and the output
    # through the unit rows is the free-norm SAE's.
    np.testing.assert_array_equal(np.asarray(h) > 0, np.asarray(h_raw) > 0)
    assert 0 < (np.asarray(h) > 0).mean() < 1
    np.testing.assert_allclose(h, np.asarray(h_raw) * norms, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(decode(folded, h), recon_raw, rtol=1e-5, atol=1e-5)


def test_unit_rows_are_left_alone():
    cfg = _cfg(decoder_init_norm=0.0)
    raw = _free_params()
    assert inference_params(raw, cfg) is raw


def test_training_keeps_the_rows_free_and_starts_them_at_the_given_norm():
    cfg = _cfg()
    sae = create_sae(cfg.sae_config(D), seed=0)
    state = init_train_state(sae, cfg, 40)
    np.testing.assert_allclose(np.linalg.norm(state.params["W_dec"], axis=1), 0.1, rtol=1e-5)
    np.testing.assert_allclose(state.params["W_enc"], state.params["W_dec"].T, rtol=1e-6)
    buffer = push(create_buffer(256, D), jax.random.normal(jax.random.key(2), (256, D)))
    state, metrics = make_train_steps(cfg, 40, 40)(state, buffer, jax.random.key(3))
    norms = np.linalg.norm(np.asarray(state.params["W_dec"]), axis=1)
    assert bool(metrics["finite"])
    # Nothing projects the rows back: they have moved away from 0.1, and not to 1.
    assert np.abs(norms - 0.1).max() > 1e-3 and np.abs(norms - 1.0).min() > 0.5
    folded = inference_params(state.params, cfg)
    np.testing.assert_allclose(np.linalg.norm(folded["W_dec"], axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("arch", ["topk", "relu_l1", "batchtopk", "matryoshka"])
def test_other_architectures_refuse_free_rows(arch):
    cfg = dataclasses.replace(SAETrainConfig(architecture=arch, resample_steps=()),
                              decoder_init_norm=0.1)
    with pytest.raises(ValueError, match="--decoder_init_norm"):
        cfg.validate(d_sae=64)


def test_a_negative_norm_is_refused():
    with pytest.raises(ValueError, match="--decoder_init_norm"):
        _cfg(decoder_init_norm=-1.0).validate(d_sae=F)
