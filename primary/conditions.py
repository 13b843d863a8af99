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

Partial builds (:mod:`primary.partial_builds`, the inputs primary training makes by
leaving tokens out) meet these as what they show, and have conditions of their own
(:data:`PARTIAL_CONDITIONS`, after the catalogue in :data:`PARTIAL_CATALOGUE`):

==============  ==================================  ====================  ================
kind            one condition per                   name                  text
==============  ==================================  ====================  ================
tokens_at_most  count (0, 1, 2, 3, 4, 6, 8)         ``tokens<=2``         ≤2 tokens
tokens_at_least count (2, 3, 4, 6, 8, 10, 12)       ``tokens>=6``         ≥6 tokens
open_main       gear piece                          ``open_main:head``    head main open
shown_from      standard ability, rung above the    ``a:from>=21``        A shown only ≥21
                first
==============  ==================================  ====================  ================

``tokens<=0`` is the empty input (``no tokens``). A piece's main is open when none of
the main-only abilities that piece holds is seen (the slot may still take one). An ability
is *shown only from* a rung when the partial build holds some of its tokens and none below
that rung: a full build's tokens start at the first rung, so its lower rungs are what the
model must fill in (``a`` stands for the ability's name: ``swim_speed_up:from>=21``,
"Swim Speed Up shown only ≥21").

An ability condition holds when the build has at least the rung's AP (``ap >= t``), which
is exactly when the rung's token is in the build's tokens. An ``absent`` condition holds
when the build has none of the ability: features often fire on what a build lacks. A
weapon the table lacks meets no weapon, class, sub or special condition.
:func:`condition_matrix` evaluates every condition on a :class:`~primary.builds.BuildSet`
at once; :func:`occurring` keeps the columns that some build meets (the rule search only
needs those).

Conditions in one ``family`` (the rungs of one ability and its absence; the counts of one
direction) are nested or exclusive, so a conjunction never needs two of them; the rule
search reads :func:`families`. Absent conditions come last in the catalogue, so that ties
go to what a build has; the partial builds' own conditions come after them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from primary.vocab import (
    ABILITY_INDEX,
    AP_THRESHOLDS,
    GEAR_PIECES,
    MAIN_ONLY_ABILITIES,
    MAIN_ONLY_BY_PIECE,
    STANDARD_ABILITIES,
    ap_to_token_multihot,
)
from primary.weapons import WEAPON_CLASSES, WEAPONS

ABILITY_KINDS = ("ability", "main_only", "absent")
WEAPON_KINDS = ("weapon", "class", "sub", "special")
PARTIAL_KINDS = ("tokens_at_most", "tokens_at_least", "open_main", "shown_from")
KINDS = ABILITY_KINDS + WEAPON_KINDS + PARTIAL_KINDS
# Token counts the partial builds' conditions test, strictest first (ties go to it).
TOKENS_AT_MOST = (0, 1, 2, 3, 4, 6, 8)
TOKENS_AT_LEAST = (12, 10, 8, 6, 4, 3, 2)


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
        if self.kind in ("tokens_at_most", "tokens_at_least"):
            return self.kind
        if self.kind == "shown_from":
            return f"shown_from:{self.ability}"
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


def _partial_conditions() -> tuple[Condition, ...]:
    out = [Condition(f"tokens<={k}", "tokens_at_most", f"≤{k} tokens" if k else "no tokens",
                     threshold=k) for k in TOKENS_AT_MOST]
    out += [Condition(f"tokens>={k}", "tokens_at_least", f"≥{k} tokens", threshold=k)
            for k in TOKENS_AT_LEAST]
    out += [Condition(f"open_main:{p}", "open_main", f"{p} main open", value=p)
            for p in GEAR_PIECES if MAIN_ONLY_BY_PIECE[p]]
    for a in STANDARD_ABILITIES:
        for t in reversed(AP_THRESHOLDS[1:]):  # highest rung first, as in the catalogue
            out.append(Condition(f"{a}:from>={t}", "shown_from",
                                 f"{ability_text(a)} shown only ≥{t}", a, t))
    return tuple(out)


CATALOGUE: tuple[Condition, ...] = _catalogue()
PARTIAL_CONDITIONS: tuple[Condition, ...] = _partial_conditions()
# What partial builds are explained in: the catalogue, then their own conditions.
PARTIAL_CATALOGUE: tuple[Condition, ...] = CATALOGUE + PARTIAL_CONDITIONS
CONDITION_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(PARTIAL_CATALOGUE)}
if len(CONDITION_INDEX) != len(PARTIAL_CATALOGUE):
    raise ValueError("condition names must be unique")


