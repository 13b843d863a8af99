"""The condition catalogue and the vectorised condition matrix."""

import numpy as np

from primary.builds import BuildSet
from primary.conditions import (
    CATALOGUE,
    condition_by_name,
    condition_matrix,
    families,
    occurring,
)
from primary.synthetic import generate_builds
from primary.vocab import AP_THRESHOLDS, MAIN_ONLY_ABILITIES, STANDARD_ABILITIES
from primary.weapons import WEAPON_CLASSES, WEAPONS, weapon_by_game_id


def test_catalogue_holds_every_kind_once():
    kinds = [c.kind for c in CATALOGUE]
    assert kinds.count("ability") == len(STANDARD_ABILITIES) * len(AP_THRESHOLDS)
    assert kinds.count("main_only") == len(MAIN_ONLY_ABILITIES)
    assert kinds.count("absent") == len(MAIN_ONLY_ABILITIES) + len(STANDARD_ABILITIES)
    assert kinds.count("weapon") == len(WEAPONS)
    assert kinds.count("class") == len(WEAPON_CLASSES)
    assert kinds.count("sub") == len({w.sub for w in WEAPONS})
    assert kinds.count("special") == len({w.special for w in WEAPONS})
    assert len({c.name for c in CATALOGUE}) == len(CATALOGUE)
    assert condition_by_name("swim_speed_up>=15").text == "Swim Speed Up ≥15"
    assert condition_by_name("ninja_squid").text == "Ninja Squid"
    assert condition_by_name("class:charger").text == "class: charger"
    assert condition_by_name("weapon:2010").text == "Splat Charger"
    assert condition_by_name("no:quick_super_jump").text == "no Quick Super Jump"
    # Absences come after every condition on what a build has (ties go to those).
    first_absent = kinds.index("absent")
    assert set(kinds[first_absent:]) == {"absent"}


def _meets(c, weapon, build):
    if c.kind == "ability":
        return build.get(c.ability, 0) >= c.threshold
    if c.kind == "main_only":
        return build.get(c.ability, 0) > 0
    if c.kind == "absent":
        return build.get(c.ability, 0) == 0
    try:
        w = weapon_by_game_id(weapon)
    except KeyError:
        return False
    return {"weapon": w.game_id, "class": w.weapon_class, "sub": w.sub,
            "special": w.special}[c.kind] == c.value


def test_condition_matrix_matches_a_build_by_build_reading():
    builds = generate_builds(120, seed=5)
    # One weapon the table lacks: it meets no weapon-side condition.
    builds = BuildSet(np.concatenate([builds.weapons[:-1], [99999]]), builds.ap)
    m = condition_matrix(builds)
    assert m.shape == (len(builds), len(CATALOGUE)) and m.dtype == bool
    for i in range(0, len(builds), 7):
        expect = [_meets(c, int(builds.weapons[i]), builds.build(i)) for c in CATALOGUE]
        assert m[i].tolist() == expect, i
    assert not m[-1, [k for k, c in enumerate(CATALOGUE) if c.kind == "class"]].any()
    assert m[:, [k for k, c in enumerate(CATALOGUE) if c.kind == "class"]][:-1].sum(1).tolist() \
        == [1] * (len(builds) - 1)


def test_occurring_and_families():
    builds = generate_builds(50, seed=1)
    m = condition_matrix(builds)
    occ = occurring(m)
    assert set(occ.tolist()) == set(np.flatnonzero(m.any(0)).tolist())
    fam = families()
    # The rungs of one ability and its absence are one family.
    rungs = [k for k, c in enumerate(CATALOGUE) if c.ability == "swim_speed_up"]
    assert len(rungs) == len(AP_THRESHOLDS) + 1 and len(set(fam[rungs].tolist())) == 1
    others = [k for k, c in enumerate(CATALOGUE) if c.kind not in ("ability", "absent")]
    assert len(set(fam[others].tolist())) == len(others)
    assert fam[rungs[0]] not in set(fam[others].tolist())
