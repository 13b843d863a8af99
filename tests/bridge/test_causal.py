"""The causal check: edited builds through the primary and the SAE, signs on a built case."""

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from bridge.causal import (
    CausalConfig,
    causal_check,
    feature_activations,
    pair_activations,
    pooled_of_builds,
    rung_curves,
)
from primary.build_edits import add_conditions, set_ability_rung
from primary.conditions import CATALOGUE, CONDITION_INDEX, condition_matrix
from primary.model import PrimaryConfig, create_model
from primary.synthetic import generate_builds
from primary.vocab import Vocab, WeaponVocab
from sae_jax.model import SAEConfig, create_sae, encode


@pytest.fixture(scope="module")
def setup():
    builds = generate_builds(200, seed=3)
    vocab = Vocab.canonical()
    weapon_vocab = WeaponVocab.from_game_ids(builds.weapons)
    cfg = PrimaryConfig(vocab_size=len(vocab), weapon_vocab_size=len(weapon_vocab),
                        embedding_dim=8, hidden_dim=16, num_layers=1, num_heads=2,
                        num_inducing_points=4, pad_token_id=vocab.pad_id)
    primary = create_model(cfg, seed=0)

    def pooled(b):
        return pooled_of_builds(primary, b, vocab, weapon_vocab, 64)

    x = pooled(builds)
    # A feature that reads the direction in which putting on Ninja Squid moves the pooled
    # vector, and its mirror image, which reads the opposite direction.
    ninja = CATALOGUE[CONDITION_INDEX["ninja_squid"]]
    lack = np.flatnonzero(~condition_matrix(builds, [ninja])[:, 0])
    edited, ok = add_conditions(builds.subset(lack), [ninja])
    d = (pooled(edited.subset(np.flatnonzero(ok))) - x[lack[ok]]).mean(0)
    d /= np.linalg.norm(d)
    sae = create_sae(SAEConfig(input_dim=16, expansion_factor=2 / 16), seed=0)
    params = sae.params()
    w = np.stack([d, -d], 1).astype(np.float32)
    proj = x @ w
    params["W_enc"] = jnp.asarray(w)
    params["b_enc"] = jnp.asarray(-np.median(proj, axis=0))
    params["b_dec"] = jnp.zeros(16)
    sae.set_params(params)
    return SimpleNamespace(builds=builds, vocab=vocab, weapon_vocab=weapon_vocab,
                           primary=primary, sae=sae, pooled=x, pooled_fn=pooled)


def test_sign_agrees_for_the_feature_that_reads_the_edit_and_not_for_its_mirror(setup):
    s = setup
    cond = condition_matrix(s.builds, CATALOGUE)
    k = CONDITION_INDEX["ninja_squid"]
    conj = np.array([[k, -1], [k, -1]])
    out = causal_check(s.primary, s.vocab, s.weapon_vocab, s.sae, s.builds, s.pooled, cond,
                       CATALOGUE, conj, config=CausalConfig(per_direction=16))
    assert out["add_n"].tolist() == [16, 16] and out["remove_n"].min() > 0
    assert out["add_mean_change"][0] > 0 and out["remove_mean_change"][0] < 0
    assert out["add_mean_change"][1] < 0 and out["remove_mean_change"][1] > 0
    assert out["agrees"].tolist() == [1.0, 0.0]
    assert 0 < out["add_turned_on"][0] <= 1 and out["add_turned_on"][1] == 0


def test_features_without_a_rule_are_not_checked(setup):
    s = setup
    cond = condition_matrix(s.builds, CATALOGUE)
    out = causal_check(s.primary, s.vocab, s.weapon_vocab, s.sae, s.builds, s.pooled, cond,
                       CATALOGUE, np.full((2, 3), -1))
    assert np.isnan(out["agrees"]).all() and out["add_n"].sum() == 0


def test_pair_and_feature_activations_match_the_encoder(setup):
    s = setup
    full = np.asarray(encode(s.sae.params(), jnp.asarray(s.pooled), s.sae.config.clip_max)[1])
    rows = np.array([0, 5, 5, 17])
    feats = np.array([1, 0, 1, 0])
    np.testing.assert_allclose(pair_activations(s.sae, s.pooled, rows, feats),
                               full[rows, feats], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feature_activations(s.sae, s.pooled, np.array([1])),
                               full[:, [1]], rtol=1e-5, atol=1e-6)


