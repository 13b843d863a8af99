"""The synthetic build world: legality, determinism, honest concept labels."""

import numpy as np
import pytest

from primary.builds import (
    BuildSet,
    check_ap_legal,
    check_slots_legal,
    slots_to_ap,
)
from primary.planted_concepts import CONCEPT_NAMES, CONCEPTS, concept_holds
from primary.synthetic import generate_builds, generate_slots
from primary.vocab import ABILITIES, ABILITY_INDEX, MAIN_ONLY_ABILITIES, PIECE_OF_MAIN_ONLY
from primary.weapons import WEAPONS, weapon_by_game_id


@pytest.fixture(scope="module")
def world():
    return generate_builds(20_000, seed=3)


def test_twenty_thousand_builds_are_all_legal(world):
    assert len(world) == 20_000
    assert world.ap.dtype == np.int16 and world.ap.shape == (20_000, 26)
    assert (world.ap.sum(1) == 57).all()
    assert world.check_legal().all()


def test_slot_level_assignments_are_legal_and_sum_to_the_ap():
    rng = np.random.default_rng(1)
    ids = np.array([w.game_id for w in WEAPONS], np.int32)
    weapons, mains, subs, labels = generate_slots(2000, rng, ids)
    assert check_slots_legal(mains, subs).all()
    ap = slots_to_ap(mains, subs)
    assert check_ap_legal(ap).all()
    for p, piece in enumerate(("head", "clothes", "shoes")):
        mo = mains[:, p][mains[:, p] < len(MAIN_ONLY_ABILITIES)]
        assert all(PIECE_OF_MAIN_ONLY[ABILITIES[a]] == piece for a in mo)


def test_deterministic_per_seed():
    a, b = generate_builds(3000, seed=7), generate_builds(3000, seed=7)
    c = generate_builds(3000, seed=8)
    np.testing.assert_array_equal(a.ap, b.ap)
    np.testing.assert_array_equal(a.weapons, b.weapons)
    np.testing.assert_array_equal(a.concepts, b.concepts)
    assert not np.array_equal(a.ap, c.ap)


def test_concept_labels_are_honest(world):
    holds = concept_holds(world.ap)
    assert world.concepts.shape == (20_000, len(CONCEPTS))
    assert world.concept_names == CONCEPT_NAMES
    assert (holds | ~world.concepts).all()
    # Spot-check the requirement directly rather than through concept_holds.
    for j, c in enumerate(CONCEPTS):
        rows = world.concepts[:, j]
        for ability, ap in c.required.items():
            assert (world.ap[rows, ABILITY_INDEX[ability]] >= ap).all(), (c.name, ability)


def test_every_concept_appears_and_builds_carry_one_to_three(world):
    freq = world.concepts.mean(0)
    assert (freq > 0.02).all(), dict(zip(CONCEPT_NAMES, freq))
    per_build = world.concepts.sum(1)
    assert per_build.min() >= 1 and per_build.max() <= 3
    assert (per_build >= 2).mean() > 0.3


def test_at_least_sixteen_concepts_that_share_abilities():
    assert len(CONCEPTS) >= 16
    standard = [{a for a in c.required if a not in PIECE_OF_MAIN_ONLY} for c in CONCEPTS]
    for i, c in enumerate(CONCEPTS):
        others = set().union(*(s for j, s in enumerate(standard) if j != i))
        assert standard[i] & others, f"{c.name} shares no required ability"


def test_concepts_are_visible_but_not_trivially_unique(world):
    # A concept's core abilities are far likelier when it is planted...
    for j, c in enumerate(CONCEPTS):
        on = world.concepts[:, j]
        for ability in c.required:
            col = world.ap[:, ABILITY_INDEX[ability]]
            assert (col[on] > 0).mean() == 1.0
            assert (col[~on] > 0).mean() < 0.95, (c.name, ability)
    # ...but a standard ability alone never identifies one concept.
    swim = world.ap[:, ABILITY_INDEX["swim_speed_up"]] >= 16
    carriers = world.concepts[swim].any(0)
    assert carriers.sum() >= 3


def test_weapon_class_shapes_concept_choice(world):
    cls = np.array([weapon_by_game_id(g).weapon_class for g in world.weapons])
    anchor = world.concepts[:, CONCEPT_NAMES.index("anchor")]
    assert anchor[cls == "charger"].mean() > 2 * anchor[cls == "shooter"].mean()


def test_weapon_restriction_and_errors():
    b = generate_builds(500, seed=0, weapons=[40, 2010])
    assert set(np.unique(b.weapons).tolist()) == {40, 2010}
    with pytest.raises(KeyError, match="12345"):
        generate_builds(10, weapons=[12345])
    with pytest.raises(ValueError, match="n must be"):
        generate_builds(-1)
    assert len(generate_builds(0)) == 0


