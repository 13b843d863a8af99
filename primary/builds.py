"""A set of gear builds as arrays, and the game's legality rules, vectorised.

A :class:`BuildSet` holds ``n`` builds: each build's weapon (game id) and its
AP per ability (``(n, 26)``, columns :data:`primary.vocab.ABILITIES`), plus
optional ground-truth concept labels from the synthetic world.

Legality (a full build): three pieces, each with a 10-AP main slot and three
3-AP sub slots, 57 AP in all; main-only abilities only in the main slot of
their own piece. :func:`check_ap_legal` decides this from AP alone;
:func:`check_slots_legal` checks explicit slot assignments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from primary.vocab import (
    ABILITIES,
    GEAR_PIECES,
    MAIN_AP,
    MAIN_ONLY_ABILITIES,
    MAIN_ONLY_BY_PIECE,
    MAX_AP,
    SUB_AP,
    SUBS_PER_PIECE,
    ap_to_build,
    tokenize_build,
)
from primary.weapons import weapon_by_game_id, weapon_name

N_MAIN_ONLY = len(MAIN_ONLY_ABILITIES)
N_ABILITIES = len(ABILITIES)
N_MAINS = len(GEAR_PIECES)
N_SUBS = N_MAINS * SUBS_PER_PIECE
# Column ranges of each piece's main-only abilities inside ABILITIES.
_PIECE_OF_COLUMN = np.array(
    [GEAR_PIECES.index(p) for p in GEAR_PIECES for _ in MAIN_ONLY_BY_PIECE[p]], np.int32
)


def check_ap_legal(ap: np.ndarray) -> np.ndarray:
    """``(n, 26)`` AP -> ``(n,)`` bool: is each row a full, legal 57-AP build?

    Main-only AP must be 0 or 10, at most one per piece. A standard ability
    with ``a`` AP uses ``m`` mains and ``(a - 10 m) / 3`` subs; since 10 = 1
    (mod 3), ``m = a mod 3`` or ``a mod 3 + 3``. The mains left for standard
    abilities (3 minus the main-only count) must be met exactly; a 57-AP total
    then forces exactly nine subs.
    """
    ap = np.asarray(ap).astype(np.int32)
    if ap.ndim != 2 or ap.shape[1] != N_ABILITIES:
        raise ValueError(f"AP matrix must have shape (n, {N_ABILITIES}), got {ap.shape}")
    main_only, std = ap[:, :N_MAIN_ONLY], ap[:, N_MAIN_ONLY:]
    ok = (ap >= 0).all(1) & (ap.sum(1) == MAX_AP)
    ok &= ((main_only == 0) | (main_only == MAIN_AP)).all(1)
    present = main_only > 0
    per_piece = np.stack(
        [present[:, _PIECE_OF_COLUMN == p].sum(1) for p in range(N_MAINS)], axis=1
    )
    ok &= (per_piece <= 1).all(1)
    k = present.sum(1)
    r = std % 3  # fewest mains each standard ability can use
    ok &= (std >= MAIN_AP * r).all(1)
    min_mains = r.sum(1)
    exact = min_mains + k == N_MAINS
    # Three mains of one ability: all standard AP multiples of 3, one of them >= 30.
    triple = (k == 0) & (min_mains == 0) & (std >= N_MAINS * MAIN_AP).any(1)
    return ok & (exact | triple)


def slots_to_ap(mains: np.ndarray, subs: np.ndarray) -> np.ndarray:
    """Slot assignments -> AP. ``mains (n, 3)``, ``subs (n, 9)`` ability columns, -1 empty.

    Returns ``(n, 26)`` int16.
    """
    mains, subs = np.asarray(mains, np.int64), np.asarray(subs, np.int64)
    n, width = len(mains), N_ABILITIES + 1  # the extra column swallows empty slots (-1)
    base = np.arange(n)[:, None] * width
    flat = np.concatenate([(base + np.where(mains < 0, N_ABILITIES, mains)).ravel(),
                           (base + np.where(subs < 0, N_ABILITIES, subs)).ravel()])
    amount = np.concatenate([np.full(mains.size, MAIN_AP), np.full(subs.size, SUB_AP)])
    ap = np.bincount(flat, weights=amount, minlength=n * width).reshape(n, width)
    return ap[:, :N_ABILITIES].astype(np.int16)


def check_slots_legal(mains: np.ndarray, subs: np.ndarray) -> np.ndarray:
    """``mains (n, 3)`` (head, clothes, shoes), ``subs (n, 9)`` -> ``(n,)`` bool.

    Every slot filled with a known ability; subs hold standard abilities only;
    a main-only ability only in its own piece's main slot.
    """
    mains, subs = np.asarray(mains), np.asarray(subs)
    if mains.shape[1:] != (N_MAINS,) or subs.shape[1:] != (N_SUBS,) or len(mains) != len(subs):
        raise ValueError(f"expected mains (n, {N_MAINS}) and subs (n, {N_SUBS}), "
                         f"got {mains.shape} and {subs.shape}")
    ok = ((mains >= 0) & (mains < N_ABILITIES)).all(1)
    ok &= ((subs >= N_MAIN_ONLY) & (subs < N_ABILITIES)).all(1)
    is_main_only = (mains >= 0) & (mains < N_MAIN_ONLY)
    piece = _PIECE_OF_COLUMN[np.clip(mains, 0, N_MAIN_ONLY - 1)]
    ok &= (~is_main_only | (piece == np.arange(N_MAINS)[None, :])).all(1)
    return ok


@dataclass(frozen=True)
class BuildSet:
    """``n`` builds as arrays.

    weapons: ``(n,)`` int32 game weapon ids.
    ap: ``(n, 26)`` int16 AP per ability, columns :data:`primary.vocab.ABILITIES`.
    concepts: ``(n, C)`` bool ground-truth concept labels, or None (real data).
    concept_names: the C concept names, in column order.
    """

    weapons: np.ndarray
    ap: np.ndarray
    concepts: np.ndarray | None = None
    concept_names: tuple[str, ...] = ()

    def __post_init__(self):
        weapons = np.asarray(self.weapons, np.int32)
        ap = np.asarray(self.ap, np.int16)
        if weapons.ndim != 1:
            raise ValueError(f"BuildSet.weapons must be (n,), got shape {weapons.shape}")
        if ap.shape != (len(weapons), N_ABILITIES):
            raise ValueError(
                f"BuildSet.ap must be ({len(weapons)}, {N_ABILITIES}), got shape {ap.shape}"
            )
        object.__setattr__(self, "weapons", weapons)
        object.__setattr__(self, "ap", ap)
        object.__setattr__(self, "concept_names", tuple(self.concept_names))
        if self.concepts is not None:
            concepts = np.asarray(self.concepts, bool)
            if concepts.shape != (len(weapons), len(self.concept_names)):
                raise ValueError(
                    f"BuildSet.concepts must be ({len(weapons)}, {len(self.concept_names)}) "
                    f"to match concept_names, got shape {concepts.shape}"
                )
            object.__setattr__(self, "concepts", concepts)

    def __len__(self) -> int:
        return len(self.weapons)

    def subset(self, idx) -> BuildSet:
        """Rows ``idx`` (an index array, slice or bool mask) as a new BuildSet."""
        return BuildSet(
            self.weapons[idx],
            self.ap[idx],
            None if self.concepts is None else self.concepts[idx],
            self.concept_names,
        )

    @classmethod
    def concat(cls, parts: Sequence[BuildSet]) -> BuildSet:
        """Stack build sets; concept labels kept only if every part has the same ones."""
        parts = list(parts)
        if not parts:
            raise ValueError("BuildSet.concat needs at least one BuildSet")
        names = parts[0].concept_names
        keep = all(p.concepts is not None and p.concept_names == names for p in parts)
        return cls(
            np.concatenate([p.weapons for p in parts]),
            np.concatenate([p.ap for p in parts]),
            np.concatenate([p.concepts for p in parts]) if keep else None,
            names if keep else (),
        )

    def build(self, i: int) -> dict[str, int]:
        """Build ``i`` as ``{ability: AP}`` (zeros left out)."""
        return ap_to_build(self.ap[i])

    def tokens(self, i: int) -> list[str]:
        """Build ``i``'s tokens in the original's order."""
        return tokenize_build(self.build(i), where=f"build {i}")

    def check_legal(self) -> np.ndarray:
        """``(n,)`` bool: which builds are full legal 57-AP builds (see :func:`check_ap_legal`)."""
        return check_ap_legal(self.ap)

    def concepts_of(self, i: int) -> list[str]:
        """Names of the concepts planted in build ``i`` (empty for real data)."""
        if self.concepts is None:
            return []
        return [n for n, on in zip(self.concept_names, self.concepts[i]) if on]

    def describe(self, i: int) -> str:
        """One readable line: weapon, abilities with AP (largest first), planted concepts."""
        gid = int(self.weapons[i])
        try:
            w = weapon_by_game_id(gid)
            head = f"{w.name} ({w.weapon_class}, {w.sub} / {w.special})"
        except KeyError:
            head = weapon_name(gid)
        build = self.build(i)
        parts = [f"{a} {v}" for a, v in sorted(build.items(), key=lambda kv: (-kv[1], kv[0]))]
        text = f"{head}: " + (", ".join(parts) if parts else "no abilities")
        concepts = self.concepts_of(i)
        if concepts:
            text += f"  [concepts: {', '.join(concepts)}]"
        return text
