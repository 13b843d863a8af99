"""Splatoon 3 main weapons: game ids, stat.ink keys, names, classes and kits.

The table covers the weapons listed in :data:`WEAPONS` below (every base kit
of the launch-era classes plus a number of alternate kits); it is not the
game's complete roster. Game ids follow the game's numbering, stat.ink keys
are stat.ink's spellings. A weapon missing here still works everywhere a
game id is only carried along (display falls back to ``"weapon {gid}"``);
only the stat.ink reader and the synthetic world need the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEAPON_CLASSES: tuple[str, ...] = (
    "shooter",
    "blaster",
    "roller",
    "brush",
    "charger",
    "slosher",
    "splatling",
    "dualie",
    "brella",
    "stringer",
    "splatana",
)


@dataclass(frozen=True)
class Weapon:
    """One main weapon with its fixed sub weapon and special."""

    game_id: int
    statink_key: str
    name: str
    weapon_class: str
    sub: str
    special: str


def _w(gid: int, key: str, name: str, cls: str, sub: str, special: str) -> Weapon:
    return Weapon(gid, key, name, cls, sub, special)


WEAPONS: tuple[Weapon, ...] = (
    # Shooters
    _w(0, "bold", "Sploosh-o-matic", "shooter", "Curling Bomb", "Ultra Stamp"),
    _w(1, "bold_neo", "Neo Sploosh-o-matic", "shooter", "Squid Beakon", "Killer Wail 5.1"),
    _w(10, "wakaba", "Splattershot Jr.", "shooter", "Splat Bomb", "Big Bubbler"),
    _w(11, "momiji", "Custom Splattershot Jr.", "shooter", "Torpedo", "Ink Storm"),
    _w(20, "sharp", "Splash-o-matic", "shooter", "Burst Bomb", "Crab Tank"),
    _w(21, "sharp_neo", "Neo Splash-o-matic", "shooter", "Suction Bomb", "Triple Inkstrike"),
    _w(30, "promodeler_mg", "Aerospray MG", "shooter", "Fizzy Bomb", "Booyah Bomb"),
    _w(31, "promodeler_rg", "Aerospray RG", "shooter", "Sprinkler", "Reefslider"),
    _w(40, "sshooter", "Splattershot", "shooter", "Suction Bomb", "Trizooka"),
    _w(41, "sshooter_collabo", "Tentatek Splattershot", "shooter", "Splat Bomb",
       "Triple Inkstrike"),
    _w(45, "heroshooter_replica", "Hero Shot Replica", "shooter", "Suction Bomb", "Trizooka"),
    _w(50, "52gal", ".52 Gal", "shooter", "Splash Wall", "Killer Wail 5.1"),
    _w(60, "nzap85", "N-ZAP '85", "shooter", "Suction Bomb", "Tacticooler"),
    _w(61, "nzap89", "N-ZAP '89", "shooter", "Autobomb", "Super Chump"),
    _w(70, "prime", "Splattershot Pro", "shooter", "Angle Shooter", "Crab Tank"),
    _w(80, "96gal", ".96 Gal", "shooter", "Sprinkler", "Ink Vac"),
    _w(81, "96gal_deco", ".96 Gal Deco", "shooter", "Splash Wall", "Kraken Royale"),
    _w(90, "jetsweeper", "Jet Squelcher", "shooter", "Toxic Mist", "Ink Vac"),
    _w(100, "spaceshooter", "Splattershot Nova", "shooter", "Point Sensor", "Killer Wail 5.1"),
    _w(300, "l3reelgun", "L-3 Nozzlenose", "shooter", "Curling Bomb", "Crab Tank"),
    _w(310, "h3reelgun", "H-3 Nozzlenose", "shooter", "Point Sensor", "Tacticooler"),
    _w(400, "bottlegeyser", "Squeezer", "shooter", "Splash Wall", "Trizooka"),
    # Blasters
    _w(200, "nova", "Luna Blaster", "blaster", "Splat Bomb", "Zipcaster"),
    _w(201, "nova_neo", "Luna Blaster Neo", "blaster", "Fizzy Bomb", "Ultra Stamp"),
    _w(210, "hotblaster", "Blaster", "blaster", "Autobomb", "Big Bubbler"),
    _w(220, "longblaster", "Range Blaster", "blaster", "Suction Bomb", "Wave Breaker"),
    _w(230, "clashblaster", "Clash Blaster", "blaster", "Splat Bomb", "Trizooka"),
    _w(231, "clashblaster_neo", "Clash Blaster Neo", "blaster", "Curling Bomb", "Super Chump"),
    _w(240, "rapid", "Rapid Blaster", "blaster", "Ink Mine", "Triple Inkstrike"),
    _w(241, "rapid_deco", "Rapid Blaster Deco", "blaster", "Torpedo", "Inkjet"),
    _w(250, "rapid_elite", "Rapid Blaster Pro", "blaster", "Toxic Mist", "Ink Vac"),
    _w(260, "sblast92", "S-BLAST '92", "blaster", "Sprinkler", "Reefslider"),
    # Rollers
    _w(1000, "carbon", "Carbon Roller", "roller", "Autobomb", "Zipcaster"),
    _w(1001, "carbon_deco", "Carbon Roller Deco", "roller", "Burst Bomb", "Trizooka"),
    _w(1010, "splatroller", "Splat Roller", "roller", "Curling Bomb", "Big Bubbler"),
    _w(1011, "splatroller_collabo", "Krak-On Splat Roller", "roller", "Squid Beakon",
       "Kraken Royale"),
    _w(1020, "dynamo", "Dynamo Roller", "roller", "Sprinkler", "Tacticooler"),
    _w(1030, "variableroller", "Flingza Roller", "roller", "Fizzy Bomb", "Tenta Missiles"),
    _w(1040, "wideroller", "Big Swig Roller", "roller", "Splash Wall", "Ink Vac"),
    # Brushes
    _w(1100, "pablo", "Inkbrush", "brush", "Splat Bomb", "Killer Wail 5.1"),
    _w(1110, "hokusai", "Octobrush", "brush", "Suction Bomb", "Zipcaster"),
    _w(1120, "fincent", "Painbrush", "brush", "Curling Bomb", "Wave Breaker"),
    # Chargers
    _w(2000, "squiclean_a", "Classic Squiffer", "charger", "Point Sensor", "Big Bubbler"),
    _w(2010, "splatcharger", "Splat Charger", "charger", "Splat Bomb", "Ink Vac"),
    _w(2011, "splatcharger_collabo", "Z+F Splat Charger", "charger", "Splash Wall",
       "Triple Splashdown"),
    _w(2020, "splatscope", "Splatterscope", "charger", "Splat Bomb", "Ink Vac"),
    _w(2030, "liter4k", "E-liter 4K", "charger", "Ink Mine", "Zipcaster"),
    _w(2040, "liter4k_scope", "E-liter 4K Scope", "charger", "Ink Mine", "Zipcaster"),
    _w(2050, "bamboo14mk1", "Bamboozler 14 Mk I", "charger", "Autobomb", "Killer Wail 5.1"),
    _w(2060, "soytuber", "Goo Tuber", "charger", "Fizzy Bomb", "Kraken Royale"),
    _w(2070, "rpen_5h", "Snipewriter 5H", "charger", "Sprinkler", "Tacticooler"),
    # Sloshers
    _w(3000, "bucketslosher", "Slosher", "slosher", "Splat Bomb", "Triple Inkstrike"),
    _w(3001, "bucketslosher_deco", "Slosher Deco", "slosher", "Angle Shooter", "Zipcaster"),
    _w(3010, "hissen", "Tri-Slosher", "slosher", "Toxic Mist", "Inkjet"),
    _w(3020, "screwslosher", "Sloshing Machine", "slosher", "Fizzy Bomb", "Booyah Bomb"),
    _w(3030, "furo", "Bloblobber", "slosher", "Sprinkler", "Ink Storm"),
    _w(3040, "explosher", "Explosher", "slosher", "Point Sensor", "Ink Storm"),
    _w(3050, "moprin", "Dread Wringer", "slosher", "Squid Beakon", "Reefslider"),
    # Splatlings
    _w(4000, "splatspinner", "Mini Splatling", "splatling", "Burst Bomb", "Ultra Stamp"),
    _w(4010, "barrelspinner", "Heavy Splatling", "splatling", "Sprinkler", "Wave Breaker"),
    _w(4020, "hydra", "Hydra Splatling", "splatling", "Autobomb", "Booyah Bomb"),
    _w(4030, "kugelschreiber", "Ballpoint Splatling", "splatling", "Fizzy Bomb", "Inkjet"),
    _w(4040, "nautilus47", "Nautilus 47", "splatling", "Point Sensor", "Ink Storm"),
    _w(4050, "examiner", "Heavy Edit Splatling", "splatling", "Curling Bomb", "Kraken Royale"),
    # Dualies
    _w(5000, "sputtery", "Dapple Dualies", "dualie", "Squid Beakon", "Tacticooler"),
    _w(5010, "maneuver", "Splat Dualies", "dualie", "Suction Bomb", "Crab Tank"),
    _w(5011, "maneuver_collabo", "Enperry Splat Dualies", "dualie", "Curling Bomb",
       "Triple Inkstrike"),
    _w(5020, "kelvin525", "Glooga Dualies", "dualie", "Splash Wall", "Booyah Bomb"),
    _w(5030, "dualsweeper", "Dualie Squelchers", "dualie", "Splat Bomb", "Wave Breaker"),
    _w(5040, "quadhopper_black", "Dark Tetra Dualies", "dualie", "Autobomb", "Reefslider"),
    _w(5050, "gaen_ff", "Douser Dualies FF", "dualie", "Ink Mine", "Triple Splashdown"),
    # Brellas
    _w(6000, "parashelter", "Splat Brella", "brella", "Sprinkler", "Triple Inkstrike"),
    _w(6010, "campingshelter", "Tenta Brella", "brella", "Squid Beakon", "Ink Vac"),
    _w(6020, "spygadget", "Undercover Brella", "brella", "Ink Mine", "Reefslider"),
    # Stringers
    _w(7010, "tristringer", "Tri-Stringer", "stringer", "Toxic Mist", "Killer Wail 5.1"),
    _w(7020, "lact450", "REEF-LUX 450", "stringer", "Curling Bomb", "Tenta Missiles"),
    # Splatanas
    _w(8000, "jimuwiper", "Splatana Stamper", "splatana", "Burst Bomb", "Zipcaster"),
    _w(8010, "drivewiper", "Splatana Wiper", "splatana", "Torpedo", "Ultra Stamp"),
)

_BY_GAME_ID: dict[int, Weapon] = {w.game_id: w for w in WEAPONS}
_BY_STATINK_KEY: dict[str, Weapon] = {w.statink_key: w for w in WEAPONS}
WEAPON_GAME_IDS: tuple[int, ...] = tuple(w.game_id for w in WEAPONS)


class UnknownWeaponError(KeyError):
    """A weapon id or key that the table does not hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def weapon_by_game_id(gid: int) -> Weapon:
    """The weapon with game id ``gid``; :class:`UnknownWeaponError` (a KeyError) if absent."""
    try:
        return _BY_GAME_ID[int(gid)]
    except KeyError:
        raise UnknownWeaponError(f"no weapon with game id {gid!r} in primary.weapons") from None


def weapon_by_statink_key(key: str) -> Weapon:
    """The weapon stat.ink calls ``key``; :class:`UnknownWeaponError` (a KeyError) if absent."""
    try:
        return _BY_STATINK_KEY[key]
    except KeyError:
        raise UnknownWeaponError(
            f"no weapon with stat.ink key {key!r} in primary.weapons"
        ) from None


def weapon_name(gid: int) -> str:
    """English name for display; ``"weapon {gid}"`` for ids the table lacks."""
    w = _BY_GAME_ID.get(int(gid))
    return w.name if w is not None else f"weapon {int(gid)}"


def weapon_class_index(game_ids: np.ndarray) -> np.ndarray:
    """``(n,)`` game ids -> ``(n,)`` int32 index into :data:`WEAPON_CLASSES` (-1 if unknown)."""
    game_ids = np.asarray(game_ids)
    lookup = {w.game_id: WEAPON_CLASSES.index(w.weapon_class) for w in WEAPONS}
    out = np.full(game_ids.shape, -1, np.int32)
    for g in np.unique(game_ids):
        out[game_ids == g] = lookup.get(int(g), -1)
    return out
