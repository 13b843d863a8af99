"""Edits of partial builds: each condition added and removed, legal results only."""

import numpy as np
import pytest

from primary.conditions import PARTIAL_CATALOGUE, condition_by_name, condition_matrix
from primary.partial_builds import PartialBuilds, partial_builds
from primary.partial_edits import edit_partial_conjunctions, token_columns
from primary.synthetic import generate_builds
from primary.vocab import ABILITY_TOKENS, Vocab, WeaponVocab


@pytest.fixture(scope="module")
def partial():
    builds = generate_builds(400, seed=7)
    return partial_builds(builds, Vocab.canonical(), WeaponVocab.from_game_ids(builds.weapons),
                          instances=1, seed=3)


NAMES = ["swim_speed_up>=15", "ninja_squid", "no:quick_respawn", "open_main:head",
         "tokens<=2", "tokens>=6", "class:shooter", "quick_super_jump:from>=12"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("add", [True, False])
def test_each_condition_is_added_and_removed(partial, name, add):
    k = PARTIAL_CATALOGUE.index(condition_by_name(name))
    before = condition_matrix(partial, PARTIAL_CATALOGUE)[:, k]
    edited, ok = edit_partial_conjunctions(partial, np.array([k]), PARTIAL_CATALOGUE, add=add,
                                           seed=1)
    after = condition_matrix(edited, PARTIAL_CATALOGUE)[:, k]
    assert ok.mean() > 0.5, name
    assert (after[ok] == add).all()
    # Rows that already met the wish are left as they were.
    same = before == add
    assert (edited.tokens[same] == partial.tokens[same]).all()
    assert (edited.weapons[same] == partial.weapons[same]).all()


def test_a_conjunction_keeps_its_named_abilities_while_counts_change(partial):
    conj = np.array([PARTIAL_CATALOGUE.index(condition_by_name(n))
                     for n in ("ink_saver_sub>=6", "tokens<=1")])
    edited, ok = edit_partial_conjunctions(partial, conj, PARTIAL_CATALOGUE, add=True, seed=0)
    m = condition_matrix(edited, PARTIAL_CATALOGUE)[:, conj]
    assert ok.any() and m[ok].all()
    isub = token_columns("ink_saver_sub")
    # Down to one token: the Ink Saver (Sub) rung the rule needs, nothing else.
    assert (edited.tokens[ok].sum(1) == 1).all() and edited.tokens[ok][:, isub[1]].all()


def test_adding_a_main_only_ability_takes_out_its_rival():
    tokens = np.zeros((1, len(ABILITY_TOKENS)), bool)
    tokens[0, ABILITY_TOKENS.index("haunt")] = True
    part = PartialBuilds(np.array([2010]), tokens, np.array([0]))
    k = PARTIAL_CATALOGUE.index(condition_by_name("ninja_squid"))
    edited, ok = edit_partial_conjunctions(part, np.array([k]), PARTIAL_CATALOGUE, add=True)
    assert ok[0] and edited.token_names(0) == ["ninja_squid"]


def test_an_edit_that_shows_more_than_a_build_holds_is_refused():
    tokens = np.zeros((1, len(ABILITY_TOKENS)), bool)
    tokens[0, ABILITY_TOKENS.index("swim_speed_up_3")] = True
    part = PartialBuilds(np.array([2010]), tokens, np.array([0]))
    # 51 + 29 AP of the two abilities the rule names: no 57-AP build holds that, and no
    # other ability can make room.
    conj = np.array([PARTIAL_CATALOGUE.index(condition_by_name(n))
                     for n in ("swim_speed_up>=51", "quick_respawn>=29")])
    edited, ok = edit_partial_conjunctions(part, conj, PARTIAL_CATALOGUE, add=True)
    assert not ok[0] and edited.tokens[0, ABILITY_TOKENS.index("swim_speed_up_51")]


def test_room_is_made_by_the_largest_ability_the_rule_does_not_name():
    tokens = np.zeros((1, len(ABILITY_TOKENS)), bool)
    for t in ("quick_respawn_3", "quick_respawn_29", "ink_saver_sub_6", "ink_saver_sub_12"):
        tokens[0, ABILITY_TOKENS.index(t)] = True
    part = PartialBuilds(np.array([2010]), tokens, np.array([0]))
    k = PARTIAL_CATALOGUE.index(condition_by_name("swim_speed_up>=21"))
    edited, ok = edit_partial_conjunctions(part, np.array([k]), PARTIAL_CATALOGUE, add=True)
    # 21 + 29 + 12 AP shown is too much: Quick Respawn's top rung makes room.
    assert ok[0]
    assert edited.token_names(0) == ["ink_saver_sub_6", "ink_saver_sub_12", "quick_respawn_3",
                                     "swim_speed_up_21"]
