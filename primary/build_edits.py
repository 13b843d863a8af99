"""Edit builds so that they meet, or stop meeting, conditions, and stay legal.

The causal check of a feature explanation edits held-out builds: it adds a rule's
conditions (:mod:`primary.conditions`) to builds that lack them and removes them from
builds that have them, then asks whether the feature follows. Every edit keeps the build
legal: every AP value is made of whole slots (a standard ability ``a = 10 m + 3 s``),
the build fits three mains and nine subs with each main-only ability in its own piece's
main (:func:`legal`), so the total stays <= 57.

The model sees rungs, not exact AP: any value in ``[t, next rung)`` gives the same tokens.
So an ability is set to a rung *range*, and the value in that range that needs the
fewest other changes is taken. When the build has no room, slots are taken from other,
unprotected abilities ("donors"): a sub from the standard ability with the most subs, or
a main from a standard ability that has one (a main-only ability last).

An ``absent`` condition is the other side of its ability: adding it takes the ability
off the build (its slots stay empty), removing it puts the ability on at its first rung
(or the main-only ability on its main).

Weapon-side conditions swap the weapon: to one meeting all of the conjunction's weapon
conditions (add), or none of them (remove; a weapon of the same class where the
condition allows, so the edit changes as little as it can). Weapons come from a pool
(the game ids the model knows).

All functions are vectorised over the rows of a :class:`~primary.builds.BuildSet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from primary.builds import BuildSet
from primary.conditions import (
    ABILITY_KINDS,
    WEAPON_KINDS,
    Condition,
    rows_meet,
    weapon_attribute_table,
)
from primary.vocab import (
    ABILITIES,
    ABILITY_INDEX,
    AP_THRESHOLDS,
    GEAR_PIECES,
    MAIN_AP,
    MAIN_ONLY_ABILITIES,
    MAX_AP,
    PIECE_OF_MAIN_ONLY,
    SUB_AP,
    SUBS_PER_PIECE,
)
from primary.weapons import WEAPONS

try:  # the exact slot allocator; its fits() is the legality test of record
    from primary.allocator import fits as _allocator_fits
except ImportError:  # pragma: no cover - older trees
    _allocator_fits = None

N_MAIN_ONLY = len(MAIN_ONLY_ABILITIES)
N_MAINS = len(GEAR_PIECES)
N_SUBS = N_MAINS * SUBS_PER_PIECE
_PIECE = np.array([GEAR_PIECES.index(PIECE_OF_MAIN_ONLY[a]) for a in MAIN_ONLY_ABILITIES])
_MAX_DONOR_STEPS = N_MAINS + N_SUBS + 2


def attainable(ap: np.ndarray) -> np.ndarray:
    """Standard-ability AP made of whole slots: ``a = 10 m + 3 s`` (``m = a mod 3``)."""
    ap = np.asarray(ap)
    return (ap >= 0) & (ap >= MAIN_AP * (ap % 3))


def slot_use(ap: np.ndarray):
    """``(n, 26)`` AP -> ``(mains, subs)`` ``(n,)`` with each standard ability on its fewest
    mains (a main-only ability takes its main)."""
    ap = np.asarray(ap).astype(np.int64)
    std = ap[:, N_MAIN_ONLY:]
    r = std % 3
    mains = r.sum(1) + (ap[:, :N_MAIN_ONLY] > 0).sum(1)
    subs = ((std - MAIN_AP * r) // SUB_AP).sum(1)
    return mains, subs


def exact_fits(ap: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: each row is exactly some slot assignment's AP (empty slots allowed)."""
    ap = np.asarray(ap).astype(np.int64)
    main_only, std = ap[:, :N_MAIN_ONLY], ap[:, N_MAIN_ONLY:]
    ok = ((main_only == 0) | (main_only == MAIN_AP)).all(1) & attainable(std).all(1)
    per_piece = np.stack([(main_only[:, _PIECE == p] > 0).sum(1) for p in range(N_MAINS)], 1)
    ok &= (per_piece <= 1).all(1)
    mains, subs = slot_use(ap)
    fewest = ok & (mains <= N_MAINS) & (subs <= N_SUBS)
    # Three mains of one ability (a >= 30, a multiple of 3) frees ten subs.
    triple = ((mains == 0) & (std >= N_MAINS * MAIN_AP).any(1)
              & (subs - N_MAINS * MAIN_AP // SUB_AP <= N_SUBS))
    return fewest | (ok & triple)


def legal(ap: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: exact slot fit, total <= 57, and the allocator's ``fits``."""
    ap = np.asarray(ap)
    ok = exact_fits(ap) & (ap.astype(np.int64).sum(1) <= MAX_AP)
    if _allocator_fits is not None:
        ok &= _allocator_fits(ap.astype(np.int64))
    return ok


def _free_slots(ap: np.ndarray, protected: np.ndarray) -> np.ndarray:
    """Take slots from unprotected abilities until each row fits (or no donor is left).

    ``protected (n, 26)`` bool. Returns the new AP; rows that cannot be fixed stay unfit.
    """
    ap = ap.astype(np.int64).copy()
    protected = np.broadcast_to(protected, ap.shape)
    # Only the rows still unfit are worked on: a row's step depends on that row alone, so
    # a row that fits, or that had nothing to give, is done.
    todo = np.flatnonzero(~exact_fits(ap))
    for _ in range(_MAX_DONOR_STEPS):
        if not len(todo):
            break
        part, prot = ap[todo], protected[todo]
        rows = np.arange(len(todo))
        mains, subs = slot_use(part)
        # A protected ability above 27 AP in subs alone needs all three mains.
        std = part[:, N_MAIN_ONLY:]
        triple = ((std >= N_MAINS * MAIN_AP) & (std % 3 == 0)
                  & prot[:, N_MAIN_ONLY:]).any(1)
        mains = mains + N_MAINS * triple
        subs = subs - (N_MAINS * MAIN_AP // SUB_AP) * triple
        r = std % 3
        s = (std - MAIN_AP * r) // SUB_AP
        free_std = ~prot[:, N_MAIN_ONLY:]
        # Too many mains: a standard ability's main first (largest AP), then a main-only.
        need_main = mains > N_MAINS
        main_score = np.where((r > 0) & free_std, std, -1)
        j = main_score.argmax(1)
        has_std = main_score[rows, j] >= 0
        take = need_main & has_std
        part[take, N_MAIN_ONLY + j[take]] -= MAIN_AP
        mo = np.where((part[:, :N_MAIN_ONLY] > 0) & ~prot[:, :N_MAIN_ONLY], 1, 0)
        k = mo.argmax(1)
        take_mo = need_main & ~has_std & (mo[rows, k] > 0)
        part[take_mo, k[take_mo]] = 0
        # Too many subs: one sub of the standard ability holding the most subs.
        need_sub = ~need_main & (subs > N_SUBS)
        sub_score = np.where((s > 0) & free_std, s, -1)
        j = sub_score.argmax(1)
        take_sub = need_sub & (sub_score[rows, j] > 0)
        part[take_sub, N_MAIN_ONLY + j[take_sub]] -= SUB_AP
        ap[todo] = part
        moved = take | take_mo | take_sub
        todo = todo[moved][~exact_fits(part[moved])]
    return ap


def _values_in(lo: int, hi: int) -> np.ndarray:
    v = np.arange(max(lo, 0), hi + 1)
    return v[attainable(v)]


def set_ability_range(ap: np.ndarray, ability: str, lo: int, hi: int,
                      protected: np.ndarray | None = None):
    """Give ``ability`` a value in ``[lo, hi]`` on every row, taking slots from unprotected
    abilities where needed; per row the value that leaves the most AP elsewhere.

    ``protected``: ``(26,)`` or ``(n, 26)`` bool, abilities that must not give slots.
    Returns ``(new_ap (n, 26) int64, ok (n,) bool)`` (ok: the row is legal afterwards).
    """
    col = ABILITY_INDEX[ability]
    ap = np.asarray(ap).astype(np.int64)
    prot = np.zeros(ap.shape, bool)
    if protected is not None:
        prot |= protected
    prot[:, col] = True
    if col < N_MAIN_ONLY:
        values = np.array([v for v in (0, MAIN_AP) if lo <= v <= hi])
    else:
        values = _values_in(lo, hi)
    if len(values) == 0:
        raise ValueError(f"no whole-slot AP of {ability} lies in [{lo}, {hi}]")
    # Every candidate value of every row in one pass (rows are independent): (V * n, 26).
    n = len(ap)
    trial = np.tile(ap, (len(values), 1))
    trial[:, col] = np.repeat(values, n)
    if col < N_MAIN_ONLY:  # one main-only ability per piece
        rival = np.zeros(ap.shape[1], bool)
        rival[:N_MAIN_ONLY] = (_PIECE == _PIECE[col]) & (np.arange(N_MAIN_ONLY) != col)
        trial[np.repeat(values > 0, n)[:, None] & rival[None, :]] = 0
    trial = _free_slots(trial, np.tile(prot, (len(values), 1)))
    ok = legal(trial)
    kept = np.where(ok, np.delete(trial, col, axis=1).sum(1), -1).reshape(len(values), n)
    pick = kept.argmax(0)  # the first of the values keeping the most AP elsewhere
    rows = np.arange(n)
    best_ok = kept[pick, rows] >= 0
    best_ap = np.where(best_ok[:, None], trial.reshape(len(values), n, -1)[pick, rows], ap)
    return best_ap, best_ok


def _target_range(c: Condition, add: bool) -> tuple[int, int]:
    """AP range that makes a build meet ability-side condition ``c`` (``add``) or not."""
    present = add != c.negated  # adding an absence takes the ability off
    if ABILITY_INDEX[c.ability] < N_MAIN_ONLY:
        return (MAIN_AP, MAIN_AP) if present else (0, 0)
    if c.kind == "absent":
        return _rung_range(AP_THRESHOLDS[0], below=False) if present else (0, 0)
    return _rung_range(c.threshold, below=not present)


def _rung_range(threshold: int, *, below: bool) -> tuple[int, int]:
    """AP range with the same tokens: ``[t, next rung)`` or, below, ``[previous rung, t)``."""
    rungs = (0,) + AP_THRESHOLDS + (MAX_AP + 1,)
    i = rungs.index(threshold)
    return (rungs[i - 1], threshold - 1) if below else (threshold, rungs[i + 1] - 1)


# ---------------------------------------------------------------- weapons

def _weapon_table(pool: Sequence[int] | None):
    """``(game_ids (W,), attributes {kind: (W,) object})`` of the pool's known weapons."""
    return _weapon_table_of(None if pool is None else tuple(sorted({int(g) for g in pool})))


@lru_cache(maxsize=8)
def _weapon_table_of(pool: tuple[int, ...] | None):
    # Built once per pool: every distinct conjunction of a causal check asks for it.
    known = {w.game_id for w in WEAPONS}
    ids = np.array(sorted(known if pool is None else set(pool) & known), np.int64)
    tables = {k: weapon_attribute_table(k) for k in WEAPON_KINDS}
    attrs = {k: np.array([tables[k][int(g)] for g in ids], object) for k in WEAPON_KINDS}
    return ids, attrs


def _swap_weapons(weapons: np.ndarray, conds: Sequence[Condition], *, meet: bool, pool,
                  rng: np.random.Generator) -> np.ndarray:
    """New game ids meeting all ``conds`` (``meet``) or none of them; -1 where the pool has
    none. Removal prefers a weapon of the same class."""
    ids, attrs = _weapon_table(pool)
    if len(ids) == 0:
        return np.full(len(weapons), -1, np.int64)
    hits = np.stack([attrs[c.kind] == c.value for c in conds], 1)
    allowed = hits.all(1) if meet else ~hits.any(1)
    out = np.full(len(weapons), -1, np.int64)
    cls_of = dict(zip(ids.tolist(), attrs["class"].tolist()))
    for g in np.unique(weapons):
        rows = np.flatnonzero(weapons == g)
        choice = allowed.copy()
        if not meet:
            same = choice & (attrs["class"] == cls_of.get(int(g)))
            choice = same if same.any() else choice
        if choice.any():
            out[rows] = rng.choice(ids[choice], len(rows))
    return out


# ---------------------------------------------------------------- conjunctions

def _conjunction_table(conj: np.ndarray, conditions: Sequence[Condition], n: int) -> np.ndarray:
    conj = np.asarray(conj, np.int64)
    if conj.ndim == 1:
        conj = np.broadcast_to(conj, (n, len(conj)))
    if conj.shape[0] != n or conj.ndim != 2:
        raise ValueError(f"conjunctions must be (T,) or ({n}, T), got {conj.shape}")
    if ((conj < -1) | (conj >= len(conditions))).any():
        bad = int(conj[(conj < -1) | (conj >= len(conditions))][0])
        raise ValueError(f"condition index {bad} is outside the {len(conditions)} conditions")
    if not (conj >= 0).any(1).all():
        raise ValueError("every row needs at least one condition to edit")
    return conj


def _protected_rows(conj: np.ndarray, conditions: Sequence[Condition]) -> np.ndarray:
    """``(n, 26)`` bool: the abilities each row's conjunction names."""
    col_of = np.array([ABILITY_INDEX[c.ability] if c.kind in ABILITY_KINDS else -1
                       for c in conditions] + [-1])
    cols = col_of[np.where(conj < 0, len(conditions), conj)]  # (n, T)
    prot = np.zeros((len(conj), len(ABILITIES) + 1), bool)
    np.put_along_axis(prot, np.where(cols < 0, len(ABILITIES), cols), True, axis=1)
    return prot[:, :len(ABILITIES)]


def edit_weapons(builds: BuildSet, conj: np.ndarray, conditions, *, meet: bool, pool,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """New weapons for the rows whose conjunction's weapon conditions are not met (``meet``)
    or are met in part (remove); ``(weapons, ok)``. ``builds``: anything
    :func:`primary.conditions.condition_matrix` reads (full or partial builds)."""
    weapons = builds.weapons.astype(np.int64)
    ok = np.ones(len(weapons), bool)
    is_w = np.array([c.kind in WEAPON_KINDS for c in conditions] + [False])
    wconj = np.where(is_w[np.where(conj < 0, len(conditions), conj)], conj, -1)
    has_w = (wconj >= 0).any(1)
    if not has_w.any():
        return weapons, ok
    meets = rows_meet(builds, wconj, conditions)
    change = has_w & (~meets.all(1) if meet else (meets & (wconj >= 0)).any(1))
    rng = np.random.default_rng(seed)
    keys = np.sort(wconj, axis=1)
    uniq, inverse = np.unique(keys[change], axis=0, return_inverse=True)
    rows = np.flatnonzero(change)
    for u, key in enumerate(uniq):
        these = rows[inverse.reshape(-1) == u]
        conds = [conditions[k] for k in key if k >= 0]
        new = _swap_weapons(weapons[these], conds, meet=meet, pool=pool, rng=rng)
        ok[these[new < 0]] = False
        weapons[these[new >= 0]] = new[new >= 0]
    return weapons, ok


def edit_conjunctions(builds: BuildSet, conj, conditions: Sequence[Condition], *, add: bool,
                      weapon_pool=None, seed: int = 0) -> tuple[BuildSet, np.ndarray]:
    """Make each build meet all (``add``) or none (remove) of its conjunction's conditions.

    ``conj``: ``(T,)`` or ``(n, T)`` indices into ``conditions`` (-1 unused), one row per
    build. Adding raises an ability into its rung's range and puts on a main-only ability
    (freeing slots from abilities the conjunction does not name); removing drops an
    ability to just below the rung and takes a main-only ability off; an absence works
    the other way round; weapon conditions swap the weapon. Returns ``(edited, ok)``:
    ``ok`` rows are legal and meet all (add) or none (remove) of their conditions; the
    other rows could not be edited that way.
    """
    n = len(builds)
    conj = _conjunction_table(conj, conditions, n)
    ap = builds.ap.astype(np.int64)
    ok = np.ones(n, bool)
    prot = _protected_rows(conj, conditions)
    meets = rows_meet(builds, conj, conditions)
    kind_rank = {"main_only": 0, "ability": 1, "absent": 1}
    # Main-only first when adding: they need a main, the rest then shrinks around them.
    order = sorted({int(k) for k in conj[conj >= 0]},
                   key=lambda k: (kind_rank.get(conditions[k].kind, 2), k))
    for k in order:
        c = conditions[k]
        if c.kind not in kind_rank:
            continue
        rows = np.flatnonzero(((conj == k) & (meets != add)).any(1))
        if not len(rows):
            continue
        lo, hi = _target_range(c, add)
        ap[rows], fine = set_ability_range(ap[rows], c.ability, lo, hi, prot[rows])
        ok[rows] &= fine
    weapons, fine = edit_weapons(builds, conj, conditions, meet=add, pool=weapon_pool,
                                 seed=seed)
    ok &= fine
    edited = BuildSet(weapons, ap)
    after = rows_meet(edited, conj, conditions)
    done = after.all(1) if add else ~(after & (conj >= 0)).any(1)
    return edited, ok & done & legal(edited.ap)


def add_conditions(builds: BuildSet, conds: Sequence[Condition], *, weapon_pool=None,
                   seed: int = 0) -> tuple[BuildSet, np.ndarray]:
    """Every build made to meet all ``conds`` (see :func:`edit_conjunctions`)."""
    _check_conditions(conds)
    return edit_conjunctions(builds, np.arange(len(conds)), list(conds), add=True,
                             weapon_pool=weapon_pool, seed=seed)


def remove_conditions(builds: BuildSet, conds: Sequence[Condition], *, weapon_pool=None,
                      seed: int = 0) -> tuple[BuildSet, np.ndarray]:
    """Every build made to meet none of ``conds`` (see :func:`edit_conjunctions`)."""
    _check_conditions(conds)
    return edit_conjunctions(builds, np.arange(len(conds)), list(conds), add=False,
                             weapon_pool=weapon_pool, seed=seed)


def _check_conditions(conds: Sequence[Condition]) -> None:
    if not conds:
        raise ValueError("an edit needs at least one condition")
    for c in conds:
        if not isinstance(c, Condition):
            raise TypeError(f"expected primary.conditions.Condition, got {c!r}")


def set_ability_rung(builds: BuildSet, ability: str, ap_value: int) -> tuple[BuildSet, np.ndarray]:
    """Every build with ``ability`` at the rung of ``ap_value`` (0, 3, 6, 12, ...; 0 or 10
    for a main-only ability), other abilities changed only where slots must be freed.
    Returns ``(edited, ok)``."""
    if ability not in ABILITY_INDEX:
        raise ValueError(f"unknown ability {ability!r}")
    if ABILITY_INDEX[ability] < N_MAIN_ONLY:
        if ap_value not in (0, MAIN_AP):
            raise ValueError(f"main-only {ability} takes 0 or {MAIN_AP} AP, got {ap_value}")
        lo = hi = ap_value
    else:
        if ap_value != 0 and ap_value not in AP_THRESHOLDS:
            raise ValueError(f"{ap_value} is not 0 or an AP rung {AP_THRESHOLDS}")
        lo, hi = (0, 0) if ap_value == 0 else _rung_range(ap_value, below=False)
    ap, ok = set_ability_range(builds.ap, ability, lo, hi)
    return BuildSet(builds.weapons, ap), ok


__all__ = ["add_conditions", "attainable", "edit_conjunctions", "edit_weapons", "exact_fits",
           "legal", "remove_conditions", "set_ability_range", "set_ability_rung", "slot_use"]
