"""Held-out SAE evaluation against hand-made SAEs and a numpy reference."""

import jax.numpy as jnp
import numpy as np
import pytest

from apps.runs.evaluation import evaluate_sae
from bridge.harvest import harvest_array
from primary.examples import iterate_batches, make_examples
from sae_jax.model import SAEConfig, create_sae, sae_from_params
from tests.tiny_setup import HIDDEN, primary_for, tiny_world


@pytest.fixture(scope="module")
def setup():
    builds, vocab, weapon_vocab = tiny_world()
    examples = make_examples(builds, vocab, weapon_vocab, seed=3)
    return primary_for(vocab, weapon_vocab), examples


def all_targets(examples):
    rows = [b["targets"][np.asarray(b["weight"]) > 0]
            for b in iterate_batches(examples, 7, seed=0, epoch=0, shuffle=False,
                                     drop_remainder=False)]
    return np.concatenate(rows).astype(np.float64)


def identity_sae(d):
    """Perfect reconstruction: features relu(x) and relu(-x), atoms +e_i and -e_i."""
    eye = np.eye(d, dtype=np.float32)
    params = {"W_enc": np.concatenate([eye, -eye], 1), "b_enc": np.zeros(2 * d, np.float32),
              "W_dec": np.concatenate([eye, -eye], 0), "b_dec": np.zeros(d, np.float32)}
    return sae_from_params(SAEConfig(d, 2.0, clip_max=1e6), params)


def test_perfect_reconstruction_gives_fve_and_loss_recovered_one(setup):
    primary, examples = setup
    out = evaluate_sae(primary, identity_sae(HIDDEN), examples, batch_size=16)
    assert out["mse"] < 1e-10
    assert out["fve"] == pytest.approx(1.0, abs=1e-6)
    assert out["l_spliced"] == pytest.approx(out["l_true"], rel=1e-6)
    assert out["loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert out["kl_spliced"] == pytest.approx(0.0, abs=1e-6)
    assert out["logit_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert out["top5_agreement"] == pytest.approx(1.0)
    assert out["shrinkage"] == pytest.approx(1.0, abs=1e-5)
    assert out["recon_cosine"] == pytest.approx(1.0, abs=1e-5)


def bce(z, t):
    return np.logaddexp(0.0, z) - z * t


def test_metrics_match_numpy(setup):
    primary, examples = setup
    sae = create_sae(SAEConfig(HIDDEN, 4.0, clip_max=6.0), seed=5)
    p = {k: np.asarray(v, np.float64) for k, v in sae.params().items()}
    p["b_enc"][:5] = -100.0  # never fire: dead
    p["b_enc"][5:9] = 100.0  # always fire: dense
    sae.set_params({k: jnp.asarray(v, jnp.float32) for k, v in p.items()})
    out = evaluate_sae(primary, sae, examples, batch_size=16)  # last batch padded

    pooled = harvest_array(primary, examples, 16)
    # The same SAE on given pooled vectors (as a sweep evaluates its members).
    given = evaluate_sae(primary, sae, examples, batch_size=16, pooled=pooled)
    x = pooled.astype(np.float64)
    t = all_targets(examples)
    assert len(x) == len(t) == out["num_inputs"]
    h = np.clip((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0, 6.0)
    atoms = p["W_dec"] / np.linalg.norm(p["W_dec"], axis=1, keepdims=True)
    recon = h @ atoms + p["b_dec"]
    w = np.asarray(primary.output_layer.kernel[...], np.float64)
    b = np.asarray(primary.output_layer.bias[...], np.float64)
    l_true = bce(x @ w + b, t).mean()
    l_spliced = bce(recon @ w + b, t).mean()
    l_ablated = bce(np.broadcast_to(x.mean(0) @ w + b, t.shape), t).mean()
    z, zs = x @ w + b, recon @ w + b
    p_true, p_spliced = 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-zs))
    kl = (p_true * np.log(p_true / p_spliced)
          + (1 - p_true) * np.log((1 - p_true) / (1 - p_spliced))).mean()
    cosine = ((z * zs).sum(1) / np.linalg.norm(z, axis=1) / np.linalg.norm(zs, axis=1)).mean()
    top = [len(set(np.argsort(-a)[:5]) & set(np.argsort(-c)[:5])) / 5 for a, c in zip(z, zs)]
    active = h > 0.01  # the definition in sae_jax.activity, written out independently
    fired = active.mean(0)
    want = {
        "mse": ((x - recon) ** 2).mean(),
        "fve": 1 - ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(),
        "l0": active.sum(1).mean(),
        "dead_fraction": (fired == 0).mean(),
        "dense_fraction": (fired >= 0.3).mean(),
        "l_true": l_true, "l_spliced": l_spliced, "l_ablated": l_ablated,
        "loss_recovered": (l_ablated - l_spliced) / (l_ablated - l_true),
        "kl_spliced": kl, "logit_cosine": cosine, "top5_agreement": np.mean(top),
        "shrinkage": (recon * recon).sum() / (x * recon).sum(),
        "recon_cosine": ((x * recon).sum(1) / np.linalg.norm(x, axis=1)
                         / np.linalg.norm(recon, axis=1)).mean(),
    }
    assert 0 < kl and cosine < 1 and np.mean(top) < 1  # an imperfect SAE: the checks can fail
    assert want["dead_fraction"] >= 5 / 64 and want["dense_fraction"] >= 4 / 64
    for k, v in want.items():
        assert out[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
        assert given[k] == pytest.approx(v, rel=1e-4, abs=1e-6), f"{k} (pooled given)"
    assert given["num_inputs"] == out["num_inputs"]


def test_mismatched_sae_is_refused(setup):
    primary, examples = setup
    with pytest.raises(ValueError, match="input_dim 8 does not match"):
        evaluate_sae(primary, create_sae(SAEConfig(8, 2.0)), examples, batch_size=16)
    with pytest.raises(ValueError, match="3 pooled vectors given for"):
        evaluate_sae(primary, create_sae(SAEConfig(HIDDEN, 2.0)), examples, batch_size=16,
                     pooled=np.zeros((3, HIDDEN), np.float32))
