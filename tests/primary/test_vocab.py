"""Tokenisation, detokenisation and the vocabulary files."""

import json

import numpy as np
import pytest

from primary.vocab import (
    ABILITIES,
    ABILITY_TOKENS,
    AP_THRESHOLDS,
    MAIN_ONLY_ABILITIES,
    NULL,
    PAD,
    STANDARD_ABILITIES,
    BuildError,
    Vocab,
    WeaponVocab,
    ap_to_build,
    ap_to_token_multihot,
    builds_to_ap,
    check_id_range,
    detokenize,
    tokenize_build,
    visible_ap,
)
from tests.fixture_paths import SPLATNLP_FIXTURE

FIXTURE = str(SPLATNLP_FIXTURE)


def test_swim_speed_13_ap_gives_three_cumulative_tokens():
    assert tokenize_build({"swim_speed_up": 13}) == [
        "swim_speed_up_3",
        "swim_speed_up_6",
        "swim_speed_up_12",
    ]


def test_token_order_main_only_first_then_standard_in_list_order():
    build = {"swim_speed_up": 3, "ninja_squid": 10, "comeback": 10, "ink_saver_main": 6,
             "quick_respawn": 57 - 29}
    assert tokenize_build(build) == [
        "comeback",
        "ninja_squid",
        "ink_saver_main_3",
        "ink_saver_main_6",
        "quick_respawn_3",
        "quick_respawn_6",
        "quick_respawn_12",
        "quick_respawn_15",
        "quick_respawn_21",
        "swim_speed_up_3",
    ]


@pytest.mark.parametrize("ap, n_tokens", [(0, 0), (2, 0), (3, 1), (5, 1), (6, 2), (11, 2),
                                          (12, 3), (15, 4), (21, 5), (29, 6), (38, 7),
                                          (51, 8), (57, 9)])
def test_thresholds_are_inclusive(ap, n_tokens):
    toks = tokenize_build({"run_speed_up": ap})
    expected = [f"run_speed_up_{t}" for t in AP_THRESHOLDS[:n_tokens]] or [NULL]
    assert toks == expected


def test_empty_build_is_null():
    assert tokenize_build({}) == [NULL]


@pytest.mark.parametrize(
    "build, fragment",
    [
        ({"swim_speed": 3}, "unknown ability"),
        ({"swim_speed_up": -3}, "negative"),
        ({"swim_speed_up": 3.0}, "integer"),
        ({"swim_speed_up": 30, "run_speed_up": 30}, "over the maximum"),
    ],
)
def test_tokenize_errors_name_the_problem(build, fragment):
    with pytest.raises(BuildError, match=fragment):
        tokenize_build(build, where="row 7")
    with pytest.raises(BuildError, match="row 7"):
        tokenize_build(build, where="row 7")


def test_detokenize_round_trips_and_gives_ranges():
    build = {"ninja_squid": 10, "swim_speed_up": 13, "quick_super_jump": 6,
             "ink_resistance_up": 57 - 29 - 10}
    ranges = {r.ability: (r.low, r.high) for r in detokenize(tokenize_build(build))}
    assert ranges["ninja_squid"] == (10, 10)
    assert ranges["swim_speed_up"] == (12, 14)
    assert ranges["quick_super_jump"] == (6, 11)
    assert ranges["ink_resistance_up"] == (15, 20)
    for ability, ap in build.items():
        low, high = ranges[ability]
        assert low <= ap <= high
    lower = {a: lo for a, (lo, _) in ranges.items()}
    assert tokenize_build(lower) == tokenize_build(build)


def test_detokenize_skips_specials_and_rejects_unknown():
    assert detokenize([NULL, PAD]) == []
    top = detokenize(["swim_speed_up_57"])[0]
    assert (top.low, top.high) == (57, 57)
    with pytest.raises(BuildError, match="swim_speed_up_4"):
        detokenize(["swim_speed_up_4"])


