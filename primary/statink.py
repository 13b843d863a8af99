"""Reader for stat.ink's Splatoon 3 battle CSVs: one build per player.

Each row is a battle with player slots ``A1..A4`` and ``B1..B4``; a player's
``X-weapon`` is stat.ink's weapon key and ``X-abilities`` a JSON object
``{ability: units}`` (main slot 1.0, sub slot 0.3), so AP = round(10 x units).
Only full, legal 57-AP builds are kept. Bad players are skipped and counted
by reason, never fatal; a file without the needed columns, or with no valid
build at all, is an error naming the file. Rows are streamed.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from primary.builds import BuildSet, check_ap_legal
from primary.vocab import ABILITIES, ABILITY_INDEX, MAX_AP
from primary.weapons import weapon_by_statink_key

PLAYER_SLOTS: tuple[str, ...] = tuple(f"{t}{i}" for t in "AB" for i in range(1, 5))
NEEDED_COLUMNS: tuple[str, ...] = tuple(
    f"{p}-{c}" for p in PLAYER_SLOTS for c in ("weapon", "abilities")
)
DROP_REASONS: tuple[str, ...] = (
    "unknown_weapon",
    "missing_abilities",
    "malformed_abilities",
    "unknown_ability",
    "wrong_total",
    "illegal_slots",
)


@dataclass
class ReadSummary:
    """What a read kept and dropped.

    rows: battle rows read. players_seen: player slots with a weapon or
    abilities. kept: builds returned. dropped: reason -> count.
    """

    path: str
    rows: int = 0
    players_seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.rows} battles, {self.players_seen} players, "
                 f"{self.kept} builds kept, {sum(self.dropped.values())} dropped"]
        lines += [f"  dropped {reason}: {n}" for reason, n in sorted(self.dropped.items()) if n]
        return "\n".join(lines)


class StatInkError(ValueError):
    """A stat.ink file that cannot be read at all."""


def parse_abilities(text: str) -> tuple[np.ndarray | None, str | None]:
    """``X-abilities`` JSON -> ``((26,) int16 AP, None)`` or ``(None, drop reason)``."""
    if text is None or not text.strip():
        return None, "missing_abilities"
    try:
        units = json.loads(text)
    except json.JSONDecodeError:
        return None, "malformed_abilities"
    if not isinstance(units, dict):
        return None, "malformed_abilities"
    if not units:
        return None, "missing_abilities"
    ap = np.zeros(len(ABILITIES), np.int16)
    for name, value in units.items():
        if name not in ABILITY_INDEX:
            return None, "unknown_ability"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value
        ) or value < 0:
            return None, "malformed_abilities"
        ap[ABILITY_INDEX[name]] = round(10 * value)
    return ap, None


def read_statink_csv(path: str | os.PathLike) -> tuple[BuildSet, ReadSummary]:
    """All legal 57-AP player builds in a stat.ink battle CSV, with a :class:`ReadSummary`."""
    path = str(path)
    summary = ReadSummary(path)
    weapons: list[int] = []
    aps: list[np.ndarray] = []
    weapon_cache: dict[str, int | None] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in NEEDED_COLUMNS if c not in header]
        if missing:
            raise StatInkError(f"{path} is not a stat.ink battle CSV: missing columns "
                               f"{', '.join(missing)}")
        for row in reader:
            summary.rows += 1
            for slot in PLAYER_SLOTS:
                key = (row.get(f"{slot}-weapon") or "").strip()
                abilities = row.get(f"{slot}-abilities")
                if not key and not (abilities or "").strip():
                    continue  # an empty slot, not a player
                summary.players_seen += 1
                if key not in weapon_cache:
                    try:
                        weapon_cache[key] = weapon_by_statink_key(key).game_id
                    except KeyError:
                        weapon_cache[key] = None
                gid = weapon_cache[key]
                if gid is None:
                    summary.dropped["unknown_weapon"] += 1
                    continue
                ap, reason = parse_abilities(abilities)
                if reason is None and int(ap.sum()) != MAX_AP:
                    reason = "wrong_total"
                if reason is not None:
                    summary.dropped[reason] += 1
                    continue
                weapons.append(gid)
                aps.append(ap)
    if not aps:
        raise StatInkError(f"{path} holds no valid 57-AP build ({summary.rows} battles read)\n"
                           f"{summary}")
    ap = np.stack(aps)
    legal = check_ap_legal(ap)
    summary.dropped["illegal_slots"] += int((~legal).sum())
    summary.kept = int(legal.sum())
    if not summary.kept:
        raise StatInkError(f"{path} holds no legal 57-AP build\n{summary}")
    return BuildSet(np.array(weapons, np.int32)[legal], ap[legal]), summary
