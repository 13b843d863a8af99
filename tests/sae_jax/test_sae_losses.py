"""Schedules and the SAE loss: values against direct formulas, and the usage term's gradient."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax.config import SAETrainConfig
from sae_jax.losses import sae_loss, soft_usage_logit
from sae_jax.model import SAEConfig, create_sae
from sae_jax.schedules import l1_coefficient, learning_rate_schedule, usage_coefficient

CFG = SAETrainConfig(
    l1_coeff=2e-3, l1_start=1e-4, l1_warmup_steps=100, usage_coeff=1.5, usage_floor=0.05,
    usage_warmup_steps=40, usage_period=200, lr=1e-3, lr_final_fraction=0.1,
)


@pytest.mark.parametrize("step", [0, 1, 37, 100, 101, 5000])
def test_l1_schedule(step):
    expect = CFG.l1_start + (CFG.l1_coeff - CFG.l1_start) * min(step / CFG.l1_warmup_steps, 1.0)
    np.testing.assert_allclose(float(l1_coefficient(step, CFG)), expect, rtol=1e-6)
    traced = jax.jit(lambda s: l1_coefficient(s, CFG))(jnp.int32(step))
    np.testing.assert_allclose(float(traced), expect, rtol=1e-6)


@pytest.mark.parametrize("step", [0, 10, 39, 40, 90, 140, 240, 241, 1000])
def test_usage_schedule(step):
    base, floor, warm, period = CFG.usage_coeff, CFG.usage_floor, 40, 200
    if step < warm:
        expect = floor + (base - floor) * step / warm
    else:
        phase = (step - warm) % period
        expect = floor + (base - floor) * 0.5 * (1 + math.cos(2 * math.pi * phase / period))
    np.testing.assert_allclose(float(usage_coefficient(step, CFG)), expect, rtol=1e-5, atol=1e-6)
    traced = jax.jit(lambda s: usage_coefficient(s, CFG))(jnp.int32(step))
    np.testing.assert_allclose(float(traced), expect, rtol=1e-5, atol=1e-6)


def test_usage_schedule_landmarks():
    # Warm-up ends at the base, half a period later it is at the floor, a period later back.
    np.testing.assert_allclose(float(usage_coefficient(40, CFG)), 1.5, rtol=1e-6)
    np.testing.assert_allclose(float(usage_coefficient(140, CFG)), 0.05, rtol=1e-5)
    np.testing.assert_allclose(float(usage_coefficient(240, CFG)), 1.5, rtol=1e-6)


def test_learning_rate_schedule():
    sched = learning_rate_schedule(CFG, 1000)
    np.testing.assert_allclose(float(sched(0)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(sched(500)), 1e-3 * (0.1 + 0.9 * 0.5), rtol=1e-5)
    np.testing.assert_allclose(float(sched(1000)), 1e-4, rtol=1e-5)
    np.testing.assert_allclose(float(sched(5000)), 1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="total_steps"):
        learning_rate_schedule(CFG, 0)


def _setup(seed=0, d=6, exp=4, batch=64):
    sae = create_sae(SAEConfig(input_dim=d, expansion_factor=exp), seed=seed)
    params = sae.params()
    params["b_dec"] = jax.random.normal(jax.random.key(seed + 1), (d,)) * 0.1
    x = jax.random.normal(jax.random.key(seed + 2), (batch, d))
    ema = jax.random.uniform(jax.random.key(seed + 3), (sae.hidden_dim,), maxval=0.2)
    return params, x, ema


def test_loss_terms_match_numpy():
    params, x, ema = _setup()
    step = 57
    total, aux = jax.jit(lambda p, x, e: sae_loss(p, x, e, step, CFG))(params, x, ema)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    xn = np.asarray(x, np.float64)
    pre = (xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    h = np.clip(np.maximum(pre, 0), 0, CFG.clip_max)
    atoms = p["W_dec"] / np.linalg.norm(p["W_dec"], axis=1, keepdims=True)
    recon = h @ atoms + p["b_dec"]
    mse = np.mean((recon - xn) ** 2)
    l1 = np.mean(np.sum(np.abs(h), axis=1))
    usage_batch = np.mean(h > 0, axis=0)
    ema_new = 0.99 * np.asarray(ema, np.float64) + 0.01 * usage_batch
    q = np.clip(ema_new, 1e-7, 1 - 1e-7)
    rho = CFG.target_usage
    kl = np.mean(rho * np.log(rho / q) + (1 - rho) * np.log((1 - rho) / (1 - q)))
    l1c = float(l1_coefficient(step, CFG))
    uc = float(usage_coefficient(step, CFG))
    np.testing.assert_allclose(float(aux["mse"]), mse, rtol=1e-5)
    np.testing.assert_allclose(float(aux["l1"]), l1, rtol=1e-5)
    np.testing.assert_allclose(float(aux["kl"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(aux["l0"]), np.mean(np.sum(h > 0.01, axis=1)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(aux["usage_batch"]), usage_batch, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(aux["usage_ema"]), ema_new, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(total), mse + l1c * l1 + uc * kl, rtol=1e-5)
    # The switch changes gradients only, never values.
    orig = _original(CFG)
    total_orig, aux_orig = jax.jit(lambda p, x, e: sae_loss(p, x, e, step, orig))(params, x, ema)
    assert float(total_orig) == pytest.approx(float(total), rel=1e-6)
    assert float(aux_orig["kl"]) == pytest.approx(float(aux["kl"]), rel=1e-6)


def test_loss_rejects_bad_shapes():
    params, x, ema = _setup()
    with pytest.raises(ValueError, match="activations of shape"):
        sae_loss(params, x[:, :3], ema, 0, CFG)
    with pytest.raises(ValueError, match="usage_ema"):
        sae_loss(params, x, ema[:3], 0, CFG)


def _original(cfg):
    import dataclasses

    return dataclasses.replace(cfg, original_behaviour=True)


def _dead_and_overused(bias_dead):
    """Feature 0 never fires (bias far below zero), feature 1 always fires."""
    params, x, ema = _setup(seed=4)
    params["W_enc"] = params["W_enc"].at[:, :2].multiply(0.1)
    params["b_enc"] = params["b_enc"].at[0].set(bias_dead).at[1].set(30.0)
    ema = ema.at[0].set(0.0).at[1].set(0.95)
    pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
    assert bool(jnp.all(pre[:, 0] < 0)) and bool(jnp.all(pre[:, 1] > 0))
    return params, x, ema


def _kl_grad(params, x, ema, cfg):
    return jax.jit(jax.grad(lambda p: sae_loss(p, x, ema, 10, cfg)[1]["kl"]))(params)


@pytest.mark.parametrize("bias_dead", [-3.0, -300.0])
def test_usage_gradient_revives_dead_and_calms_overused(bias_dead):
    params, x, ema = _dead_and_overused(bias_dead)
    grads = _kl_grad(params, x, ema, CFG)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads.values())
    # A small descent step on the usage term alone.
    lr = 1e-2 / float(jnp.max(jnp.abs(grads["b_enc"])))
    moved = jax.tree.map(lambda p, g: p - lr * g, params, grads)

    def pre_of(p):
        return (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]

    delta = pre_of(moved) - pre_of(params)
    assert float(jnp.max(delta[:, 0])) > 0 and float(grads["b_enc"][0]) < 0  # dead: up
    assert float(jnp.mean(delta[:, 1])) < 0 and float(grads["b_enc"][1]) > 0  # overused: down


def test_usage_gradient_is_zero_in_original_mode():
    params, x, ema = _dead_and_overused(-3.0)
    grads = _kl_grad(params, x, ema, _original(CFG))
    for name, g in grads.items():
        assert bool(jnp.all(g == 0)), name


def test_decoder_gradient_zero_only_in_original_mode():
    params, x, ema = _setup(seed=7)
    loss = lambda p, cfg: sae_loss(p, x, ema, 10, cfg)[0]
    fixed = jax.jit(jax.grad(lambda p: loss(p, CFG)))(params)
    orig = jax.jit(jax.grad(lambda p: loss(p, _original(CFG))))(params)
    assert bool(jnp.all(orig["W_dec"] == 0))
    assert float(jnp.max(jnp.abs(fixed["W_dec"]))) > 0
    assert float(jnp.max(jnp.abs(orig["W_enc"]))) > 0  # the encoder still learns


def test_soft_usage_logit_matches_direct_formula():
    pre = jax.random.normal(jax.random.key(0), (50, 7)) * jnp.arange(1.0, 8.0) - 1.0
    got = np.asarray(soft_usage_logit(pre, temperature=0.5))
    p = np.asarray(pre, np.float64)
    tau = 0.5 * p.std(axis=0)
    s = np.mean(1 / (1 + np.exp(-p / tau)), axis=0)
    np.testing.assert_allclose(got, np.log(s / (1 - s)), rtol=1e-4, atol=1e-5)
    # Far below zero it stays finite and its gradient still reaches the nearest rows.
    far = pre - 1e4
    grad = jax.grad(lambda q: jnp.sum(soft_usage_logit(q)))(far)
    assert np.all(np.isfinite(np.asarray(soft_usage_logit(far))))
    assert np.all(np.asarray(grad).max(axis=0) > 0)