def test_vectorised_tokenisation_matches_tokenize_build():
    rng = np.random.default_rng(0)
    builds = []
    for _ in range(200):
        b = {}
        for a in rng.choice(STANDARD_ABILITIES, size=4, replace=False):
            b[str(a)] = int(rng.integers(0, 14))
        b[str(rng.choice(MAIN_ONLY_ABILITIES))] = 10
        builds.append(b)
    hot = ap_to_token_multihot(builds_to_ap(builds))
    assert hot.shape == (200, len(ABILITY_TOKENS))
    for row, b in zip(hot, builds):
        expected = [t for t in tokenize_build(b) if t != NULL]
        assert [ABILITY_TOKENS[j] for j in np.flatnonzero(row)] == expected
    assert ap_to_build(builds_to_ap(builds)[0]) == {k: v for k, v in builds[0].items() if v}


def test_visible_ap_is_what_the_tokens_show():
    swim = ABILITIES.index("swim_speed_up")
    ap = np.zeros((9, len(ABILITIES)), np.int16)
    ap[:, swim] = [0, 2, 3, 5, 6, 9, 12, 13, 57]
    ap[:, 0] = 10  # a main-only ability keeps its AP
    seen = visible_ap(ap)
    assert seen[:, swim].tolist() == [0, 0, 3, 3, 6, 6, 12, 12, 57]
    assert seen[:, 0].tolist() == [10] * 9 and seen.dtype == ap.dtype
    # Against the token path: the visible AP is the low end of each detokenised range.
    rng = np.random.default_rng(1)
    builds = [{str(a): int(rng.integers(1, 20))
               for a in rng.choice(STANDARD_ABILITIES, size=3, replace=False)}
              for _ in range(100)]
    for row, build in zip(visible_ap(builds_to_ap(builds)), builds):
        low = {r.ability: r.low for r in detokenize(tokenize_build(build))}
        assert {a: int(v) for a, v in zip(ABILITIES, row) if v} == low


def test_canonical_vocab_layout():
    v = Vocab.canonical()
    assert len(v) == 138 + 2 == len(ABILITY_TOKENS) + 2
    assert v.pad_id == len(v) - 1
    assert v.decode(v.encode(["comeback", NULL])) == ["comeback", NULL]
    assert (v.ability_token_ids == np.arange(138)).all()
    assert len(ABILITIES) == 26


def test_vocab_json_round_trip(tmp_path):
    v = Vocab.canonical()
    v.save(tmp_path / "vocab.json")
    assert Vocab.load(tmp_path / "vocab.json") == v


def test_fixture_vocab_loads_and_round_trips(tmp_path):
    v = Vocab.load(f"{FIXTURE}/vocab.json")
    with open(f"{FIXTURE}/vocab.json") as f:
        raw = json.load(f)
    assert v.token_to_id == raw
    assert v.pad_id == raw[PAD] and v.null_id == raw[NULL]
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == v
    # Every ability token the fixture knows maps back to the same id.
    known = v.ability_token_ids >= 0
    assert known.sum() == sum(t in raw for t in ABILITY_TOKENS)
    for j in np.flatnonzero(known):
        assert raw[ABILITY_TOKENS[j]] == v.ability_token_ids[j]
    w = WeaponVocab.load(f"{FIXTURE}/weapon_vocab.json")
    w.save(tmp_path / "w.json")
    assert WeaponVocab.load(tmp_path / "w.json") == w
    assert 40 in set(w.game_ids.tolist())


@pytest.mark.parametrize(
    "mapping, fragment",
    [
        ({"a": 0, PAD: 2, NULL: 3}, "no gaps"),
        ({"a": 0, PAD: 1}, "<NULL>"),
    ],
)
def test_vocab_rejects_bad_files(mapping, fragment):
    with pytest.raises(ValueError, match=fragment):
        Vocab(mapping)


def test_unknown_token_error_names_token_and_source():
    with pytest.raises(BuildError, match="'nope'.*canonical"):
        Vocab.canonical().encode(["nope"], where="line 3")


