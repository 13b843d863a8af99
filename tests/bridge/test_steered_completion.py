"""Steered completion: edits, the slot diff, and a concept's feature steering a trained model."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bridge.steered_completion import (
    diff_builds,
    edit_features_params,
    steered_builds,
    steered_logits_fn,
)
from bridge.steering import HookMode, edit_feature_params, hooked_forward
from primary.completion import CompletedBuild
from primary.vocab import ABILITIES, ABILITY_INDEX
from sae_jax.model import SAEConfig, create_sae, decode, encode
from tests.fixture_paths import FIXTURES
from tests.tiny_setup import HIDDEN, primary_for, tiny_world

DEMO_SMALL = FIXTURES / "demo_small"
A = ABILITY_INDEX


@pytest.fixture(scope="module")
def tiny():
    builds, vocab, weapon_vocab = tiny_world()
    sae = create_sae(SAEConfig(input_dim=HIDDEN, expansion_factor=3.0), seed=2)
    return builds, vocab, weapon_vocab, primary_for(vocab, weapon_vocab), sae


def test_joint_edit_sets_every_feature_and_matches_the_single_edit(tiny):
    *_, sae = tiny
    params, spec = sae.params(), sae.config.encoder
    x = jax.random.normal(jax.random.key(0), (5, HIDDEN))
    one = edit_features_params(params, spec, x, jnp.array([4]), jnp.array([2.5]))
    np.testing.assert_allclose(one, edit_feature_params(params, spec, x, 4, 2.5, True))
    # Two features without the error term: decode of the activations with both overwritten.
    two = edit_features_params(params, spec, x, jnp.array([1, 7]), jnp.array([3.0, 0.0]),
                               keep_error=False)
    _, h = encode(params, x, spec)
    want = np.array(h)
    want[:, 1], want[:, 7] = 3.0, 0.0
    np.testing.assert_allclose(two, decode(params, jnp.asarray(want)), rtol=1e-5, atol=1e-6)
    # Keeping the error: setting features to their own values changes nothing.
    same = edit_features_params(params, spec, x[:1], jnp.array([1, 7]), h[0, jnp.array([1, 7])])
    np.testing.assert_allclose(same, x[:1], rtol=1e-5, atol=1e-5)


def test_steered_logits_equal_the_hooked_edit(tiny):
    builds, vocab, weapon_vocab, primary, sae = tiny
    from primary.build_inputs import full_build_inputs

    inputs = full_build_inputs(builds, vocab, weapon_vocab)
    fn = steered_logits_fn(primary, sae, 5, 4.0, keep_error=False)
    got = fn(jnp.asarray(inputs["tokens"]), jnp.asarray(inputs["weapons"]),
             jnp.asarray(inputs["key_padding_mask"]))
    want = hooked_forward(primary, sae, inputs["tokens"], inputs["weapons"],
                          inputs["key_padding_mask"], HookMode.EDIT, feature=5, value=4.0).logits
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_edits_are_errors(tiny):
    *_, primary, sae = tiny
    with pytest.raises(IndexError, match="out of range"):
        steered_logits_fn(primary, sae, sae.hidden_dim, 1.0)
    with pytest.raises(ValueError, match="one value per feature"):
        steered_logits_fn(primary, sae, [1, 2], [1.0])
    with pytest.raises(ValueError, match="twice"):
        steered_logits_fn(primary, sae, [1, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        steered_logits_fn(primary, sae, 1, float("nan"))


def build(mains, subs):
    mains, subs = np.array([A[a] for a in mains]), np.array([A[a] for a in subs])
    ap = np.zeros(len(ABILITIES), int)
    np.add.at(ap, mains, 10)
    np.add.at(ap, subs, 3)
    return CompletedBuild(40, mains, subs, {ABILITIES[i]: int(v) for i, v in enumerate(ap) if v},
                          0.0, {})


def test_diff_keeps_shared_subs_in_place():
    ssu, ism, rsu, qr = "swim_speed_up", "ink_saver_main", "run_speed_up", "quick_respawn"
    before = build([ssu, "ninja_squid", ism], [ssu, ssu, ssu, ism, ism, ism, rsu, rsu, rsu])
    after = build([ssu, ism, ism], [qr, ssu, ssu, ism, ism, ism, rsu, rsu, qr])
    d = diff_builds(before, after)
    changed = [(s.piece, s.slot, s.before, s.after) for s in d.slots if s.changed]
    assert changed == [("head", "sub 3", ssu, qr), ("clothes", "main", "ninja_squid", ism),
                       ("shoes", "sub 3", rsu, qr)]
    assert d.ap == {"ink_saver_main": (19, 29), "ninja_squid": (10, 0), "quick_respawn": (0, 6),
                    "run_speed_up": (9, 6), "swim_speed_up": (19, 16)}
    assert "quick_respawn_6" in d.tokens_added and "ninja_squid" in d.tokens_removed
    text = d.render()
    assert "* clothes  main   ninja_squid -> ink_saver_main" in text
    assert json.loads(json.dumps(d.to_dict()))["changed_slots"] == 3
    assert diff_builds(before, before).changed_slots == 0


def test_steered_builds_returns_json_ready_dicts(tiny):
    builds, vocab, weapon_vocab, primary, sae = tiny
    out = steered_builds(primary, sae, vocab, weapon_vocab, int(builds.weapons[0]),
                         {"ninja_squid": 10}, [0, 3], [5.0, 0.0], beam_size=2)
    again = json.loads(json.dumps(out))
    assert again["edits"] == [{"feature": 0, "value": 5.0}, {"feature": 3, "value": 0.0}]
    for side in ("before", "after"):
        assert again[side]["ap"]["ninja_squid"] == 10
        assert sum(again[side]["ap"].values()) == 57
    assert "before:" in out["text"] and "diff (" in out["text"]
