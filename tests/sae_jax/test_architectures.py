"""SAE architectures: forward/backward against NumPy, AuxK, state, save/load, exact resume,
settings checks, steering and one end-to-end run with resume and analysis."""

import dataclasses
import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bridge.steering import HookMode, edit_feature, edit_feature_params, hooked_forward
from runkit.checkpoints import Checkpoints
from sae_jax.architectures import EncoderSpec
from sae_jax.buffer import create_buffer, push
from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEConfig, create_sae, encode, sae_from_params
from sae_jax.recipes import auxk_loss, recipe_loss
from sae_jax.sae_dir import load_sae, save_sae
from sae_jax.step import init_train_state, make_train_steps

D, F, B = 6, 16, 10
NEW = ("topk", "batchtopk", "jumprelu", "matryoshka")
GROUPS = (4, 4, 8)


def _cfg(arch, **kw):
    extra = {"matryoshka_groups": GROUPS} if arch == "matryoshka" else {}
    base = dict(architecture=arch, expansion_factor=F / D, k=3, resample_steps=(), lr=3e-3,
                sae_batch_size=B, buffer_size=64, min_buffer=B, dead_after_rows=20,
                l1_warmup_steps=0, l0_coeff=0.01, jumprelu_bandwidth=0.5,
                jumprelu_init_threshold=0.2)
    return SAETrainConfig(**{**base, **extra, **kw})


def _params(arch, seed=0):
    """Random params of an SAE of ``arch`` (non-unit atoms, non-zero biases, thresholds)."""
    ks = jax.random.split(jax.random.key(seed), 6)
    p = {"W_enc": 0.6 * jax.random.normal(ks[0], (D, F)),
         "b_enc": 0.1 * jax.random.normal(ks[1], (F,)),
         "W_dec": jax.random.normal(ks[2], (F, D)) * jax.random.uniform(ks[3], (F, 1), minval=.5,
                                                                       maxval=2.),
         "b_dec": 0.2 * jax.random.normal(ks[4], (D,))}
    if arch == "jumprelu":
        p["log_threshold"] = jnp.log(jax.random.uniform(ks[5], (F,), minval=0.05, maxval=0.6))
    if arch in ("batchtopk", "matryoshka"):
        p["threshold"] = jnp.asarray(0.3)
    return p


def _x(seed=1, n=B):
    return jax.random.normal(jax.random.key(seed), (n, D))


def _np(p):
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def np_pre(p, x):
    return (np.asarray(x, np.float64) - p["b_dec"]) @ p["W_enc"] + p["b_enc"]


def np_atoms(p):
    return p["W_dec"] / np.linalg.norm(p["W_dec"], axis=1, keepdims=True)


def np_topk_mask(pre, k):
    mask = np.zeros_like(pre, bool)
    np.put_along_axis(mask, np.argsort(-pre, axis=1)[:, :k], True, axis=1)
    return mask


def np_batch_topk_mask(pre, k):
    flat = np.maximum(pre, 0).ravel()
    mask = np.zeros(flat.shape, bool)
    mask[np.argsort(-flat)[: k * pre.shape[0]]] = True
    return mask.reshape(pre.shape) & (pre > 0)


def rect(u):
    return ((u > -0.5) & (u < 0.5)).astype(np.float64)


# ---------------------------------------------------------------- inference forward