def test_check_ids_names_the_bad_id_and_position():
    v = Vocab.canonical()
    ids = np.array([[0, 1], [2, len(v)]])
    with pytest.raises(ValueError, match=rf"token id {len(v)} at position \(1, 1\) of batch 5"):
        v.check_ids(ids, where="batch 5")
    with pytest.raises(ValueError, match="-1"):
        v.check_ids(np.array([-1]), where="x")
    with pytest.raises(ValueError, match="empty"):
        check_id_range(np.array([], np.int32), 4, what="token id", where="x")
    v.check_ids(np.array([0, len(v) - 1]), where="fine")


def test_weapon_vocab_encoding_and_errors():
    w = WeaponVocab.from_game_ids([40, 0, 40, 2010])
    assert len(w) == 3
    assert w.encode_game_ids(np.array([2010, 0, 40])).tolist() == [2, 0, 1]
    with pytest.raises(BuildError, match="weapon game id 50 from stat.ink"):
        w.encode_game_ids(np.array([50]), where="stat.ink")
    with pytest.raises(ValueError, match="weapon id 3"):
        w.check_ids(np.array([3]), where="batch")
    with pytest.raises(ValueError, match="weapon_id_<N>"):
        WeaponVocab({"sshooter": 0})


# ----------------------------------------------------------------------------- ability names


def test_every_ability_resolves_by_name_english_name_or_game_code_in_any_case():
    from primary.vocab import ABILITY_CODES, ABILITY_NAMES, resolve_ability

    assert len(set(ABILITY_NAMES.values())) == len(set(ABILITY_CODES.values())) == 26
    for a in ABILITIES:
        for t in (a, a.upper(), ABILITY_NAMES[a], ABILITY_NAMES[a].lower(),
                  f"  {ABILITY_NAMES[a]} ", ABILITY_CODES[a], ABILITY_CODES[a].lower()):
            assert resolve_ability(t) == a, t
    assert resolve_ability("Swim Speed Up") == "swim_speed_up"
    assert resolve_ability("Ink Saver (Main)") == "ink_saver_main"
    assert resolve_ability("SquidMoveSpatter_Reduction") == "ninja_squid"
    assert resolve_ability("last-ditch effort") == "last_ditch_effort"


def test_unknown_abilities_are_named_with_near_misses():
    from primary.vocab import UnknownAbilityError, resolve_ability

    with pytest.raises(UnknownAbilityError, match=r"^x: unknown ability 'Swim Sped Up' \(did you "
                                                  r"mean 'Swim Speed Up'\?\)"):
        resolve_ability("Swim Sped Up", where="x")
    with pytest.raises(BuildError, match=r"'ink_saver_mian' \(did you mean 'ink_saver_main' "
                                         r"\(Ink Saver \(Main\)\)"):
        resolve_ability("ink_saver_mian")
    with pytest.raises(UnknownAbilityError, match=r"unknown ability 'jump'; "):
        resolve_ability("jump")
    with pytest.raises(UnknownAbilityError, match="unknown ability 3"):
        resolve_ability(3)


def test_resolve_abilities_maps_keys_and_refuses_one_ability_twice():
    from primary.vocab import resolve_abilities

    assert resolve_abilities({"Swim Speed Up": 12, "ninja_squid": 10}) == {
        "swim_speed_up": 12, "ninja_squid": 10}
    with pytest.raises(BuildError, match="'Swim Speed Up' and 'SquidMove_Up' both name "
                                         "'swim_speed_up'"):
        resolve_abilities({"Swim Speed Up": 3, "SquidMove_Up": 6})


def test_ability_table_text_lists_every_ability():
    from primary.vocab import ABILITY_CODES, ABILITY_NAMES, ability_table_text

    lines = ability_table_text().splitlines()
    assert len(lines) == len(ABILITIES) + 1
    for a, line in zip(ABILITIES, lines[1:]):
        assert line.startswith(a + " ") and ABILITY_NAMES[a] in line and ABILITY_CODES[a] in line
        assert ("main slot of" in line) == (a in MAIN_ONLY_ABILITIES)
