"""Partial builds (the primary's training inputs) and the conditions they meet."""

import numpy as np
import pytest

from primary.build_edits import legal
from primary.builds import BuildSet
from primary.conditions import (
    CATALOGUE,
    PARTIAL_CATALOGUE,
    condition_by_name,
    condition_matrix,
    families,
)
from primary.examples import NUM_INSTANCES
from primary.partial_builds import PartialBuilds, fits_a_build, partial_builds, seen_ap
from primary.synthetic import generate_builds
from primary.vocab import (
    ABILITIES,
    ABILITY_INDEX,
    ABILITY_TOKENS,
    Vocab,
    WeaponVocab,
    ap_to_token_multihot,
)


def _tokens(*names):
    row = np.zeros(len(ABILITY_TOKENS), bool)
    row[[ABILITY_TOKENS.index(t) for t in names]] = True
    return row


def test_seen_ap_is_the_highest_rung_present():
    rows = np.stack([_tokens("swim_speed_up_29"),  # a high rung alone still shows 29
                     _tokens("swim_speed_up_3", "swim_speed_up_12", "ninja_squid"),
                     _tokens()])
    ap = seen_ap(rows)
    assert ap.shape == (3, len(ABILITIES))
    assert ap[0, ABILITY_INDEX["swim_speed_up"]] == 29 and ap[0].sum() == 29
    assert ap[1, ABILITY_INDEX["swim_speed_up"]] == 12
    assert ap[1, ABILITY_INDEX["ninja_squid"]] == 10
    assert not ap[2].any()
    # A full build's tokens show its visible AP.
    full = generate_builds(30, seed=2).ap
    shown = seen_ap(ap_to_token_multihot(full))
    assert (ap_to_token_multihot(shown) == ap_to_token_multihot(full)).all()


@pytest.fixture(scope="module")
def drawn():
    builds = generate_builds(300, seed=4)
    vocab, weapon_vocab = Vocab.canonical(), WeaponVocab.from_game_ids(builds.weapons)
    return builds, partial_builds(builds, vocab, weapon_vocab, instances=2, seed=1)


def test_partial_builds_are_drawn_as_training_draws_its_examples(drawn):
    builds, part = drawn
    full = ap_to_token_multihot(builds.ap)
    removed = part.token_counts > 0
    # Two drawn per build, then one empty input per NUM_INSTANCES drawn ones.
    assert len(part) == 2 * len(builds) + round(2 * len(builds) / NUM_INSTANCES)
    assert np.bincount(part.build_index[:2 * len(builds)]).tolist() == [2] * len(builds)
    # Every partial build is a subset of its build's tokens, with at least one removed
    # (a one-token build becomes the empty input), and carries its weapon.
    src = full[part.build_index]
    assert not (part.tokens & ~src).any()
    assert (part.token_counts < src.sum(1)).all()
    assert (part.weapons == builds.weapons[part.build_index]).all()
    empty = part.token_counts == 0
    assert empty[2 * len(builds):].all() and removed[:2 * len(builds)].mean() > 0.95
    # Deterministic per seed.
    again = partial_builds(builds, Vocab.canonical(), WeaponVocab.from_game_ids(
        builds.weapons), instances=2, seed=1)
    assert (again.tokens == part.tokens).all()


def test_partial_conditions_read_what_a_partial_build_shows():
    part = PartialBuilds(
        np.array([2010, 2010, 2010]),
        np.stack([_tokens("swim_speed_up_29"), _tokens("comeback", "ink_saver_sub_3",
                                                         "ink_saver_sub_6"), _tokens()]),
        np.array([0, 1, 2]))
    m = condition_matrix(part, PARTIAL_CATALOGUE)

    def meets(name):
        return m[:, PARTIAL_CATALOGUE.index(condition_by_name(name))].tolist()

    assert meets("swim_speed_up>=21") == [True, False, False]
    assert meets("no:swim_speed_up") == [False, True, True]
    assert meets("ink_saver_sub>=6") == [False, True, False]
    assert meets("tokens<=0") == [False, False, True]
    assert meets("tokens<=1") == [True, False, True]
    assert meets("tokens>=3") == [False, True, False]
    assert meets("open_main:head") == [True, False, True]  # comeback takes the head main
    assert meets("open_main:clothes") == [True, True, True]
    assert meets("weapon:2010") == [True, True, True]
    assert condition_by_name("tokens<=0").text == "no tokens"
    assert condition_by_name("tokens>=6").text == "≥6 tokens"
    # Shown only from a rung: some token of the ability, none below the rung.
    assert meets("swim_speed_up:from>=29") == [True, False, False]
    assert meets("swim_speed_up:from>=38") == [False, False, False]
    assert meets("ink_saver_sub:from>=6") == [False, False, False]  # its first rung is there
    assert condition_by_name("swim_speed_up:from>=21").text == "Swim Speed Up shown only ≥21"