@pytest.mark.parametrize("arch", ("relu_l1",) + NEW)
def test_inference_encoder_matches_numpy(arch):
    config = SAEConfig(D, F / D, 6.0, arch, 3 if arch != "jumprelu" else 0, clip=False) \
        if arch != "relu_l1" else SAEConfig(D, F / D)
    p, x = _params(arch), _x()
    pn = _np(p)
    pre = np_pre(pn, x)
    if arch == "relu_l1":
        want = np.clip(pre, 0, 6.0)
    elif arch == "topk":
        want = np.where(np_topk_mask(pre, 3), np.maximum(pre, 0), 0)
    elif arch == "jumprelu":
        want = np.where(pre > np.exp(pn["log_threshold"]), pre, 0)
    else:
        want = np.where(pre > pn["threshold"], np.maximum(pre, 0), 0)
    got_pre, got = encode(p, x, config)
    np.testing.assert_allclose(got_pre, pre, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (np.asarray(got) > 0).any() and (np.asarray(got) == 0).any()


def test_float_clip_and_relu_l1_spec_encode_identically():
    p, x = _params("relu_l1"), 10 * _x()
    a = encode(p, x, 6.0)[1]
    np.testing.assert_array_equal(encode(p, x, SAEConfig(D, F / D))[1], a)
    np.testing.assert_array_equal(encode(p, x, EncoderSpec("relu_l1", 0, 6.0))[1], a)
    assert float(a.max()) == 6.0


def test_optional_clip_for_other_architectures():
    p, x = _params("topk"), 10 * _x()
    clipped = SAEConfig(D, F / D, 1.0, "topk", 3, clip=True)
    free = SAEConfig(D, F / D, 1.0, "topk", 3, clip=False)
    assert float(encode(p, x, clipped)[1].max()) == 1.0
    assert float(encode(p, x, free)[1].max()) > 1.0


# ---------------------------------------------------------------- training forward/backward

def _np_loss_grad_b_enc(arch, pn, x, cfg):
    """NumPy loss (without AuxK) and its gradient w.r.t. b_enc (and log_threshold)."""
    x = np.asarray(x, np.float64)
    pre = np_pre(pn, x)
    atoms = np_atoms(pn)
    n = x.size
    if arch == "jumprelu":
        theta = np.exp(pn["log_threshold"])
        on = pre > theta
        h = np.where(on, pre, 0)
    else:
        mask = np_topk_mask(pre, cfg.k) if arch == "topk" else np_batch_topk_mask(pre, cfg.k)
        on = mask & (pre > 0)
        h = np.where(on, pre, 0)
    if arch == "matryoshka":
        ends = np.cumsum(GROUPS)
        loss, dh = 0.0, np.zeros_like(h)
        for e in ends:
            r = h[:, :e] @ atoms[:e] + pn["b_dec"] - x
            loss += np.mean(r ** 2)
            dh[:, :e] += 2 * r @ atoms[:e].T / n
    else:
        r = h @ atoms + pn["b_dec"] - x
        loss = np.mean(r ** 2)
        dh = 2 * r @ atoms.T / n
    dpre = dh * on
    grads = {"b_enc": dpre.sum(0)}
    if arch == "jumprelu":
        u = (pre - theta) / cfg.jumprelu_bandwidth
        l0 = np.mean(np.sum(on, axis=1))
        loss += cfg.l0_coeff * l0
        dtheta = (dh * -(theta / cfg.jumprelu_bandwidth) * rect(u)).sum(0) + \
            cfg.l0_coeff * (-(1 / cfg.jumprelu_bandwidth) * rect(u)).sum(0) / x.shape[0]
        grads["log_threshold"] = dtheta * theta
        assert np.abs(grads["log_threshold"]).max() > 0  # the kernel window saw some rows
    return loss, grads


@pytest.mark.parametrize("arch", NEW)
def test_training_loss_and_gradients_match_numpy(arch):
    cfg = _cfg(arch, aux_coeff=0.0)
    p, x = _params(arch), _x()
    extra = {"rows_since_fired": jnp.zeros((F,), jnp.int32)}

    def loss(params):
        return recipe_loss(params, x, jnp.zeros((F,)), extra, 5, cfg)

    (total, aux), grads = jax.value_and_grad(loss, has_aux=True)(p)
    want, want_grads = _np_loss_grad_b_enc(arch, _np(p), x, cfg)
    np.testing.assert_allclose(float(total), want, rtol=1e-5)
    for k, g in want_grads.items():
        np.testing.assert_allclose(grads[k], g, rtol=1e-4, atol=1e-6, err_msg=k)
    if arch in ("topk",):
        assert float(aux["l0"]) <= cfg.k


def test_auxk_loss_value_and_gradient_match_numpy():
    p, x = _params("topk"), _x()
    pn = _np(p)
    pre = np_pre(pn, x)
    recon = np.where(np_topk_mask(pre, 3), np.maximum(pre, 0), 0) @ np_atoms(pn) + pn["b_dec"]
    dead = np.zeros(F, bool)
    dead[[1, 4, 7, 9, 12]] = True
    k_aux = 2

    # NumPy: per row the k_aux dead features with the largest pre (as they are, negative
    # too) through their atoms.
    masked = np.where(dead, pre, -np.inf)
    chosen = np_topk_mask(masked, k_aux) & dead
    assert (pre[chosen] < 0).any() and (pre[chosen] > 0).any()
    z = np.where(chosen, pre, 0)
    err = np.asarray(x, np.float64) - recon
    err_hat = z @ np_atoms(pn)
    scale = min(dead.sum() / k_aux, 1.0)
    power = np.mean(np.asarray(x, np.float64) ** 2)
    want = scale * np.mean((err_hat - err) ** 2) / np.mean(err ** 2) * power
    d_hat = scale * 2 * (err_hat - err) / err_hat.size / np.mean(err ** 2) * power
    want_grad = ((d_hat @ np_atoms(pn).T) * chosen).sum(0)

    def loss(b_enc, relu=False):
        q = {**p, "b_enc": b_enc}
        pre_j = (x - q["b_dec"]) @ q["W_enc"] + q["b_enc"]
        return auxk_loss(q, pre_j, x, jnp.asarray(recon, jnp.float32), jnp.asarray(dead), k_aux,
                         relu=relu)

    value, grad = jax.value_and_grad(loss)(p["b_enc"])
    np.testing.assert_allclose(float(value), want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)
    assert np.all(np.asarray(grad)[~dead] == 0) and np.any(np.asarray(grad)[dead] != 0)

    # ReLU'd: only the chosen features with positive pre-activations take part.
    z_r = np.where(chosen, np.maximum(pre, 0), 0)
    hat_r = z_r @ np_atoms(pn)
    want_r = scale * np.mean((hat_r - err) ** 2) / np.mean(err ** 2) * power
    d_r = scale * 2 * (hat_r - err) / hat_r.size / np.mean(err ** 2) * power
    value_r, grad_r = jax.value_and_grad(loss)(p["b_enc"], True)
    np.testing.assert_allclose(float(value_r), want_r, rtol=1e-5)
    np.testing.assert_allclose(grad_r, ((d_r @ np_atoms(pn).T) * chosen * (pre > 0)).sum(0),
                               rtol=1e-4, atol=1e-7)
    none_dead = auxk_loss(p, jnp.asarray(pre, jnp.float32), x, jnp.asarray(recon, jnp.float32),
                          jnp.zeros(F, bool), k_aux)
    assert float(none_dead) == 0.0


def test_auxk_loss_with_few_dead_features_uses_every_dead_one():
    """At most k_aux dead features: each row's choice is all of them (the selection is
    skipped); the same inside a vmapped stack whose members take either branch."""
    p, x = _params("topk"), _x()
    pn = _np(p)
    pre = np_pre(pn, x)
    recon = np.where(np_topk_mask(pre, 3), np.maximum(pre, 0), 0) @ np_atoms(pn) + pn["b_dec"]
    few = np.zeros(F, bool)
    few[[2, 5, 11]] = True
    many = np.zeros(F, bool)
    many[[0, 3, 6, 8, 10, 13]] = True
    k_aux = 4
    err = np.asarray(x, np.float64) - recon
    power = np.mean(np.asarray(x, np.float64) ** 2)

    def want(dead):
        chosen = np.broadcast_to(dead, pre.shape) if dead.sum() <= k_aux else (
            np_topk_mask(np.where(dead, pre, -np.inf), k_aux) & dead)
        err_hat = np.where(chosen, pre, 0) @ np_atoms(pn)
        scale = min(dead.sum() / k_aux, 1.0)
        return scale * np.mean((err_hat - err) ** 2) / np.mean(err ** 2) * power

    def loss(dead, b_enc, members_axis=None):
        q = {**p, "b_enc": b_enc}
        pre_j = (x - q["b_dec"]) @ q["W_enc"] + q["b_enc"]
        return auxk_loss(q, pre_j, x, jnp.asarray(recon, jnp.float32), dead, k_aux,
                         members_axis=members_axis)

    value, grad = jax.jit(jax.value_and_grad(loss, argnums=1))(jnp.asarray(few), p["b_enc"])
    np.testing.assert_allclose(float(value), want(few), rtol=1e-5)
    assert np.all(np.asarray(grad)[~few] == 0) and np.all(np.asarray(grad)[few] != 0)

    # A stack: without an axis name each member's branch is a select; with one, every
    # member takes the branch the neediest member needs (the selection, the decode).
    deads = jnp.asarray(np.stack([few, many, np.zeros(F, bool)]))
    stacked_b_enc = jnp.broadcast_to(p["b_enc"], (3, F))
    alone = [jax.grad(loss, argnums=1)(dead, p["b_enc"]) for dead in deads]
    for axis in (None, "members"):
        grad_fn = jax.value_and_grad(partial(loss, members_axis=axis), argnums=1)
        values, grads = jax.jit(jax.vmap(grad_fn, axis_name=axis))(deads, stacked_b_enc)
        np.testing.assert_allclose(np.asarray(values), [want(few), want(many), 0.0], rtol=1e-5)
        for i in range(3):
            np.testing.assert_allclose(grads[i], alone[i], rtol=1e-5, atol=1e-8)


def _planted_buffer(d=8, n_dirs=8, rows=512, seed=0):
    """Rows that are positive mixtures of 2 of ``n_dirs`` planted unit directions."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    dirs = jax.random.normal(k1, (n_dirs, d))
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    pick = jax.random.uniform(k2, (rows, n_dirs)).argsort(axis=1)[:, :2]
    coef = jax.random.uniform(k3, (rows, 2), minval=1.0, maxval=2.0)
    x = jnp.einsum("rk,rkd->rd", coef, dirs[pick])
    return push(create_buffer(rows, d), x), x


@pytest.mark.parametrize("aux_relu, handicap", [(False, -3.0), (True, -1.0)],
                         ids=["as-is-negative-everywhere", "relu-positive-somewhere"])
def test_auxk_lowers_the_dead_fraction_on_a_planted_problem(aux_relu, handicap):
    """32 planted directions in 16 dims, 32 features, half of them started behind a negative
    encoder bias: without AuxK the top-2 selection never picks those (no gradient); AuxK
    pulls them towards what the live ones miss. At -3 their pre-activations are negative on
    every row, which only AuxK on the pre-activations as they are can reach."""
    d, steps = 16, 200
    buf, x = _planted_buffer(d=d, n_dirs=32, rows=1024)
    dead = {}
    for coeff in (0.0, 1.0):
        cfg = SAETrainConfig(architecture="topk", expansion_factor=2, k=2, aux_coeff=coeff,
                             aux_relu=aux_relu, k_aux=8, dead_after_rows=256, lr=1e-2,
                             sae_batch_size=64, buffer_size=1024, min_buffer=64,
                             resample_steps=())
        state = init_train_state(create_sae(cfg.sae_config(d), seed=0), cfg, steps)
        b_enc = jnp.where(jnp.arange(2 * d) % 2 == 1, handicap, 0.0)
        state = state._replace(params={**state.params, "b_enc": b_enc})
        state, _ = make_train_steps(cfg, steps, steps)(state, buf, jax.random.key(0))
        _, h = encode(state.params, x, cfg.sae_config(d))
        dead[coeff] = float(np.mean(~np.asarray((h > 0.01).any(0))))
    assert dead[0.0] >= 0.25, dead  # the planted problem leaves many dead without AuxK
    assert dead[1.0] <= dead[0.0] / 4, dead


# ---------------------------------------------------------------- state and thresholds

def test_batchtopk_threshold_is_an_ema_of_the_smallest_selected_activation():
    cfg = _cfg("batchtopk", threshold_decay=0.5)
    p, x = _params("batchtopk"), _x()
    pre = np_pre(_np(p), x)
    smallest = pre[np_batch_topk_mask(pre, cfg.k)].min()
    extra = {"rows_since_fired": jnp.zeros((F,), jnp.int32)}
    _, first = recipe_loss(p, x, jnp.zeros((F,)), extra, 0, cfg)
    _, later = recipe_loss(p, x, jnp.zeros((F,)), extra, 7, cfg)
    np.testing.assert_allclose(float(first["threshold"]), smallest, rtol=1e-5)
    np.testing.assert_allclose(float(later["threshold"]), 0.5 * 0.3 + 0.5 * smallest, rtol=1e-5)


def test_the_step_sets_the_threshold_and_the_optimiser_leaves_it():
    from sae_jax.buffer import sample

    cfg = _cfg("batchtopk", weight_decay=0.5)
    buf, _ = _planted_buffer(d=D, rows=64)
    key = jax.random.key(0)
    state = init_train_state(create_sae(cfg.sae_config(D), seed=0), cfg, 10)
    fn = make_train_steps(cfg, 10, 1)
    seen = []
    for _ in range(3):
        xb = sample(buf, jax.random.fold_in(key, state.step), cfg.sae_batch_size)
        _, aux = recipe_loss(state.params, xb, state.usage_ema, state.extra, state.step, cfg)
        state, m = fn(state, buf, key)
        seen.append(float(state.params["threshold"]))
        assert seen[-1] == float(aux["threshold"]) == float(m["threshold"])
    assert seen[0] > 0 and len(set(seen)) == 3


def test_dead_counter_counts_rows_and_resets_on_firing():
    cfg = _cfg("topk")
    p, x = _params("topk"), _x()
    rows = jnp.arange(F, dtype=jnp.int32) * 7
    _, aux = recipe_loss(p, x, jnp.zeros((F,)), {"rows_since_fired": rows}, 0, cfg)
    fired = np.asarray(np_topk_mask(np_pre(_np(p), x), 3) & (np_pre(_np(p), x) > 0)).any(0)
    np.testing.assert_array_equal(aux["rows_since_fired"], np.where(fired, 0, np.asarray(rows) + B))
    assert float(aux["dead_aux"]) == float(np.sum(np.asarray(rows) >= cfg.dead_after_rows))


@pytest.mark.parametrize("arch", NEW)
def test_save_load_and_exact_resume(arch, tmp_path):
    cfg = _cfg(arch)
    buf, _ = _planted_buffer(d=D, rows=64)
    key = jax.random.key(2)
    fresh = lambda: init_train_state(create_sae(cfg.sae_config(D), seed=0), cfg, 12)  # noqa: E731
    fn = make_train_steps(cfg, 12, 4)
    straight = fresh()
    for _ in range(3):
        straight, _ = fn(straight, buf, key)

    state, _ = fn(fresh(), buf, key)
    with Checkpoints(tmp_path / "ckpt") as ckpt:
        ckpt.save(4, {"train_state": state}, {})
        restored = ckpt.restore_latest({"train_state": fresh()}).tree["train_state"]
    for _ in range(2):
        restored, _ = fn(restored, buf, key)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(straight)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(straight.params) == set(cfg.sae_config(D).param_names())

    sae = sae_from_params(cfg.sae_config(D), jax.device_get(straight.params),
                          straight.usage_ema)
    save_sae(tmp_path / "sae", sae)
    back = load_sae(tmp_path / "sae")
    assert back.config == sae.config
    for k, v in sae.params().items():
        np.testing.assert_array_equal(back.params()[k], v, err_msg=k)
    np.testing.assert_array_equal(back.encode(_x())[1], sae.encode(_x())[1])


def test_relu_l1_config_json_is_written_as_before(tmp_path):
    config = SAEConfig(D, 2.0)
    config.to_json(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text()) == {
        "input_dim": D, "expansion_factor": 2.0, "clip_max": 6.0}
    assert SAEConfig.from_json(tmp_path / "c.json") == config


# ---------------------------------------------------------------- settings

@pytest.mark.parametrize("change, d_sae, message", [
    (dict(architecture="sparse"), None, "unknown SAE architecture 'sparse'"),
    (dict(architecture="topk", k=16), 16, "--k 16 must be smaller than the number of features"),
    (dict(architecture="batchtopk", k=0), None, "--k must be >= 1"),
    (dict(architecture="matryoshka", matryoshka_groups=(4, 4)), 16,
     "--matryoshka_groups 4,4 sum to 8, not to the number of features 16"),
    (dict(architecture="matryoshka"), None, "--matryoshka_groups must be positive"),
    (dict(architecture="topk", matryoshka_groups=(8, 8)), None, "is for --architecture=matryoshka"),
    (dict(architecture="topk", resample_steps=(5,)), None, "AuxK loss replaces resampling"),
    (dict(architecture="jumprelu", jumprelu_bandwidth=0.0), None, "--jumprelu_bandwidth"),
    (dict(architecture="jumprelu", original_behaviour=True), None, "relu_l1 recipe"),
    (dict(architecture="topk", dead_after_rows=0), None, "--dead_after_rows"),
])
def test_bad_architecture_settings_are_refused(change, d_sae, message):
    cfg = dataclasses.replace(SAETrainConfig(resample_steps=()), **change)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        cfg.validate(d_sae=d_sae)


def test_new_settings_at_defaults_leave_the_recorded_settings_unchanged():
    recorded = SAETrainConfig().to_dict()
    assert "architecture" not in recorded and "k" not in recorded
    assert SAETrainConfig(architecture="topk").to_dict()["architecture"] == "topk"
    back = SAETrainConfig.from_dict(_cfg("matryoshka").to_dict())
    assert back == _cfg("matryoshka")


# ---------------------------------------------------------------- steering

@pytest.mark.parametrize("arch", NEW)
def test_edit_feature_under_jit_vmap_grad(arch):
    config = SAEConfig(D, F / D, 6.0, arch, 0 if arch == "jumprelu" else 3, clip=False)
    sae = sae_from_params(config, _params(arch))
    x = _x()
    eager = edit_feature(sae, x, 5, 2.5)
    jitted = jax.jit(lambda p, x, f, v: edit_feature_params(p, config, x, f, v))(
        sae.params(), x, 5, 2.5)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
    swept = jax.vmap(lambda v: edit_feature(sae, x, 5, v))(jnp.array([0.0, 2.5]))
    np.testing.assert_allclose(swept[1], eager, rtol=1e-5, atol=1e-6)
    jac = jax.jacobian(lambda v: edit_feature(sae, x, 5, v))(0.7)
    np.testing.assert_allclose(jac, jnp.broadcast_to(sae.atoms()[5], x.shape), rtol=1e-5,
                               atol=1e-6)
    _, h = sae.encode(x)
    np.testing.assert_allclose(edit_feature(sae, x, 5, h[:, 5], keep_error=True), x, atol=1e-5)


@pytest.mark.parametrize("arch", ("topk", "jumprelu"))
def test_hook_modes_use_the_architecture(arch):
    from tests.tiny_setup import HIDDEN, primary_for, tiny_world

    _, vocab, weapon_vocab = tiny_world()
    primary = primary_for(vocab, weapon_vocab)
    d, f = HIDDEN, 2 * HIDDEN
    config = SAEConfig(d, 2.0, 6.0, arch, 0 if arch == "jumprelu" else 3, clip=False)
    params = create_sae(config, seed=3).params()
    if arch == "jumprelu":
        params["log_threshold"] = jnp.full((f,), np.log(0.05))
    sae = sae_from_params(config, params)
    tokens = jnp.array([[1, 2, 3, vocab.pad_id], [4, 5, 6, 7]])
    weapons = jnp.array([[1], [2]])
    mask = tokens == vocab.pad_id
    probe = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.NO_CHANGE)
    np.testing.assert_allclose(probe.sae_post, sae.encode(probe.pooled)[1], rtol=1e-5, atol=1e-6)
    if arch == "topk":
        assert int((np.asarray(probe.sae_post) > 0).sum(1).max()) <= 3
    recon = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.RECON)
    np.testing.assert_allclose(recon.logits, primary.head(sae.decode(probe.sae_post)), rtol=1e-5,
                               atol=1e-5)


def test_jumprelu_resampling_resets_thresholds_and_their_moments():
    from sae_jax.resample import resample_dead_features
    from sae_jax.transforms import make_optimizer

    cfg = _cfg("jumprelu", resample_steps=(5,), jumprelu_init_threshold=0.01)
    params = _params("jumprelu")
    opt = make_optimizer(cfg, 10)
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = opt.update(grads, state, params)  # non-zero Adam moments everywhere
    dead = np.zeros(F, bool)
    dead[[2, 11]] = True
    usage = jnp.where(jnp.asarray(dead), 0.0, 0.1)
    buf, _ = _planted_buffer(d=D, rows=64)
    new, new_state, _, n = resample_dead_features(params, state, usage, buf, jax.random.key(1),
                                                  cfg)
    assert int(n) == 2
    t = np.asarray(new["log_threshold"])
    np.testing.assert_allclose(t[dead], np.log(0.01), rtol=1e-6)
    np.testing.assert_array_equal(t[~dead], np.asarray(params["log_threshold"])[~dead])
    adam = [s for s in jax.tree.leaves(new_state, is_leaf=lambda s: hasattr(s, "mu"))
            if hasattr(s, "mu")][0]
    for moment in (adam.mu["log_threshold"], adam.nu["log_threshold"]):
        m = np.asarray(moment)
        assert np.all(m[dead] == 0) and np.all(m[~dead] != 0)


@pytest.mark.slow  # two whole training runs (the resume of every run is tested on relu_l1)
def test_a_batchtopk_run_stopped_and_resumed_ends_as_an_uninterrupted_one(tmp_path):
    """The whole run (harvest, train, checkpoint, resume, evaluate) on a tiny primary."""
    from apps.training.single_run import train_sae
    from primary.model_dir import save_primary
    from tests.tiny_setup import primary_for, tiny_world

    cfg = SAETrainConfig(
        architecture="batchtopk", k=3, expansion_factor=2.0, lr=3e-3, buffer_size=128,
        min_buffer=64, primary_batch_size=16, sae_batch_size=32, sae_steps_per_primary_step=1,
        epochs=1, data_fraction=1.0, resample_steps=(), dead_after_rows=64, num_builds=60,
        seed=0, log_every=5, checkpoint_every=5, eval_builds=20)
    _, vocab, weapon_vocab = tiny_world(cfg.num_builds, cfg.seed)
    model_dir = save_primary(tmp_path / "primary", primary_for(vocab, weapon_vocab), vocab,
                             weapon_vocab)
    whole = train_sae(cfg, tmp_path / "whole", primary_dir=model_dir, analyze=False)
    stopped = train_sae(cfg, tmp_path / "parts", primary_dir=model_dir, stop_after_steps=6,
                        analyze=False)
    assert stopped["stopped"]
    resumed = train_sae(cfg, tmp_path / "parts", primary_dir=model_dir, analyze=False)
    assert resumed["steps"] == whole["steps"] > 6
    assert resumed["architecture"] == "batchtopk" and resumed["fve"] == whole["fve"]
    a, b = load_sae(tmp_path / "whole" / "sae"), load_sae(tmp_path / "parts" / "sae")
    assert a.config == b.config and a.config.architecture == "batchtopk"
    for k, v in a.params().items():
        np.testing.assert_array_equal(b.params()[k], v, err_msg=k)
    assert float(a.params()["threshold"]) > 0
    with pytest.raises(ValueError, match="--k 40 must be smaller than the number of features 32"):
        train_sae(dataclasses.replace(cfg, k=40), tmp_path / "bad", primary_dir=model_dir)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("arch", ["relu_l1", "jumprelu"])
def test_encoder_init_scale_scales_only_the_initial_encoder(arch):
    base = SAETrainConfig(architecture=arch, expansion_factor=2.0)
    sae = create_sae(base.sae_config(8), seed=3)
    plain = init_train_state(sae, base, 10).params
    scaled = init_train_state(sae, dataclasses.replace(base, encoder_init_scale=0.1), 10).params
    np.testing.assert_allclose(scaled["W_enc"], 0.1 * plain["W_enc"], rtol=1e-6)
    for name in plain:
        if name != "W_enc":
            np.testing.assert_array_equal(scaled[name], plain[name], err_msg=name)
