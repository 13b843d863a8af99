"""The slot allocator against brute force, and its vectorised feasibility test."""

import itertools

import numpy as np
import pytest

from primary.allocator import allocate, fits, min_ap_row, raise_fits
from primary.builds import check_ap_legal, check_slots_legal, slots_to_ap
from primary.vocab import (
    ABILITIES,
    ABILITY_INDEX,
    GEAR_PIECES,
    MAIN_ONLY_ABILITIES,
    PIECE_OF_MAIN_ONLY,
    STANDARD_ABILITIES,
    BuildError,
)

N_MO = len(MAIN_ONLY_ABILITIES)


def brute_force(row: np.ndarray):
    """Least overshoot over every slot filling (None if nothing fits).

    Each main slot holds nothing or one asked ability allowed there; subs are
    interchangeable, so every count vector of asked standard abilities over at
    most nine subs is tried.
    """
    asked = [int(i) for i in np.flatnonzero(row)]
    std = [i for i in asked if i >= N_MO]
    main_choices = []
    for piece in GEAR_PIECES:
        allowed = [-1] + [i for i in asked
                          if i >= N_MO or PIECE_OF_MAIN_ONLY[ABILITIES[i]] == piece]
        main_choices.append(allowed)
    combos = [c for c in itertools.product(range(10), repeat=len(std)) if sum(c) <= 9]
    counts = np.array(combos, np.int64).reshape(len(combos), len(std))
    best = None
    for mains in itertools.product(*main_choices):
        base = np.zeros(len(ABILITIES), np.int64)
        for m in mains:
            if m >= 0:
                base[m] += 10
        ap = np.repeat(base[None], len(counts), 0)
        ap[:, std] += 3 * counts
        ok = (ap >= row[None]).all(1)
        if ok.any():
            over = int((ap[ok] - row[None]).sum(1).min())
            best = over if best is None else min(best, over)
    return best


def random_row(rng, max_abilities=3):
    row = np.zeros(len(ABILITIES), np.int64)
    k = rng.integers(1, max_abilities + 1)
    for i in rng.choice(len(ABILITIES), size=k, replace=False):
        row[i] = 10 if i < N_MO and rng.random() < 0.8 else rng.integers(1, 40)
    return row


def check_assignment(alloc, row):
    """Slots within the rules, every minimum met, overshoot as reported."""
    mains = np.where(alloc.mains < 0, ABILITY_INDEX["swim_speed_up"], alloc.mains)
    subs = np.where(alloc.subs < 0, ABILITY_INDEX["swim_speed_up"], alloc.subs)
    assert check_slots_legal(mains[None], subs[None])[0]
    filled = slots_to_ap(mains[None], subs[None])
    assert check_ap_legal(filled)[0]
    given = slots_to_ap(alloc.mains[None], alloc.subs[None])[0].astype(np.int64)
    assert (given >= row).all()
    assert int((given - row).sum()) == alloc.overshoot
    assert alloc.ap == {ABILITIES[i]: int(v) for i, v in enumerate(given) if v > 0}


def test_matches_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    n_feasible = n_infeasible = 0
    for _ in range(250):
        row = random_row(rng)
        expected = brute_force(row)
        alloc = allocate(row)
        assert alloc.feasible == (expected is not None), (row, alloc.reason)
        assert bool(fits(row[None])[0]) == alloc.feasible
        if expected is None:
            n_infeasible += 1
            assert alloc.reason
            continue
        n_feasible += 1
        assert alloc.overshoot == expected, (row, alloc)
        check_assignment(alloc, row)
    assert n_feasible > 50 and n_infeasible > 20  # both sides exercised


def test_fits_agrees_with_allocate_on_larger_rows():
    rng = np.random.default_rng(1)
    rows = np.stack([random_row(rng, max_abilities=6) for _ in range(300)])
    got = fits(rows)
    want = np.array([allocate(r).feasible for r in rows])
    np.testing.assert_array_equal(got, want)
    assert got.any() and (~got).any()


def test_every_legal_build_fits_with_zero_overshoot():
    from primary.synthetic import generate_builds

    builds = generate_builds(200, seed=5)
    assert fits(builds.ap).all()
    for row in builds.ap[:40]:
        alloc = allocate(row.astype(np.int64))
        assert alloc.feasible and alloc.overshoot == 0
        assert alloc.empty_mains == 0 and alloc.empty_subs == 0


@pytest.mark.parametrize("req, words", [
    ({"ninja_squid": 12}, "main-only"),
    ({"comeback": 10, "tenacity": 10}, "head main slot"),
    ({"swim_speed_up": 57, "ink_saver_main": 3}, "sub slots"),
    ({"stealth_jump": 10, "ninja_squid": 10, "opening_gambit": 10, "ink_saver_main": 30},
     "sub slots"),
])
def test_infeasible_reasons(req, words):
    alloc = allocate(req)
    assert not alloc.feasible and not alloc
    assert words in alloc.reason


def test_small_cases():
    a = allocate({"ninja_squid": 10, "swim_speed_up": 12})
    assert a.feasible and a.overshoot == 0
    assert a.pieces[1].main == "ninja_squid"
    assert a.ap == {"ninja_squid": 10, "swim_speed_up": 12}
    # 9 AP: three subs (9) beat a main (10).
    b = allocate({"ink_saver_sub": 9})
    assert b.ap == {"ink_saver_sub": 9} and b.empty_mains == 3
    # 13 AP: main + sub (13) beat five subs (15).
    c = allocate({"run_speed_up": 13})
    assert c.ap == {"run_speed_up": 13} and c.empty_subs == 8
    assert allocate({}).feasible and allocate({}).overshoot == 0


def test_bad_input_is_an_error():
    with pytest.raises(BuildError, match="unknown ability 'jump_boost'"):
        allocate({"jump_boost": 3})
    with pytest.raises(BuildError, match="negative"):
        allocate({"swim_speed_up": -3})
    with pytest.raises(BuildError, match="integer"):
        min_ap_row({"swim_speed_up": 3.5})
    with pytest.raises(ValueError, match="shape"):
        fits(np.zeros((2, 5), np.int64))
    with pytest.raises(ValueError, match="negative"):
        fits(-np.ones((1, len(ABILITIES)), np.int64))
    assert len(STANDARD_ABILITIES) + N_MO == len(ABILITIES)


def test_raise_fits_equals_fits_of_every_raised_row():
    from primary.completion import TOKEN_ABILITY, TOKEN_LEVEL

    rng = np.random.default_rng(2)
    rows = np.stack([random_row(rng, max_abilities=5) for _ in range(400)])
    rows = rows[fits(rows)]
    got = raise_fits(rows, TOKEN_ABILITY, TOKEN_LEVEL)
    raised = np.repeat(rows[:, None, :], len(TOKEN_ABILITY), 1)
    cols = np.arange(len(TOKEN_ABILITY))
    raised[:, cols, TOKEN_ABILITY] = np.maximum(raised[:, cols, TOKEN_ABILITY], TOKEN_LEVEL)
    want = fits(raised.reshape(-1, len(ABILITIES))).reshape(got.shape)
    np.testing.assert_array_equal(got, want)
    assert got.mean() > 0.2 and (~got).mean() > 0.05
