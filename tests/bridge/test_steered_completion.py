"""Steered completion: edits, the slot diff, and a concept's feature steering a trained model."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bridge.steered_completion import (
    diff_builds,
    edit_features_params,
    edit_rows_params,
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


@pytest.mark.parametrize("keep_error", [True, False])
def test_edits_per_row_are_each_rows_joint_edit_number_for_number(tiny, keep_error):
    # Each row with its own features and values computes what the joint edit of those
    # computes in a call of the same size, to the bit (so a batched lab request gets the
    # answer it gets alone, but for XLA's rounding of different call sizes).
    *_, sae = tiny
    params, spec = sae.params(), sae.config.encoder
    x = jax.random.normal(jax.random.key(1), (6, HIDDEN))
    rows = jax.jit(edit_rows_params, static_argnums=(1, 5))
    joint = jax.jit(edit_features_params, static_argnums=(1, 5))
    rng = np.random.default_rng(0)
    for k in (1, 2, 3):
        features = np.stack([rng.choice(sae.hidden_dim, k, replace=False) for _ in x])
        values = rng.normal(0, 2, (len(x), k)).astype(np.float32)
        got = np.asarray(rows(params, spec, x, jnp.asarray(features, jnp.int32),
                              jnp.asarray(values), keep_error))
        for b in range(len(x)):
            want = joint(params, spec, x, jnp.asarray(features[b], jnp.int32),
                         jnp.asarray(values[b]), keep_error)
            np.testing.assert_array_equal(got[b], np.asarray(want)[b], err_msg=f"k={k} row {b}")
    if not keep_error:
        return
    # Padding edits (feature -1) change nothing: one edit padded to two and to four is the
    # edit alone, and padding only is the input itself.
    features = rng.choice(sae.hidden_dim, (len(x), 1)).astype(np.int32)
    values = rng.normal(0, 2, (len(x), 1)).astype(np.float32)
    alone = np.asarray(rows(params, spec, x, jnp.asarray(features), jnp.asarray(values), True))
    for pad in (1, 3):
        padded = np.concatenate([features, np.full((len(x), pad), -1, np.int32)], 1)
        zeros = np.concatenate([values, np.zeros((len(x), pad), np.float32)], 1)
        np.testing.assert_array_equal(alone, np.asarray(rows(
            params, spec, x, jnp.asarray(padded), jnp.asarray(zeros), True)))
    nothing = rows(params, spec, x, jnp.full((len(x), 2), -1, jnp.int32),
                   jnp.zeros((len(x), 2)), True)
    np.testing.assert_array_equal(np.asarray(nothing), np.asarray(x))


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
                         {"ninja_squid": 10}, [0, 3], [5.0, 0.0], beam_size=2, fixed_width=True)
    again = json.loads(json.dumps(out))
    assert again["edits"] == [{"feature": 0, "value": 5.0}, {"feature": 3, "value": 0.0}]
    for side in ("before", "after"):
        assert again[side]["ap"]["ninja_squid"] == 10
        assert sum(again[side]["ap"].values()) == 57
    assert "before:" in out["text"] and "diff (" in out["text"]


# ----------------------------------------------------------------------------- trained model


@pytest.fixture(scope="module")
def demo_small():
    """The committed small trained primary + SAE, its held-out builds, and for every concept
    its best SAE feature (concept recovery on those builds)."""
    from bridge.harvest import pooled_of_inputs
    from primary.build_inputs import full_build_inputs
    from primary.examples import split_builds
    from primary.model_dir import load_primary
    from primary.sources import load_builds
    from sae_jax.concept_recovery import concept_recovery
    from sae_jax.sae_dir import load_sae

    primary, vocab, weapon_vocab = load_primary(DEMO_SMALL / "primary")
    sae = load_sae(DEMO_SMALL / "sae")
    cfg = json.loads((DEMO_SMALL / "train_config.json").read_text())
    builds = load_builds(cfg["data_source"], num_builds=cfg["num_builds"], seed=cfg["seed"])
    test = builds.subset(split_builds(len(builds), cfg["seed"])[2][:800])
    pooled = pooled_of_inputs(primary, full_build_inputs(test, vocab, weapon_vocab))
    acts = np.asarray(encode(sae.params(), jnp.asarray(pooled), sae.config.encoder)[1])
    rows = concept_recovery(acts, pooled, test.concepts, test.concept_names)["rows"]
    return primary, sae, vocab, weapon_vocab, test, acts, rows


def _concept_cases(test, rows, min_f1: float, per_concept: int = 16):
    """Well-recovered concepts with a standard ability among their requirements: (concept,
    feature, the weapons of builds labelled with it, whether each build has it)."""
    from primary.planted_concepts import CONCEPTS
    from primary.vocab import PIECE_OF_MAIN_ONLY

    by_name = {c.name: c for c in CONCEPTS}
    for r in sorted(rows, key=lambda r: -r["sae_f1"]):
        concept = by_name[r["concept"]]
        if r["sae_f1"] < min_f1 or all(a in PIECE_OF_MAIN_ONLY for a in concept.required):
            continue
        labelled = test.concepts[:, test.concept_names.index(concept.name)]
        yield concept, r["feature"], test.weapons[np.flatnonzero(labelled)[:per_concept]], labelled


def _meets(ap: np.ndarray, required) -> np.ndarray:
    return np.all([ap[:, A[a]] >= v for a, v in required.items()], axis=0)


def _signature_ap(ap: np.ndarray, required) -> np.ndarray:
    from primary.vocab import PIECE_OF_MAIN_ONLY

    return sum(ap[:, A[a]].astype(float) for a in required if a not in PIECE_OF_MAIN_ONLY)


def test_zeroing_a_concepts_feature_removes_its_signature(demo_small):
    # Seed each completion with one ability of a well-recovered concept (its main-only one,
    # if it has one) for weapons that carry the concept: the model completes the rest of
    # the concept. Set the concept's feature to 0 and it should complete less of it.
    from primary.completion import complete_builds
    from primary.vocab import PIECE_OF_MAIN_ONLY

    primary, sae, vocab, weapon_vocab, test, acts, rows = demo_small
    met_drop, ap_drop = [], []
    cases = list(_concept_cases(test, rows, min_f1=0.85))
    assert len(cases) >= 3, [(r["concept"], r["sae_f1"]) for r in rows]
    for concept, feature, weapons, _ in cases:
        seed = next((a for a in concept.required if a in PIECE_OF_MAIN_ONLY),
                    next(iter(concept.required)))
        observed = np.zeros((len(weapons), len(ABILITIES)), np.int64)
        observed[:, A[seed]] = concept.required[seed]
        before = complete_builds(primary, vocab, weapon_vocab, weapons, observed,
                                 fixed_width=True)
        after = complete_builds(None, vocab, weapon_vocab, weapons, observed, fixed_width=True,
                                logits_fn=steered_logits_fn(primary, sae, feature, 0.0))
        assert (after.ap[:, A[seed]] >= concept.required[seed]).all()  # the seed stays
        met_drop.append(_meets(before.ap, concept.required).mean()
                        - _meets(after.ap, concept.required).mean())
        ap_drop.append((_signature_ap(before.ap, concept.required)
                        - _signature_ap(after.ap, concept.required)).mean())
    # On average the signature loses AP, and for most concepts far fewer builds meet it.
    assert np.mean(ap_drop) >= 3.0, ap_drop
    assert np.mean(np.asarray(met_drop) >= 0.3) >= 0.5, met_drop


def test_raising_a_concepts_feature_builds_the_concept(demo_small):
    # From an empty build, setting the feature to a value it takes on the concept's own
    # builds makes the completion meet the concept far more often.
    from primary.completion import complete_builds

    primary, sae, vocab, weapon_vocab, test, acts, rows = demo_small
    for concept, feature, weapons, labelled in _concept_cases(test, rows, min_f1=0.85):
        empty = np.zeros((len(weapons), len(ABILITIES)), np.int64)
        value = float(np.percentile(acts[labelled, feature], 90))
        before = complete_builds(primary, vocab, weapon_vocab, weapons, empty, fixed_width=True)
        after = complete_builds(None, vocab, weapon_vocab, weapons, empty, fixed_width=True,
                                logits_fn=steered_logits_fn(primary, sae, feature, value))
        gain = _meets(after.ap, concept.required).mean() - _meets(before.ap,
                                                                  concept.required).mean()
        assert gain >= 0.3, (concept.name, feature, gain)
