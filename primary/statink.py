"""Reader for stat.ink's Splatoon 3 battle CSVs: one build per player.

Each row is a battle with player slots ``A1..A4`` and ``B1..B4``; a player's
``X-weapon`` is stat.ink's weapon key (any other name of a kit of
:data:`primary.weapons.WEAPONS` is read too) and ``X-abilities`` a JSON object
``{ability: units}`` (main slot 1.0, sub slot 0.3), so AP = round(10 x units).
Only full, legal 57-AP builds are kept. Bad players are skipped and counted
by reason (the weapon keys it did not know by name), never fatal; the count per
reason is printed, with a ``warning:`` when most players are dropped. A file that is
not a stat.ink battle CSV (not UTF-8, missing columns, a row longer than
:data:`MAX_RECORD_BYTES`, broken CSV quoting) or that holds no valid build is an error
naming the file and line.
Rows are streamed, and every field and JSON value is size-capped, so memory
stays bounded whatever the file holds.
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
from primary.weapons import find_weapon, weapon_by_statink_key

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

# A stat.ink battle row is a few KB and one player's abilities JSON a few hundred
# characters; anything far beyond that is not stat.ink data, and is refused (a row) or
# dropped (a player) before it is parsed.
MAX_RECORD_BYTES = 1 << 20
MAX_ABILITIES_CHARS = 4096
MAX_WEAPON_KEY_CHARS = 64
# A file where more than this fraction of the players is dropped gets a warning.
WARN_DROP_FRACTION = 0.5
# The summary names this many of the weapon keys it did not know, the commonest first.
SHOWN_UNKNOWN_WEAPONS = 5
# Distinct unknown keys counted by name; more are counted in the total only.
MAX_UNKNOWN_WEAPON_KEYS = 1000


@dataclass
class ReadSummary:
    """What a read kept and dropped.

    rows: battle rows read. players_seen: player slots with a weapon or
    abilities. kept: builds returned. dropped: reason -> count. unknown_weapons: the
    weapon keys dropped as ``unknown_weapon`` -> count.
    """

    path: str
    rows: int = 0
    players_seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    unknown_weapons: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.rows} battles, {self.players_seen} players, "
                 f"{self.kept} builds kept, {sum(self.dropped.values())} dropped"]
        for reason, n in sorted(self.dropped.items()):
            if not n:
                continue
            line = f"  dropped {reason}: {n}"
            if reason == "unknown_weapon" and self.unknown_weapons:
                top = self.unknown_weapons.most_common(SHOWN_UNKNOWN_WEAPONS)
                more = len(self.unknown_weapons) - len(top)
                line += " (" + ", ".join(f"{k!r} {c}" for k, c in top) + (
                    f", {more} more keys" if more > 0 else "") + ")"
            lines.append(line)
        return "\n".join(lines)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def warning(self) -> str | None:
        """A ``warning:`` line when most players were dropped (else None)."""
        if not self.players_seen or self.dropped_total <= WARN_DROP_FRACTION * self.players_seen:
            return None
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.dropped.items()) if n)
        return (f"warning: {self.path}: {self.dropped_total} of {self.players_seen} players "
                f"dropped ({100 * self.dropped_total / self.players_seen:.0f}%): {reasons}; "
                "is this a stat.ink Splatoon 3 battle CSV of full 57-AP builds?")


class StatInkError(ValueError):
    """A stat.ink file that cannot be read at all."""


def parse_abilities(text: str) -> tuple[np.ndarray | None, str | None]:
    """``X-abilities`` JSON -> ``((26,) int16 AP, None)`` or ``(None, drop reason)``.

    Text over :data:`MAX_ABILITIES_CHARS`, JSON that is not an object of numbers (nested,
    non-numeric, negative, non-finite) is ``malformed_abilities``; one ability above the
    57 AP a whole build holds is ``wrong_total``.
    """
    if text is None or not text.strip():
        return None, "missing_abilities"
    text = text.strip()
    if len(text) > MAX_ABILITIES_CHARS or not text.startswith("{"):
        return None, "malformed_abilities"
    try:
        units = json.loads(text)
    except (ValueError, RecursionError):  # bad JSON, a huge integer, deep nesting
        return None, "malformed_abilities"
    if not isinstance(units, dict):
        return None, "malformed_abilities"
    if not units:
        return None, "missing_abilities"
    ap = np.zeros(len(ABILITIES), np.int16)
    too_many = False
    for name, value in units.items():
        if name not in ABILITY_INDEX:
            return None, "unknown_ability"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value
        ) or value < 0:
            return None, "malformed_abilities"
        if 10 * value > MAX_AP + 0.5:
            too_many = True  # more than a full build; not stored (int16)
            continue
        ap[ABILITY_INDEX[name]] = round(10 * value)
    if too_many:
        return None, "wrong_total"
    return ap, None


class _Lines:
    """The file's lines decoded as UTF-8, for :mod:`csv`: counts physical lines, and refuses a
    record (one CSV row, possibly several lines) over :data:`MAX_RECORD_BYTES` before
    holding more of it in memory."""

    def __init__(self, f, path: str):
        self._f, self._path = f, path
        self.line = 0  # physical lines read so far
        self.record_start = 1  # first line of the row being read
        self._record_bytes = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        room = MAX_RECORD_BYTES - self._record_bytes
        raw = self._f.readline(room + 1)
        if not raw:
            raise StopIteration
        self.line += 1
        self._record_bytes += len(raw)
        if self._record_bytes > MAX_RECORD_BYTES:
            raise StatInkError(
                f"{self._path} line {self.record_start}: row longer than {MAX_RECORD_BYTES:,} "
                "bytes (a stat.ink battle row is a few KB); not a stat.ink battle CSV, or an "
                "unclosed quote")
        try:
            return raw.decode("utf-8-sig" if self.line == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise StatInkError(
                f"{self._path} line {self.line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                f"byte {e.start + 1} of the line); stat.ink CSVs are UTF-8") from None

    def next_record(self) -> None:
        self.record_start, self._record_bytes = self.line + 1, 0


def _rows(reader, lines: _Lines, path: str):
    """The reader's rows; malformed CSV is an error naming file and line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise StatInkError(f"{path} line {lines.record_start}: malformed CSV: {e}") from None
        yield row
        lines.next_record()


