"""Build edits that add or remove conditions keep builds legal and do what they say."""

import numpy as np
import pytest

from primary.allocator import fits
from primary.build_edits import (
    add_conditions,
    edit_conjunctions,
    exact_fits,
    legal,
    remove_conditions,
    set_ability_rung,
)
from primary.builds import BuildSet
from primary.conditions import CATALOGUE, condition_by_name, condition_matrix
from primary.synthetic import generate_builds
from primary.vocab import ABILITY_INDEX, ABILITY_TOKENS, AP_THRESHOLDS, ap_to_token_multihot


@pytest.fixture(scope="module")
def builds():
    return generate_builds(300, seed=11)


CONJUNCTIONS = [
    ["ninja_squid", "swim_speed_up>=15"],
    ["swim_speed_up>=29", "quick_super_jump>=12"],
    ["class:charger", "ink_saver_main>=21"],
    ["sub:Splat Bomb", "run_speed_up>=6", "haunt"],
    ["special:Ink Vac"],
    ["swim_speed_up>=51"],
    ["intensify_action>=12", "no:quick_super_jump", "no:stealth_jump"],
]


@pytest.mark.parametrize("names", CONJUNCTIONS, ids=lambda n: "+".join(n))
def test_add_makes_legal_builds_that_meet_every_condition(builds, names):
    conds = [condition_by_name(n) for n in names]
    edited, ok = add_conditions(builds, conds)
    assert ok.mean() > 0.9
    assert legal(edited.ap)[ok].all() and (edited.ap.astype(int).sum(1) <= 57).all()
    assert condition_matrix(edited, conds)[ok].all()
    # Builds that already met the conjunction are left alone.
    had = condition_matrix(builds, conds).all(1)
    assert (edited.ap[had] == builds.ap[had]).all()
    assert (edited.weapons[had] == builds.weapons[had]).all()


@pytest.mark.parametrize("names", CONJUNCTIONS, ids=lambda n: "+".join(n))
def test_remove_meets_none_and_drops_abilities_just_below_the_rung(builds, names):
    conds = [condition_by_name(n) for n in names]
    edited, ok = remove_conditions(builds, conds)
    assert ok.mean() > 0.95
    assert legal(edited.ap)[ok].all()
    assert not condition_matrix(edited, conds)[ok].any()
    for c in conds:
        if c.kind != "ability":
            continue
        col = ABILITY_INDEX[c.ability]
        had = builds.ap[:, col] >= c.threshold
        prev = ([0] + list(AP_THRESHOLDS))[list(AP_THRESHOLDS).index(c.threshold)]
        assert ((edited.ap[ok & had, col] >= prev) & (edited.ap[ok & had, col] < c.threshold)).all()


def test_absence_is_added_by_taking_the_ability_off_and_removed_at_its_first_rung(builds):
    std, main_only = condition_by_name("no:swim_speed_up"), condition_by_name("no:ninja_squid")
    for c in (std, main_only):
        col = ABILITY_INDEX[c.ability]
        had = builds.ap[:, col] > 0
        added, ok = add_conditions(builds, [c])
        assert ok[had].all() and (added.ap[had, col] == 0).all()
        assert legal(added.ap).all() and (added.ap[~had] == builds.ap[~had]).all()
        removed, ok = remove_conditions(builds, [c])
        assert ok.mean() > 0.9 and legal(removed.ap)[ok].all()
        want = (3, 5) if c is std else (10, 10)  # the first rung's range; a main-only's 10
        got = removed.ap[ok & ~had, col]
        assert ((got >= want[0]) & (got <= want[1])).all() and len(got) > 0


def test_impossible_conjunction_is_refused_row_by_row(builds):
    # Comeback and Last-Ditch Effort both need the head's main slot.
    _, ok = add_conditions(builds, [condition_by_name("comeback"),
                                    condition_by_name("last_ditch_effort")])
    assert not ok.any()


def test_edits_keep_the_other_conditions_of_the_conjunction(builds):
    """Freeing slots for one condition never takes them from another of the conjunction."""
    conds = [condition_by_name("swim_speed_up>=29"), condition_by_name("quick_respawn>=21")]
    edited, ok = add_conditions(builds, conds)
    assert ok.any()
    assert (edited.ap[ok, ABILITY_INDEX["quick_respawn"]] >= 21).all()


def test_per_row_conjunctions(builds):
    rng = np.random.default_rng(0)
    conj = np.stack([rng.integers(0, len(CATALOGUE), len(builds)),
                     rng.integers(-1, len(CATALOGUE), len(builds))], 1)
    for add in (True, False):
        edited, ok = edit_conjunctions(builds, conj, CATALOGUE, add=add)
        m = condition_matrix(edited)
        met = np.where(conj >= 0, m[np.arange(len(builds))[:, None], np.maximum(conj, 0)], add)
        assert (met.all(1) if add else ~met.any(1))[ok].all()
        assert legal(edited.ap)[ok].all() and ok.mean() > 0.5
    with pytest.raises(ValueError, match="outside"):
        edit_conjunctions(builds, np.array([len(CATALOGUE)]), CATALOGUE, add=True)


@pytest.mark.parametrize("value", [0, 3, 12, 29, 57])
def test_rung_steps_are_exact_in_tokens(builds, value):
    edited, ok = set_ability_rung(builds, "swim_speed_up", value)
    assert ok.mean() > 0.95 and legal(edited.ap)[ok].all()
    hot = ap_to_token_multihot(edited.ap)
    cols = [i for i, t in enumerate(ABILITY_TOKENS) if t.startswith("swim_speed_up_")]
    want = [t <= value for t in AP_THRESHOLDS]  # exactly the rungs up to the value
    assert (hot[ok][:, cols] == np.array(want)[None]).all()


def test_exact_fits_agrees_with_the_allocator_on_whole_slot_rows():
    full = generate_builds(200, seed=2)
    assert exact_fits(full.ap).all() and fits(full.ap.astype(np.int64)).all()
    rows = full.ap.astype(np.int64).copy()
    rows[:, ABILITY_INDEX["swim_speed_up"]] += 3  # one sub too many
    assert not exact_fits(rows).any() and not fits(rows).any()
    odd = np.zeros((1, full.ap.shape[1]), np.int64)
    odd[0, ABILITY_INDEX["run_speed_up"]] = 14  # not made of whole slots
    assert not exact_fits(odd)[0] and not legal(odd)[0]
    assert legal(BuildSet(full.weapons, full.ap).ap).all()
