"""Slot allocation: does a set of minimum AP per ability fit one gear build, and how?

A build has three mains (head, clothes, shoes; 10 AP each) and nine subs (3 AP
each). A main-only ability needs its own piece's main slot and gives exactly
10 AP; a standard ability can take any mix of mains and subs. Slots may stay
empty: whatever is left over can hold any standard ability, so a requirement
that fits here can always be extended to a full, legal 57-AP build.

:func:`allocate` decides one requirement exactly (a small dynamic programme
over (mains used, subs used)) and returns the slot assignment with the least
overshoot, the AP given above the minimum. :func:`fits` decides many at once,
vectorised over rows of an ``(n, 26)`` AP matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from primary.vocab import (
    ABILITIES,
    ABILITY_INDEX,
    GEAR_PIECES,
    MAIN_AP,
    MAIN_ONLY_ABILITIES,
    MAX_AP,
    PIECE_OF_MAIN_ONLY,
    STANDARD_ABILITIES,
    SUB_AP,
    SUBS_PER_PIECE,
    BuildError,
)

N_MAINS = len(GEAR_PIECES)
N_SUBS = N_MAINS * SUBS_PER_PIECE
N_MAIN_ONLY = len(MAIN_ONLY_ABILITIES)
_INF = 10**9


@dataclass(frozen=True)
class PieceSlots:
    """One gear piece: its main ability and three subs (None = empty slot)."""

    piece: str
    main: str | None
    subs: tuple[str | None, ...]


@dataclass(frozen=True)
class Allocation:
    """The answer of :func:`allocate`.

    feasible: whether the requirement fits one build. If not, ``reason`` says
    why and the other fields are empty. Otherwise ``pieces`` (head, clothes,
    shoes), ``mains (3,)`` / ``subs (9,)`` ability columns of
    :data:`primary.vocab.ABILITIES` (-1 empty; the layout of
    :func:`primary.builds.slots_to_ap`), ``ap`` the AP each ability gets, and
    ``overshoot`` the AP given above the minimum (summed over abilities).
    """

    feasible: bool
    reason: str = ""
    pieces: tuple[PieceSlots, ...] = ()
    mains: np.ndarray = field(default_factory=lambda: np.full(N_MAINS, -1, np.int32))
    subs: np.ndarray = field(default_factory=lambda: np.full(N_SUBS, -1, np.int32))
    ap: dict[str, int] = field(default_factory=dict)
    overshoot: int = 0

    def __bool__(self) -> bool:
        return self.feasible

    @property
    def empty_mains(self) -> int:
        return int((self.mains < 0).sum())

    @property
    def empty_subs(self) -> int:
        return int((self.subs < 0).sum())


def min_ap_row(min_ap, *, where: str = "minimum AP") -> np.ndarray:
    """A ``{ability: AP}`` mapping or a ``(26,)`` AP row -> ``(26,)`` int64, checked."""
    if isinstance(min_ap, Mapping):
        row = np.zeros(len(ABILITIES), np.int64)
        for name, ap in min_ap.items():
            if name not in ABILITY_INDEX:
                raise BuildError(f"unknown ability {name!r} in {where}")
            if isinstance(ap, bool) or not isinstance(ap, (int, np.integer)):
                raise BuildError(f"AP of {name!r} must be an integer, got {ap!r} in {where}")
            if ap > MAX_AP:  # also keeps huge integers out of the int64 row
                raise BuildError(f"AP of {name!r} is {ap}, more than a whole build holds "
                                 f"({MAX_AP}) in {where}")
            row[ABILITY_INDEX[name]] = int(ap)
    else:
        arr = np.asarray(min_ap)
        if arr.shape != (len(ABILITIES),) or not np.issubdtype(arr.dtype, np.integer):
            raise BuildError(f"{where} must be a mapping or an integer row of shape "
                             f"({len(ABILITIES)},), got {arr.dtype} {arr.shape}")
        row = arr.astype(np.int64)
    if (row < 0).any():
        i = int(np.flatnonzero(row < 0)[0])
        raise BuildError(f"AP of {ABILITIES[i]!r} is negative ({int(row[i])}) in {where}")
    return row


def _options(ap: int) -> list[tuple[int, int]]:
    """The undominated (mains, subs) ways to give a standard ability at least ``ap`` AP."""
    if ap <= 0:
        return [(0, 0)]
    out = []
    for m in range(N_MAINS + 1):
        s = -(-max(0, ap - MAIN_AP * m) // SUB_AP)
        if s <= N_SUBS:
            out.append((m, s))
        if MAIN_AP * m >= ap:
            break  # more mains only add overshoot
    return out


def _main_only_problem(row: np.ndarray) -> tuple[str, list[int]]:
    """(reason or "", piece index of each requested main-only ability)."""
    taken: dict[int, str] = {}
    for i in np.flatnonzero(row[:N_MAIN_ONLY] > 0):
        name = ABILITIES[i]
        if row[i] > MAIN_AP:
            return (f"{name} is a main-only ability: it gives exactly {MAIN_AP} AP, "
                    f"{int(row[i])} were asked", [])
        p = GEAR_PIECES.index(PIECE_OF_MAIN_ONLY[name])
        if p in taken:
            return (f"{taken[p]} and {name} both need the {GEAR_PIECES[p]} main slot "
                    "(main-only abilities of the same gear piece)", [])
        taken[p] = name
    return "", sorted(taken)


def allocate(min_ap) -> Allocation:
    """Fit ``min_ap`` (``{ability: AP}`` or a ``(26,)`` row) into 3 mains + 9 subs.

    Exact: infeasible only when no assignment exists. Among feasible
    assignments, the one with the least AP above the minimum (ties: the first in
    :data:`primary.vocab.STANDARD_ABILITIES` order taking mains). Unknown
    abilities, non-integer or negative AP raise :class:`BuildError`; a
    requirement that does not fit is ``Allocation(feasible=False, reason=...)``.
    """
    row = min_ap_row(min_ap)
    reason, main_only_pieces = _main_only_problem(row)
    if reason:
        return Allocation(False, reason)
    free_mains = N_MAINS - len(main_only_pieces)
    std = row[N_MAIN_ONLY:]
    # DP over standard abilities: (mains used, subs used) -> (least AP, choices so far).
    best: dict[tuple[int, int], tuple[int, tuple[int, ...]]] = {(0, 0): (0, ())}
    for a in std:
        nxt: dict[tuple[int, int], tuple[int, tuple[int, ...]]] = {}
        for (m, s), (cost, picks) in best.items():
            for dm, ds in _options(int(a)):
                key = (m + dm, s + ds)
                if key[0] > free_mains or key[1] > N_SUBS:
                    continue
                c = cost + MAIN_AP * dm + SUB_AP * ds
                if key not in nxt or c < nxt[key][0]:
                    nxt[key] = (c, picks + (dm,))
        best = nxt
    if not best:
        return Allocation(False, _shortage_reason(std, free_mains))
    (_, _), (cost, picks) = min(best.items(), key=lambda kv: (kv[1][0], kv[0]))
    mains = np.full(N_MAINS, -1, np.int32)
    subs = np.full(N_SUBS, -1, np.int32)
    for p in main_only_pieces:
        mains[p] = next(i for i in np.flatnonzero(row[:N_MAIN_ONLY] > 0)
                        if PIECE_OF_MAIN_ONLY[ABILITIES[i]] == GEAR_PIECES[p])
    free = [p for p in range(N_MAINS) if mains[p] < 0]
    sub_pos = 0
    for j, (a, dm) in enumerate(zip(std, picks)):
        col = N_MAIN_ONLY + j
        for _ in range(dm):
            mains[free.pop(0)] = col
        for _ in range(-(-max(0, int(a) - MAIN_AP * dm) // SUB_AP) if a > 0 else 0):
            subs[sub_pos] = col
            sub_pos += 1
    given = _slots_ap(mains, subs)
    overshoot = int((given - row).sum())
    if overshoot != cost + MAIN_AP * len(main_only_pieces) - int(row.sum()):
        raise AssertionError("allocation bookkeeping is inconsistent")
    return Allocation(True, "", slot_pieces(mains, subs), mains, subs,
                      {ABILITIES[i]: int(v) for i, v in enumerate(given) if v > 0}, overshoot)


def _slots_ap(mains: np.ndarray, subs: np.ndarray) -> np.ndarray:
    ap = np.zeros(len(ABILITIES), np.int64)
    np.add.at(ap, mains[mains >= 0], MAIN_AP)
    np.add.at(ap, subs[subs >= 0], SUB_AP)
    return ap


def slot_pieces(mains: np.ndarray, subs: np.ndarray) -> tuple[PieceSlots, ...]:
    """``mains (3,)``, ``subs (9,)`` ability columns (-1 empty) -> one PieceSlots per piece."""
    def name(c):
        return ABILITIES[int(c)] if c >= 0 else None

    return tuple(
        PieceSlots(piece, name(mains[p]),
                   tuple(name(c) for c in subs[p * SUBS_PER_PIECE:(p + 1) * SUBS_PER_PIECE]))
        for p, piece in enumerate(GEAR_PIECES)
    )


def _shortage_reason(std: np.ndarray, free_mains: int) -> str:
    asked = {STANDARD_ABILITIES[j]: int(a) for j, a in enumerate(std) if a > 0}
    need = _min_subs(std[None, :].astype(np.int64), N_MAINS)[0]
    fewest = int(need[free_mains])
    text = ", ".join(f"{a} {v}" for a, v in asked.items())
    return (f"{text} need at least {fewest} sub slots with the {free_mains} free main "
            f"slot(s) used (a build has {N_SUBS} subs; {N_MAINS - free_mains} main(s) hold "
            "main-only abilities)")


def _min_subs(std: np.ndarray, max_mains: int) -> np.ndarray:
    """``(n, 14)`` standard AP -> ``(n, max_mains + 1)`` fewest subs using at most m mains."""
    n = len(std)
    # need[r, k, m]: subs ability k needs given m mains of its own.
    m = np.arange(max_mains + 1)
    need = -(-np.maximum(0, std[:, :, None] - MAIN_AP * m) // SUB_AP)
    dp = np.zeros((n, max_mains + 1), np.int64)  # dp[r, m]: fewest subs with <= m mains
    for k in range(std.shape[1]):
        new = np.full_like(dp, _INF)
        for used in range(max_mains + 1):
            for own in range(used + 1):
                new[:, used] = np.minimum(new[:, used], dp[:, used - own] + need[:, k, own])
        dp = new
    return dp


def fits(ap: np.ndarray) -> np.ndarray:
    """``(n, 26)`` int minimum AP -> ``(n,)`` bool: can each row be extended to a legal build?

    A row fits when every main-only ability asks at most 10 AP, no two of them
    need the same piece's main, and the standard abilities' AP can be reached
    with the remaining mains and at most nine subs. Agrees with
    ``allocate(row).feasible`` row by row.
    """
    ap = np.asarray(ap)
    if ap.ndim != 2 or ap.shape[1] != len(ABILITIES):
        raise ValueError(f"fits: AP matrix must have shape (n, {len(ABILITIES)}), got {ap.shape}")
    if not np.issubdtype(ap.dtype, np.integer):
        raise ValueError(f"fits: AP matrix must be integers, got {ap.dtype}")
    ap = ap.astype(np.int64)
    if (ap < 0).any():
        r, c = np.argwhere(ap < 0)[0]
        raise ValueError(f"fits: AP of {ABILITIES[c]!r} is negative ({int(ap[r, c])}) in row {r}")
    main_only = ap[:, :N_MAIN_ONLY]
    ok = (main_only <= MAIN_AP).all(1)
    piece = np.array([GEAR_PIECES.index(PIECE_OF_MAIN_ONLY[a]) for a in MAIN_ONLY_ABILITIES])
    per_piece = np.stack([(main_only[:, piece == p] > 0).sum(1) for p in range(N_MAINS)], 1)
    ok &= (per_piece <= 1).all(1)
    free = N_MAINS - np.minimum(per_piece, 1).sum(1)
    subs = _min_subs(ap[:, N_MAIN_ONLY:], N_MAINS)
    ok &= subs[np.arange(len(ap)), free] <= N_SUBS
    return ok


def _subs_needed(ap: np.ndarray) -> np.ndarray:
    """``(...,)`` AP -> ``(..., 4)`` subs needed with 0..3 mains of its own."""
    m = np.arange(N_MAINS + 1)
    return -(-np.maximum(0, ap[..., None] - MAIN_AP * m) // SUB_AP)


def _combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Min-plus convolution over mains: ``out[..., m] = min_{i + j = m} a[..., i] + b[..., j]``."""
    out = np.full(np.broadcast_shapes(a.shape, b.shape), _INF, np.int64)
    for i in range(N_MAINS + 1):
        for j in range(N_MAINS + 1 - i):
            out[..., i + j] = np.minimum(out[..., i + j], a[..., i] + b[..., j])
    return out