def test_partial_conditions_on_full_builds_count_their_tokens():
    builds = BuildSet(np.array([2010]), np.zeros((1, len(ABILITIES)), np.int16))
    ap = builds.ap.copy()
    ap[0, ABILITY_INDEX["swim_speed_up"]] = 13  # tokens 3, 6, 12
    m = condition_matrix(BuildSet(builds.weapons, ap), PARTIAL_CATALOGUE)[0]
    assert m[PARTIAL_CATALOGUE.index(condition_by_name("tokens>=3"))]
    assert not m[PARTIAL_CATALOGUE.index(condition_by_name("tokens>=4"))]
    # A full build shows every rung up to its AP: never only from a higher one.
    assert not m[[k for k, c in enumerate(PARTIAL_CATALOGUE) if c.kind == "shown_from"]].any()


def test_partial_catalogue_extends_the_catalogue_with_count_families():
    assert PARTIAL_CATALOGUE[:len(CATALOGUE)] == CATALOGUE
    fam = families(PARTIAL_CATALOGUE)
    at_most = [k for k, c in enumerate(PARTIAL_CATALOGUE) if c.kind == "tokens_at_most"]
    at_least = [k for k, c in enumerate(PARTIAL_CATALOGUE) if c.kind == "tokens_at_least"]
    opens = [k for k, c in enumerate(PARTIAL_CATALOGUE) if c.kind == "open_main"]
    # One family per direction (never conjoined with itself), one per open piece.
    assert len(set(fam[at_most].tolist())) == 1 and len(set(fam[at_least].tolist())) == 1
    assert fam[at_most[0]] != fam[at_least[0]]
    assert len(set(fam[opens].tolist())) == len(opens) == 3
    # One family per ability for "shown only from", apart from the ability's rungs.
    shown = [c for c in PARTIAL_CATALOGUE if c.kind == "shown_from"]
    assert len({c.family for c in shown}) == 14 and len(shown) == 14 * 8
    assert condition_by_name("swim_speed_up:from>=21").family != condition_by_name(
        "swim_speed_up>=21").family
    # Strictest count first, so that ties go to it.
    assert [PARTIAL_CATALOGUE[k].threshold for k in at_most] == sorted(
        PARTIAL_CATALOGUE[k].threshold for k in at_most)
    assert [PARTIAL_CATALOGUE[k].threshold for k in at_least] == sorted(
        (PARTIAL_CATALOGUE[k].threshold for k in at_least), reverse=True)


def test_bad_partial_builds_are_refused():
    with pytest.raises(ValueError, match="same rows"):
        PartialBuilds(np.array([1, 2]), np.zeros((3, len(ABILITY_TOKENS)), bool),
                      np.array([0, 1]))
    builds = generate_builds(5, seed=0)
    with pytest.raises(ValueError, match="1..5"):
        partial_builds(builds, Vocab.canonical(), WeaponVocab.from_game_ids(builds.weapons),
                       instances=0)


def test_what_a_partial_build_shows_fits_a_legal_build(drawn):
    _, part = drawn
    assert fits_a_build(part.ap).all()  # drawn from legal builds
    ap = np.zeros((4, len(ABILITIES)), np.int64)
    ap[0, ABILITY_INDEX["swim_speed_up"]] = 51
    ap[0, ABILITY_INDEX["quick_respawn"]] = 29  # 80 AP: too much
    ap[1, ABILITY_INDEX["ninja_squid"]] = ap[1, ABILITY_INDEX["haunt"]] = 10  # one piece
    ap[2, ABILITY_INDEX["swim_speed_up"]] = 21  # 7 subs, or a main and 4 subs ...
    ap[2, ABILITY_INDEX["quick_respawn"]] = 29  # ... beside 2 mains and 3 subs: fits
    ap[3, ABILITY_INDEX["swim_speed_up"]] = 38  # 3 mains and 3 subs ...
    ap[3, ABILITY_INDEX["stealth_jump"]] = 10  # ... but the shoes' main is taken
    ap[3, ABILITY_INDEX["ink_saver_sub"]] = 21  # and 7 more subs: no
    assert fits_a_build(ap).tolist() == [False, False, True, False]
    # Every legal AP fits (it is its own build); random shown AP at least as often.
    rng = np.random.default_rng(0)
    shown = np.zeros((3000, len(ABILITIES)), np.int64)
    shown[:, 12:] = rng.choice([0, 3, 6, 12, 15, 21, 29], size=(3000, 14),
                               p=[.7, .1, .08, .05, .03, .02, .02])
    assert (fits_a_build(shown) >= legal(shown)).all()