def test_check_legal_rejects_broken_builds():
    base = generate_builds(50, seed=5).ap.astype(np.int32)
    assert check_ap_legal(base).all()
    idx = {a: ABILITY_INDEX[a] for a in ABILITIES}
    bad = []
    # total 56: take 1 AP away
    row = base[0].copy()
    row[np.flatnonzero(row)[0]] -= 1
    bad.append(row)
    # main-only at sub strength (3 AP)
    row = np.zeros(26, np.int32)
    row[idx["ninja_squid"]] = 3
    row[idx["swim_speed_up"]] = 54
    bad.append(row)
    # two head main-only abilities
    row = np.zeros(26, np.int32)
    row[idx["comeback"]] = 10
    row[idx["tenacity"]] = 10
    row[idx["swim_speed_up"]] = 37
    bad.append(row)
    # four 10-AP mains' worth: 40 + 17 cannot be made of 3 mains + 9 subs
    row = np.zeros(26, np.int32)
    row[idx["swim_speed_up"]] = 40
    row[idx["run_speed_up"]] = 17
    bad.append(row)
    assert not check_ap_legal(np.stack(bad)).any()
    good = np.zeros((3, 26), np.int32)
    good[0, idx["swim_speed_up"]] = 57  # three mains and nine subs of one ability
    good[1, [idx["comeback"], idx["ninja_squid"], idx["stealth_jump"]]] = 10
    good[1, idx["quick_respawn"]] = 27
    good[2, idx["swim_speed_up"]] = 30
    good[2, idx["run_speed_up"]] = 27
    assert check_ap_legal(good).all()


def test_buildset_helpers(world):
    part = world.subset(np.arange(10))
    assert len(part) == 10 and part.concepts.shape == (10, len(CONCEPTS))
    both = BuildSet.concat([part, world.subset(slice(10, 15))])
    assert len(both) == 15 and both.concepts is not None
    np.testing.assert_array_equal(both.ap, world.ap[:15])
    unlabelled = BuildSet(part.weapons, part.ap)
    assert BuildSet.concat([part, unlabelled]).concepts is None
    b = world.build(0)
    assert sum(b.values()) == 57
    assert world.tokens(0)[0] != "<NULL>"
    text = world.describe(0)
    assert weapon_by_game_id(int(world.weapons[0])).name in text
    for name in world.concepts_of(0):
        assert name in text
    with pytest.raises(ValueError, match="concept_names"):
        BuildSet(part.weapons, part.ap, part.concepts, ("just_one",))
    with pytest.raises(ValueError, match="ap must be"):
        BuildSet(part.weapons, part.ap[:, :5])


def test_check_slots_legal_rejects_rule_breaks():
    col = {a: i for i, a in enumerate(ABILITIES)}
    mains = np.array([[col["comeback"], col["ninja_squid"], col["stealth_jump"]]] * 4)
    subs = np.full((4, 9), col["swim_speed_up"])
    mains[1, 0] = col["ninja_squid"]  # a clothes ability on the head
    subs[2, 4] = col["haunt"]  # a main-only ability in a sub slot
    mains[3, 2] = -1  # an empty slot
    assert check_slots_legal(mains, subs).tolist() == [True, False, False, False]
    ap = slots_to_ap(mains[:1], subs[:1])
    assert ap[0, col["swim_speed_up"]] == 27 and ap.sum() == 57
    with pytest.raises(ValueError, match="expected mains"):
        check_slots_legal(mains[:, :2], subs)


def _digest(builds) -> str:
    import hashlib

    h = hashlib.sha256()
    for a, dtype in ((builds.weapons, "<i4"), (builds.ap, "<i2"), (builds.concepts, bool)):
        h.update(np.ascontiguousarray(a, dtype=dtype).tobytes())
    return h.hexdigest()


# sha256 of the demo's synthetic world (10,000 builds, seed 0: apps/configs/demo.flags and
# primary/configs/primary_demo.flags) as _digest hashes it: weapons as <i4, AP as <i2, concept
# labels as bool, in that order. Computed with the code before the weapon table held the
# whole roster; the demo's builds must stay byte-identical.
DEMO_WORLD_SHA256 = "73f711272f4eff61966dc984f1238892609615862da1ff38beac207e690a57a9"


def test_the_demo_world_is_unchanged():
    from primary.sources import load_builds

    assert _digest(generate_builds(10_000, 0)) == DEMO_WORLD_SHA256
    assert _digest(load_builds("synthetic", num_builds=10_000, seed=0)) == DEMO_WORLD_SHA256


def test_any_kit_of_the_roster_can_be_drawn():
    from primary.synthetic import SYNTHETIC_WEAPON_IDS

    new = [w for w in WEAPONS if w.game_id not in SYNTHETIC_WEAPON_IDS]
    assert len(new) == 96
    b = generate_builds(2000, 5, weapons=new)
    assert set(b.weapons.tolist()) == {w.game_id for w in new}
    assert b.check_legal().all()
    # Default draws stay on the synthetic world's kits.
    assert set(generate_builds(2000, 5).weapons.tolist()) == set(SYNTHETIC_WEAPON_IDS)