def raise_fits(ap: np.ndarray, token_ability: np.ndarray, token_level: np.ndarray) -> np.ndarray:
    """Which single raises keep each row extendable to a legal build.

    ``ap (n, 26)`` rows that fit; raise ``t`` sets ability ``token_ability[t]`` to
    ``max(current, token_level[t])``. Returns ``(n, T)`` bool, equal to
    ``fits`` of every raised row, but computed from prefix and suffix
    programmes over the other abilities instead of one programme per raise.
    """
    ap = np.asarray(ap).astype(np.int64)
    token_ability, token_level = np.asarray(token_ability), np.asarray(token_level)
    n = len(ap)
    std = ap[:, N_MAIN_ONLY:]
    need = _subs_needed(std)  # (n, 14, 4)
    zero = np.zeros((n, N_MAINS + 1), np.int64)
    pre = [zero]
    for k in range(std.shape[1]):
        pre.append(_combine(pre[-1], need[:, k]))
    suf = [zero]
    for k in reversed(range(std.shape[1])):
        suf.append(_combine(suf[-1], need[:, k]))
    suf = suf[::-1]
    # without[:, k, m]: fewest subs for every standard ability but k, with m mains.
    without = np.stack([_combine(pre[k], suf[k + 1]) for k in range(std.shape[1])], 1)
    piece = np.array([GEAR_PIECES.index(PIECE_OF_MAIN_ONLY[a]) for a in MAIN_ONLY_ABILITIES])
    taken = np.stack([(ap[:, :N_MAIN_ONLY][:, piece == p] > 0).any(1)
                      for p in range(N_MAINS)], 1)
    free = N_MAINS - taken.sum(1)
    # best_within[:, m]: fewest subs for all standard abilities with at most m mains.
    best_within = np.minimum.accumulate(pre[-1], axis=1)
    out = np.zeros((n, len(token_ability)), bool)
    for t, (a, level) in enumerate(zip(token_ability, token_level)):
        if a < N_MAIN_ONLY:
            p = piece[a]
            # Already there (at most 10 AP, as the row fits): raising it to 10 changes nothing.
            ok = ~taken[:, p] & (best_within[np.arange(n), np.maximum(free - 1, 0)] <= N_SUBS)
            out[:, t] = (level <= MAIN_AP) & ((ap[:, a] > 0) | ok)
            continue
        k = a - N_MAIN_ONLY
        own = _subs_needed(np.maximum(std[:, k], level))  # (n, 4)
        total = _combine(without[:, k], own)
        within = np.minimum.accumulate(total, axis=1)
        out[:, t] = within[np.arange(n), free] <= N_SUBS
    return out


__all__ = ["Allocation", "PieceSlots", "allocate", "fits", "min_ap_row", "raise_fits",
           "slot_pieces"]
