"""The weapon table."""

import pytest

from primary.weapons import (
    WEAPON_CLASSES,
    WEAPONS,
    weapon_by_game_id,
    weapon_by_statink_key,
    weapon_class_index,
    weapon_name,
)
from tests.fixture_paths import SPLATNLP_FIXTURE


def test_table_is_large_unique_and_covers_every_class():
    assert len(WEAPONS) >= 50
    assert len({w.game_id for w in WEAPONS}) == len(WEAPONS)
    assert len({w.statink_key for w in WEAPONS}) == len(WEAPONS)
    assert {w.weapon_class for w in WEAPONS} == set(WEAPON_CLASSES)
    for w in WEAPONS:
        assert w.name and w.sub and w.special


@pytest.mark.parametrize(
    "gid, key, name, cls",
    [
        (0, "bold", "Sploosh-o-matic", "shooter"),
        (10, "wakaba", "Splattershot Jr.", "shooter"),
        (40, "sshooter", "Splattershot", "shooter"),
        (50, "52gal", ".52 Gal", "shooter"),
        (200, "nova", "Luna Blaster", "blaster"),
        (1010, "splatroller", "Splat Roller", "roller"),
        (2010, "splatcharger", "Splat Charger", "charger"),
        (3000, "bucketslosher", "Slosher", "slosher"),
        (4010, "barrelspinner", "Heavy Splatling", "splatling"),
        (5010, "maneuver", "Splat Dualies", "dualie"),
        (6000, "parashelter", "Splat Brella", "brella"),
        (7010, "tristringer", "Tri-Stringer", "stringer"),
        (8010, "drivewiper", "Splatana Wiper", "splatana"),
    ],
)
def test_known_weapons(gid, key, name, cls):
    w = weapon_by_game_id(gid)
    assert (w.statink_key, w.name, w.weapon_class) == (key, name, cls)
    assert weapon_by_statink_key(key) is w
    assert weapon_name(gid) == name


def test_lookup_errors_name_the_key():
    with pytest.raises(KeyError, match="'not_a_weapon'"):
        weapon_by_statink_key("not_a_weapon")
    with pytest.raises(KeyError, match="99999"):
        weapon_by_game_id(99999)


def test_display_name_falls_back_for_unknown_ids():
    assert weapon_name(99999) == "weapon 99999"


def test_fixture_weapons_are_all_in_the_table():
    import json

    with open(SPLATNLP_FIXTURE / "weapon_vocab.json") as f:
        keys = json.load(f)
    for key in keys:
        weapon_by_game_id(int(key.removeprefix("weapon_id_")))


def test_class_index():
    idx = weapon_class_index([40, 2010, 99999])
    assert idx.tolist() == [WEAPON_CLASSES.index("shooter"), WEAPON_CLASSES.index("charger"), -1]
