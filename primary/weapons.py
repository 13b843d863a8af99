"""Splatoon 3 main weapons: every versus kit with its game id, names, class, sub and special.

The table is read from ``primary/data/weapons.json``, a facts table of the game's 174
versus kits (game data 11.3.0; the file names its sources). Game ids follow the game's
numbering, stat.ink keys are stat.ink's spellings (one kit, new in 11.3.0, has none yet).
Whatever a user types to name a weapon goes through :func:`resolve_weapon`: game id,
stat.ink key, the game's internal name or the English name, any case.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

DATA_FILE = Path(__file__).parent / "data" / "weapons.json"

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
    """One main weapon kit with its fixed sub weapon and special."""

    game_id: int
    statink_key: str | None
    name: str
    weapon_class: str
    sub: str
    special: str
    internal: str


def _load(path: Path) -> tuple[tuple[Weapon, ...], str]:
    """The kits of the facts file in class order (:data:`WEAPON_CLASSES`), by game id within
    a class, and the file's game data version."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, w in enumerate(data["weapons"]):
        if w["class"] not in WEAPON_CLASSES:
            raise ValueError(f"{path}: weapon {i} ({w.get('name')!r}) has unknown class "
                             f"{w['class']!r}")
        out.append(Weapon(int(w["game_id"]), w["statink_key"], w["name"], w["class"], w["sub"],
                          w["special"], w["internal"]))
    out.sort(key=lambda w: (WEAPON_CLASSES.index(w.weapon_class), w.game_id))
    return tuple(out), str(data["source"]["game_data_version"])


WEAPONS, GAME_DATA_VERSION = _load(DATA_FILE)
WEAPON_GAME_IDS: tuple[int, ...] = tuple(w.game_id for w in WEAPONS)
_BY_GAME_ID: dict[int, Weapon] = {w.game_id: w for w in WEAPONS}
_BY_STATINK_KEY: dict[str, Weapon] = {w.statink_key: w for w in WEAPONS if w.statink_key}


def _names_of(w: Weapon) -> tuple[str, ...]:
    """The texts that name ``w`` (compared case-insensitively)."""
    return tuple(t for t in (str(w.game_id), w.statink_key, w.internal, w.name) if t)


@cache
def _texts() -> dict[str, tuple[str, Weapon]]:
    """Every text that names a weapon, case-folded -> (the text, the weapon)."""
    out: dict[str, tuple[str, Weapon]] = {}
    for w in WEAPONS:
        for t in _names_of(w):
            other = out.setdefault(t.casefold(), (t, w))[1]
            if other is not w:  # the facts never do this; a later edit of the file might
                raise ValueError(f"{DATA_FILE}: {t!r} names both {other.name} and {w.name}")
    return out


class UnknownWeaponError(KeyError):
    """A weapon id, key or name that the table does not hold."""

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


def find_weapon(text) -> Weapon | None:
    """The weapon named exactly by ``text`` (game id, stat.ink key, internal or English name,
    any case, surrounding spaces ignored); None when nothing is."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        return _BY_GAME_ID.get(int(text))
    if not isinstance(text, str):
        return None
    hit = _texts().get(text.strip().casefold())
    return None if hit is None else hit[1]


def resolve_weapon(text, *, where: str = "weapon") -> Weapon:
    """The weapon ``text`` names (see :func:`find_weapon`); :class:`UnknownWeaponError`
    naming the value and ``where`` otherwise, with the closest names for a near miss."""
    w = find_weapon(text)
    if w is not None:
        return w
    if isinstance(text, bool) or not isinstance(text, (str, int, np.integer)):
        raise UnknownWeaponError(f"{where}: a weapon is a game id or a name, got {text!r}")
    raise UnknownWeaponError(f"{where}: unknown weapon {text!r}{_suggestion(str(text))}; "
                             "a game id, stat.ink key, internal or English name "
                             "(python -m primary.complete --list_weapons lists them)")


def _suggestion(text: str) -> str:
    texts = _texts()
    close = difflib.get_close_matches(text.strip().casefold(),
                                      [t for t in texts if not t.isdigit()], n=3, cutoff=0.75)
    # Each near weapon once, spelt the way the user wrote (key, internal or English name).
    shown: dict[int, str] = {}
    for c in close:
        t, w = texts[c]
        shown.setdefault(w.game_id, repr(t) if t == w.name else f"{t!r} ({w.name})")
    return f" (did you mean {' or '.join(shown.values())}?)" if shown else ""


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


def weapon_table_text() -> str:
    """Every weapon, one a line: game id, English name, class, sub and special."""
    rows = [(str(w.game_id), w.name, w.weapon_class, w.sub, w.special) for w in WEAPONS]
    head = ("id", "weapon", "class", "sub", "special")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(wd) if i < len(widths) else c
                       for i, (c, wd) in enumerate(zip(r, [*widths, 0]))).rstrip()
             for r in [head, *rows]]
    return "\n".join(lines + [f"{len(WEAPONS)} weapons (game data {GAME_DATA_VERSION})"])