def _weapon_game_id(key: str, cache: dict[str, int | None]) -> int | None:
    """stat.ink's key; failing that any other name of a kit (a kit newer than stat.ink's
    keys has none, and a file may carry its game id or name instead)."""
    if len(key) > MAX_WEAPON_KEY_CHARS:
        return None  # no weapon key is that long; not cached, so the cache stays small
    if key not in cache:
        try:
            cache[key] = weapon_by_statink_key(key).game_id
        except KeyError:
            w = find_weapon(key)
            cache[key] = None if w is None else w.game_id
    return cache[key]


def read_statink_csv(path: str | os.PathLike, *, quiet: bool = False
                     ) -> tuple[BuildSet, ReadSummary]:
    """All legal 57-AP player builds in a stat.ink battle CSV, with a :class:`ReadSummary`.

    The summary is printed to stdout (unless ``quiet``), with a ``warning:`` line when
    more than half of the players are dropped.
    """
    path = str(path)
    summary = ReadSummary(path)
    weapons: list[int] = []
    aps: list[np.ndarray] = []
    weapon_cache: dict[str, int | None] = {}
    # No field can outgrow its row; the limit is module-global, so it is put back after.
    old_limit = csv.field_size_limit(MAX_RECORD_BYTES)
    try:
        with open(path, "rb") as f:
            lines = _Lines(f, path)
            reader = csv.DictReader(lines)
            try:
                header = reader.fieldnames or []
            except csv.Error as e:
                raise StatInkError(f"{path} line 1: malformed CSV header: {e}") from None
            if not header:
                raise StatInkError(f"{path} is empty: not a stat.ink battle CSV")
            missing = [c for c in NEEDED_COLUMNS if c not in header]
            if missing:
                raise StatInkError(f"{path} is not a stat.ink battle CSV: missing columns "
                                   f"{', '.join(missing)}")
            lines.next_record()
            _read_players(_rows(reader, lines, path), summary, weapons, aps, weapon_cache)
    finally:
        csv.field_size_limit(old_limit)
    if not aps:
        raise StatInkError(f"{path} holds no valid 57-AP build ({summary.rows} battles read)\n"
                           f"{summary}")
    ap = np.stack(aps)
    legal = check_ap_legal(ap)
    summary.dropped["illegal_slots"] += int((~legal).sum())
    summary.kept = int(legal.sum())
    if not summary.kept:
        raise StatInkError(f"{path} holds no legal 57-AP build\n{summary}")
    if not quiet:
        print(summary)
        if summary.warning():
            print(summary.warning())
    return BuildSet(np.array(weapons, np.int32)[legal], ap[legal]), summary


def _read_players(rows, summary: ReadSummary, weapons: list, aps: list,
                  weapon_cache: dict) -> None:
    """Count every player of ``rows`` into ``summary``; append the kept ones."""
    for row in rows:
        summary.rows += 1
        for slot in PLAYER_SLOTS:
            key = (row.get(f"{slot}-weapon") or "").strip()
            abilities = row.get(f"{slot}-abilities")
            if not key and not (abilities or "").strip():
                continue  # an empty slot, not a player
            summary.players_seen += 1
            gid = _weapon_game_id(key, weapon_cache)
            if gid is None:
                summary.dropped["unknown_weapon"] += 1
                shown = key[:MAX_WEAPON_KEY_CHARS]
                if (shown in summary.unknown_weapons
                        or len(summary.unknown_weapons) < MAX_UNKNOWN_WEAPON_KEYS):
                    summary.unknown_weapons[shown] += 1
                continue
            ap, reason = parse_abilities(abilities)
            if reason is None and int(ap.sum()) != MAX_AP:
                reason = "wrong_total"
            if reason is not None:
                summary.dropped[reason] += 1
                continue
            weapons.append(gid)
            aps.append(ap)