def test_rung_curves_are_the_mean_activation_at_each_rung(setup):
    s = setup
    sample = s.builds.subset(np.arange(40))
    curves = rung_curves(s.primary, s.vocab, s.weapon_vocab, s.sae, sample, [0, 1],
                         abilities=["swim_speed_up", "ninja_squid"])
    c = curves[0]["swim_speed_up"]
    assert c["ap"][:3] == [0, 3, 6] and len(c["ap"]) == len(c["mean"]) == len(c["n"])
    assert curves[0]["ninja_squid"]["ap"] == [0, 10]
    edited, ok = set_ability_rung(sample, "swim_speed_up", 12)
    x = s.pooled_fn(edited.subset(np.flatnonzero(ok)))
    want = feature_activations(s.sae, x, np.array([1])).mean()
    i = c["ap"].index(12)
    assert curves[1]["swim_speed_up"]["mean"][i] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert c["n"][i] == ok.sum()


def test_budget_keeps_the_rules_of_the_highest_priority_features(setup):
    s = setup
    cond = condition_matrix(s.builds, CATALOGUE)
    conj = np.array([[CONDITION_INDEX["ninja_squid"]], [CONDITION_INDEX["swim_speed_up>=12"]]])
    cfg = CausalConfig(per_direction=4, min_per_direction=4, max_builds=8)
    out = causal_check(s.primary, s.vocab, s.weapon_vocab, s.sae, s.builds, s.pooled, cond,
                       CATALOGUE, conj, config=cfg, priority=np.array([0.2, 0.9]))
    assert out["add_n"][0] == 0 and np.isnan(out["agrees"][0])
    assert out["add_n"][1] == 4 and not np.isnan(out["agrees"][1])


def test_pair_activations_use_the_architectures_own_encoder(setup):
    """A top-k feature's activation depends on the whole row: read through the encoder."""
    sae = create_sae(SAEConfig(input_dim=16, expansion_factor=2, architecture="topk", k=4),
                     seed=1)
    full = np.asarray(encode(sae.params(), jnp.asarray(setup.pooled), sae.config.encoder)[1])
    assert ((full > 0).sum(1) <= 4).all()
    rows, feats = np.array([0, 3, 3, 150]), np.array([1, 2, 5, 31])
    np.testing.assert_allclose(pair_activations(sae, setup.pooled, rows, feats),
                               full[rows, feats], rtol=1e-5, atol=1e-6)


def test_partial_builds_are_checked_by_editing_their_tokens(setup):
    from bridge.harvest import pooled_of_partial_builds
    from primary.conditions import PARTIAL_CATALOGUE
    from primary.partial_builds import partial_builds
    from primary.partial_edits import edit_partial_conjunctions

    s = setup
    # Few rows in batches of 64: few widths to compile.
    part = partial_builds(s.builds.subset(np.arange(100)), s.vocab, s.weapon_vocab,
                          instances=1, seed=0)

    def pooled(p):
        return pooled_of_partial_builds(s.primary, p, s.vocab, s.weapon_vocab, batch_size=64)

    x = pooled(part)
    k = PARTIAL_CATALOGUE.index(CATALOGUE[CONDITION_INDEX["swim_speed_up>=12"]])
    cond = condition_matrix(part, PARTIAL_CATALOGUE)
    lack = np.flatnonzero(~cond[:, k])
    edited, ok = edit_partial_conjunctions(part.subset(lack), np.array([k]), PARTIAL_CATALOGUE,
                                           add=True)
    d = (pooled(edited.subset(np.flatnonzero(ok))) - x[lack[ok]]).mean(0)
    d /= np.linalg.norm(d)
    sae = create_sae(SAEConfig(input_dim=16, expansion_factor=2 / 16), seed=0)
    params = sae.params()
    w = np.stack([d, -d], 1).astype(np.float32)
    params["W_enc"] = jnp.asarray(w)
    params["b_enc"] = jnp.asarray(-np.median(x @ w, axis=0))
    params["b_dec"] = jnp.zeros(16)
    sae.set_params(params)
    out = causal_check(s.primary, s.vocab, s.weapon_vocab, sae, part, x, cond,
                       PARTIAL_CATALOGUE, np.array([[k], [k]]),
                       config=CausalConfig(per_direction=12, batch_size=64))
    assert out["add_n"].tolist() == [12, 12] and out["remove_n"].min() > 0
    assert out["add_mean_change"][0] > 0 and out["remove_mean_change"][0] < 0
    assert out["agrees"].tolist() == [1.0, 0.0]
