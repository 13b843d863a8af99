"""Conditions a build can meet: the vocabulary that feature explanations are written in.

The catalogue is fixed (it does not depend on any data set):

==========  =====================================  =========================  ==================
kind        one condition per                      name                       text
==========  =====================================  =========================  ==================
ability     standard ability x AP rung (14 x 9)    ``swim_speed_up>=15``      Swim Speed Up ≥15
main_only   main-only ability (12)                 ``ninja_squid``            Ninja Squid
absent      ability not in the build (26)          ``no:quick_super_jump``    no Quick Super Jump
weapon      weapon of :data:`primary.weapons.WEAPONS`  ``weapon:2010``        Splat Charger
class       weapon class                           ``class:charger``          class: charger
sub         sub weapon (from the weapon table)     ``sub:Splat Bomb``         sub: Splat Bomb
special     special weapon (from the weapon table) ``special:Ink Vac``        special: Ink Vac
==========  =====================================  =========================  ==================

An ability condition holds when the build has at least the rung's AP (``ap >= t``), which
is exactly when the rung's token is in the build's tokens. An ``absent`` condition holds
when the build has none of the ability: features often fire on what a build lacks. A
weapon the table lacks meets no weapon, class, sub or special condition.
:func:`condition_matrix` evaluates every condition on a :class:`~primary.builds.BuildSet`
at once; :func:`occurring` keeps the columns that some build meets (the rule search only
needs those).

Conditions in one ``family`` (the rungs of one ability and its absence) are nested or
exclusive, so a conjunction never needs two of them; the rule search reads
:func:`families`. Absent conditions come last, so that ties go to what a build has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from primary.vocab import ABILITY_INDEX, AP_THRESHOLDS, MAIN_ONLY_ABILITIES, STANDARD_ABILITIES
from primary.weapons import WEAPON_CLASSES, WEAPONS

KINDS = ("ability", "main_only", "absent", "weapon", "class", "sub", "special")
ABILITY_KINDS = ("ability", "main_only", "absent")
WEAPON_KINDS = ("weapon", "class", "sub", "special")


def ability_text(ability: str) -> str:
    """``"swim_speed_up"`` -> ``"Swim Speed Up"``."""
    return " ".join(w.capitalize() for w in ability.split("_"))


@dataclass(frozen=True)
class Condition:
    """One condition. ``ability`` and ``threshold`` for ability rungs (``ap >= threshold``),
    ``ability`` alone for main-only abilities and for absences, ``value`` for weapon-side
    conditions (game id, class, sub or special name)."""

    name: str
    kind: str
    text: str
    ability: str | None = None
    threshold: int | None = None
    value: int | str | None = None

    @property
    def family(self) -> str:
        """Conditions of one family are nested or exclusive: a conjunction takes one."""
        if self.kind in ABILITY_KINDS:
            return f"ability:{self.ability}"
        return self.name

    @property
    def negated(self) -> bool:
        """True for a condition on what a build lacks."""
        return self.kind == "absent"


def _catalogue() -> tuple[Condition, ...]:
    out = []
    for a in STANDARD_ABILITIES:
        for t in reversed(AP_THRESHOLDS):  # highest rung first: ties go to the most specific
            out.append(Condition(f"{a}>={t}", "ability", f"{ability_text(a)} ≥{t}", a, t))
    for a in MAIN_ONLY_ABILITIES:
        out.append(Condition(a, "main_only", ability_text(a), a, None))
    for w in WEAPONS:
        out.append(Condition(f"weapon:{w.game_id}", "weapon", w.name, value=w.game_id))
    for c in WEAPON_CLASSES:
        out.append(Condition(f"class:{c}", "class", f"class: {c}", value=c))
    for s in sorted({w.sub for w in WEAPONS}):
        out.append(Condition(f"sub:{s}", "sub", f"sub: {s}", value=s))
    for s in sorted({w.special for w in WEAPONS}):
        out.append(Condition(f"special:{s}", "special", f"special: {s}", value=s))
    for a in MAIN_ONLY_ABILITIES + STANDARD_ABILITIES:
        out.append(Condition(f"no:{a}", "absent", f"no {ability_text(a)}", a))
    return tuple(out)


CATALOGUE: tuple[Condition, ...] = _catalogue()
CONDITION_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(CATALOGUE)}
if len(CONDITION_INDEX) != len(CATALOGUE):
    raise ValueError("condition names must be unique")


def condition_by_name(name: str, *, where: str = "condition") -> Condition:
    """The catalogue entry called ``name``; a KeyError naming it and ``where`` otherwise."""
    try:
        return CATALOGUE[CONDITION_INDEX[name]]
    except KeyError:
        raise KeyError(f"unknown condition {name!r} in {where}") from None


def weapon_attribute_table(kind: str) -> dict[int, int | str]:
    """Game id -> the attribute a weapon-side condition of ``kind`` tests."""
    if kind == "weapon":
        return {w.game_id: w.game_id for w in WEAPONS}
    if kind == "class":
        return {w.game_id: w.weapon_class for w in WEAPONS}
    if kind == "sub":
        return {w.game_id: w.sub for w in WEAPONS}
    if kind == "special":
        return {w.game_id: w.special for w in WEAPONS}
    raise ValueError(f"{kind!r} is not a weapon-side condition kind {WEAPON_KINDS}")


def _weapon_side_columns(game_ids: np.ndarray, conditions) -> np.ndarray:
    """``(n,)`` game ids -> ``(n, len(conditions))`` bool, through each distinct weapon once."""
    uniq, inverse = np.unique(np.asarray(game_ids), return_inverse=True)
    tables = {k: weapon_attribute_table(k) for k in WEAPON_KINDS}
    per_weapon = np.zeros((len(uniq), len(conditions)), bool)
    for j, c in enumerate(conditions):
        table = tables[c.kind]
        per_weapon[:, j] = [table.get(int(g)) == c.value for g in uniq]
    return per_weapon[inverse.reshape(-1)]


def condition_matrix(builds, conditions=CATALOGUE) -> np.ndarray:
    """``(n, K)`` bool: does build ``i`` meet condition ``k``? ``builds`` is a
    :class:`~primary.builds.BuildSet` (or anything with ``weapons (n,)`` and ``ap (n, 26)``)."""
    ap = np.asarray(builds.ap).astype(np.int32)
    n = len(ap)
    out = np.zeros((n, len(conditions)), bool)
    weapon_cols = []
    for j, c in enumerate(conditions):
        if c.kind == "ability":
            out[:, j] = ap[:, ABILITY_INDEX[c.ability]] >= c.threshold
        elif c.kind == "main_only":
            out[:, j] = ap[:, ABILITY_INDEX[c.ability]] > 0
        elif c.kind == "absent":
            out[:, j] = ap[:, ABILITY_INDEX[c.ability]] == 0
        elif c.kind in WEAPON_KINDS:
            weapon_cols.append(j)
        else:
            raise ValueError(f"condition {c.name!r} has unknown kind {c.kind!r}")
    if weapon_cols:
        out[:, weapon_cols] = _weapon_side_columns(builds.weapons, [conditions[j]
                                                                    for j in weapon_cols])
    return out


def occurring(matrix: np.ndarray) -> np.ndarray:
    """Indices of the columns of a condition matrix that at least one row meets."""
    return np.flatnonzero(np.asarray(matrix).any(0))


def families(conditions=CATALOGUE) -> np.ndarray:
    """``(K,)`` int: family id of each condition (equal ids: never in one conjunction)."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(c.family, len(ids)) for c in conditions], np.int32)


__all__ = ["ABILITY_KINDS", "CATALOGUE", "CONDITION_INDEX", "Condition", "KINDS",
           "WEAPON_KINDS", "ability_text", "condition_by_name", "condition_matrix", "families",
           "occurring", "weapon_attribute_table"]