def condition_by_name(name: str, *, where: str = "condition") -> Condition:
    """The condition called ``name`` (of :data:`PARTIAL_CATALOGUE`, which starts with the
    catalogue); a KeyError naming it and ``where`` otherwise."""
    try:
        return PARTIAL_CATALOGUE[CONDITION_INDEX[name]]
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


def token_counts(builds) -> np.ndarray:
    """``(n,)`` tokens each build holds: a partial build's own ``token_counts``, else those
    of its AP (a full build's tokens)."""
    counts = getattr(builds, "token_counts", None)
    return np.asarray(counts if counts is not None else
                      ap_to_token_multihot(np.asarray(builds.ap)).sum(1))


def lowest_rungs(builds) -> np.ndarray:
    """``(n, 26)``: per ability the lowest rung among the build's tokens (0 without one; a
    main-only ability's AP). A full build's (its tokens are the rungs its AP reaches) start
    at the first rung; a partial build's need not."""
    ap = np.asarray(builds.ap)
    # A partial build's token set is an array; a BuildSet's ``tokens`` is a method.
    tokens = getattr(builds, "tokens", None)
    tokens = np.asarray(tokens if isinstance(tokens, np.ndarray)
                        else ap_to_token_multihot(ap), bool)
    n_main = len(MAIN_ONLY_ABILITIES)
    rungs = tokens[:, n_main:].reshape(len(tokens), len(STANDARD_ABILITIES), len(AP_THRESHOLDS))
    lowest = np.where(rungs.any(-1), np.asarray(AP_THRESHOLDS)[rungs.argmax(-1)], 0)
    return np.concatenate([ap[:, :n_main], lowest], axis=1)


def condition_matrix(builds, conditions=CATALOGUE) -> np.ndarray:
    """``(n, K)`` bool: does build ``i`` meet condition ``k``? ``builds`` is a
    :class:`~primary.builds.BuildSet` (or anything with ``weapons (n,)`` and ``ap (n, 26)``),
    or :class:`~primary.partial_builds.PartialBuilds` (their ``ap`` is what they show)."""
    ap = np.asarray(builds.ap).astype(np.int32)
    n = len(ap)
    out = np.zeros((n, len(conditions)), bool)
    weapon_cols = []
    counts = lowest = None
    for j, c in enumerate(conditions):
        if c.kind == "ability":
            out[:, j] = ap[:, ABILITY_INDEX[c.ability]] >= c.threshold
        elif c.kind == "main_only":
            out[:, j] = ap[:, ABILITY_INDEX[c.ability]] > 0
        elif c.kind == "absent":
            out[:, j] = ap[:, ABILITY_INDEX[c.ability]] == 0
        elif c.kind in ("tokens_at_most", "tokens_at_least"):
            counts = token_counts(builds) if counts is None else counts
            out[:, j] = (counts <= c.threshold if c.kind == "tokens_at_most"
                         else counts >= c.threshold)
        elif c.kind == "open_main":
            cols = [ABILITY_INDEX[a] for a in MAIN_ONLY_BY_PIECE[c.value]]
            out[:, j] = (ap[:, cols] == 0).all(1)
        elif c.kind == "shown_from":
            lowest = lowest_rungs(builds) if lowest is None else lowest
            out[:, j] = lowest[:, ABILITY_INDEX[c.ability]] >= c.threshold
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
           "PARTIAL_CATALOGUE", "PARTIAL_CONDITIONS", "PARTIAL_KINDS", "WEAPON_KINDS",
           "ability_text", "condition_by_name", "condition_matrix", "families",
           "lowest_rungs", "occurring", "token_counts", "weapon_attribute_table"]


def rows_meet(builds, conj: np.ndarray, conditions) -> np.ndarray:
    """``(n, T)`` bool: does row ``i`` of ``builds`` (full or partial, as
    :func:`condition_matrix` reads them) meet condition ``conditions[conj[i, j]]``; True
    where ``conj[i, j]`` is -1 (unused). Only the conditions ``conj`` names are evaluated."""
    used = np.unique(conj[conj >= 0])
    sub = condition_matrix(builds, [conditions[k] for k in used])
    pos = np.full(len(conditions) + 1, -1)
    pos[used] = np.arange(len(used))
    out = np.ones(conj.shape, bool)
    rows, cols = np.nonzero(conj >= 0)
    out[rows, cols] = sub[rows, pos[conj[rows, cols]]]
    return out
