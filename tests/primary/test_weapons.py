"""The weapon table: the game's whole versus roster, and the names a user may type."""

import json

import numpy as np
import pytest

from primary.synthetic import SYNTHETIC_WEAPON_IDS
from primary.weapons import (
    DATA_FILE,
    GAME_DATA_VERSION,
    WEAPON_CLASSES,
    WEAPONS,
    UnknownWeaponError,
    find_weapon,
    resolve_weapon,
    weapon_by_game_id,
    weapon_by_statink_key,
    weapon_class_index,
    weapon_name,
    weapon_table_text,
)
from tests.fixture_paths import SPLATNLP_FIXTURE

# Kits per class in game data 11.3.0 (rows of WeaponInfoMain with Type "Versus").
COUNT_BY_CLASS = {"shooter": 40, "blaster": 17, "roller": 14, "brush": 9, "charger": 19,
                  "slosher": 15, "splatling": 15, "dualie": 16, "brella": 11, "stringer": 9,
                  "splatana": 9}


def test_table_holds_every_versus_kit_of_the_game_data():
    assert len(WEAPONS) == 174 == sum(COUNT_BY_CLASS.values())
    assert GAME_DATA_VERSION == "11.3.0"
    assert {c: sum(w.weapon_class == c for w in WEAPONS) for c in WEAPON_CLASSES} == \
        COUNT_BY_CLASS
    assert len({w.game_id for w in WEAPONS}) == len(WEAPONS)
    assert len({w.internal for w in WEAPONS}) == len(WEAPONS)
    assert len({w.name for w in WEAPONS}) == len(WEAPONS)
    keys = [w.statink_key for w in WEAPONS if w.statink_key]
    assert len(keys) == len(set(keys)) == 173
    for w in WEAPONS:
        assert w.name and w.sub and w.special and w.internal


def test_data_file_names_its_sources_and_version():
    source = json.loads(DATA_FILE.read_text())["source"]
    assert source["game_data_version"] == "11.3.0"
    assert "Leanny/splat3" in source["game_data"] and "stat.ink" in source["fields"][
        "statink_key"]
    assert source["count"] == len(WEAPONS)


@pytest.mark.parametrize(
    "gid, key, name, cls, sub, special",
    [
        (0, "bold", "Sploosh-o-matic", "shooter", "Curling Bomb", "Ultra Stamp"),
        (11, "momiji", "Custom Splattershot Jr.", "shooter", "Torpedo", "Wave Breaker"),
        (40, "sshooter", "Splattershot", "shooter", "Suction Bomb", "Trizooka"),
        (90, "jetsweeper", "Jet Squelcher", "shooter", "Angle Shooter", "Ink Vac"),
        (200, "nova", "Luna Blaster", "blaster", "Splat Bomb", "Zipcaster"),
        (2030, "liter4k", "E-liter 4K", "charger", "Ink Mine", "Wave Breaker"),
        (4010, "barrelspinner", "Heavy Splatling", "splatling", "Sprinkler", "Wave Breaker"),
        (5050, "gaen_ff", "Douser Dualies FF", "dualie", "Ink Mine", "Killer Wail 5.1"),
        (8010, "drivewiper", "Splatana Wiper", "splatana", "Torpedo", "Ultra Stamp"),
        (8020, "dentalwiper_mint", "Mint Decavitator", "splatana", "Suction Bomb",
         "Big Bubbler"),
    ],
)
def test_kits(gid, key, name, cls, sub, special):
    w = weapon_by_game_id(gid)
    assert (w.statink_key, w.name, w.weapon_class, w.sub, w.special) == (key, name, cls, sub,
                                                                          special)
    assert weapon_by_statink_key(key) is w
    assert weapon_name(gid) == name


def test_the_kit_stat_ink_has_no_key_for_is_known_by_its_other_names():
    w = weapon_by_game_id(48)
    assert (w.name, w.internal, w.statink_key) == ("Plastic-Bottle Shot Replica",
                                                   "Shooter_Normal_S", None)
    assert resolve_weapon("plastic-bottle shot replica") is w


def test_every_kit_resolves_by_each_of_its_names_in_any_case():
    for w in WEAPONS:
        texts = [w.game_id, str(w.game_id), f" {w.game_id} ", w.internal, w.name, w.name.upper(),
                 w.internal.lower(), np.int32(w.game_id)]
        if w.statink_key:
            texts += [w.statink_key, w.statink_key.upper()]
        for t in texts:
            assert resolve_weapon(t) is w, t
            assert find_weapon(t) is w, t


def test_near_misses_get_suggestions_and_bad_values_are_named():
    with pytest.raises(UnknownWeaponError, match=r"unknown weapon 'Splatershot' \(did you mean "
                                                 r"'Splattershot'"):
        resolve_weapon("Splatershot")
    with pytest.raises(UnknownWeaponError, match=r"'sshoter' \(did you mean 'sshooter' "
                                                 r"\(Splattershot\)"):
        resolve_weapon("sshoter")
    with pytest.raises(UnknownWeaponError, match=r"^--weapon: unknown weapon 'zzz'; "):
        resolve_weapon("zzz", where="--weapon")
    with pytest.raises(UnknownWeaponError, match="unknown weapon 99999"):
        resolve_weapon(99999)
    for bad in (True, None, 4.0, [40]):
        with pytest.raises(UnknownWeaponError, match="a game id or a name"):
            resolve_weapon(bad)
    assert find_weapon("zzz") is None and find_weapon(None) is None


def test_lookup_errors_name_the_key():
    with pytest.raises(KeyError, match="'not_a_weapon'"):
        weapon_by_statink_key("not_a_weapon")
    with pytest.raises(KeyError, match="99999"):
        weapon_by_game_id(99999)


def test_display_name_falls_back_for_unknown_ids():
    assert weapon_name(99999) == "weapon 99999"


def test_fixture_weapons_are_all_in_the_table():
    with open(SPLATNLP_FIXTURE / "weapon_vocab.json") as f:
        keys = json.load(f)
    for key in keys:
        weapon_by_game_id(int(key.removeprefix("weapon_id_")))


def test_the_synthetic_world_kits_are_in_the_table():
    assert len(SYNTHETIC_WEAPON_IDS) == len(set(SYNTHETIC_WEAPON_IDS)) == 78
    for g in SYNTHETIC_WEAPON_IDS:
        weapon_by_game_id(g)


def test_class_index():
    idx = weapon_class_index([40, 2010, 8020, 99999])
    assert idx.tolist() == [WEAPON_CLASSES.index("shooter"), WEAPON_CLASSES.index("charger"),
                            WEAPON_CLASSES.index("splatana"), -1]


def test_table_text_lists_every_kit():
    lines = weapon_table_text().splitlines()
    assert lines[0].split() == ["id", "weapon", "class", "sub", "special"]
    assert len(lines) == len(WEAPONS) + 2 and lines[-1] == "174 weapons (game data 11.3.0)"
    for w, line in zip(WEAPONS, lines[1:]):
        assert line.split()[0] == str(w.game_id)
        for part in (w.name, w.weapon_class, w.sub, w.special):
            assert part in line
