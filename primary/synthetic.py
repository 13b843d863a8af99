"""The synthetic build world: legal Splatoon 3 builds with planted, labelled concepts.

Each build: a real weapon (uniform over :data:`SYNTHETIC_WEAPON_IDS` unless told
otherwise; any kit of :data:`primary.weapons.WEAPONS` may be asked for), one to three
concepts of a concept set (the built-in :data:`primary.planted_concepts.CONCEPTS`, or a
custom one, :mod:`primary.concept_sets`) drawn with weapon-class-dependent
probabilities (never two that need different main-only abilities on the
same piece), then filler drawn from the weapon class's tastes, leaning
towards the planted concepts' favoured abilities.

Builds are generated at the slot level (3 mains: head, clothes, shoes; 9 subs)
so the game's rules hold by construction, and checked. Concepts are placed
in draw order; a concept whose requirement no longer fits in the free slots
is dropped before anything of it is placed, so every label is honest: a
labelled build meets the concept's required AP. Main slots that a later
concept's main-only ability needs are kept free for it.

The tables a concept set is drawn with form a :class:`World`, made once per set
(:func:`world_for`). All of it is vectorised numpy over chunks of builds; chunk ``i`` of a run is
drawn from ``default_rng([seed, i])``, so output is deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from primary.builds import N_MAINS, N_SUBS, BuildSet, check_slots_legal, slots_to_ap
from primary.concept_sets import concept_set_key, resolve_concepts
from primary.planted_concepts import (
    Concept,
    class_affinity_table,
    favoured_table,
    required_ap_table,
)
from primary.vocab import (
    ABILITIES,
    ABILITY_INDEX,
    GEAR_PIECES,
    MAIN_AP,
    MAIN_ONLY_ABILITIES,
    PIECE_OF_MAIN_ONLY,
    SUB_AP,
)
from primary.weapons import WEAPON_CLASSES, WEAPONS, Weapon, weapon_by_game_id

# The 78 kits the world draws from by default, in its draw order: the weapon table as it
# was before it held the whole roster. The order and the set fix the default world's
# builds (and the demo's numbers); tests/primary/test_synthetic.py pins their digest.
SYNTHETIC_WEAPON_IDS: tuple[int, ...] = (
    0, 1, 10, 11, 20, 21, 30, 31, 40, 41, 45, 50, 60, 61, 70, 80, 81, 90, 100, 300, 310, 400,
    200, 201, 210, 220, 230, 231, 240, 241, 250, 260, 1000, 1001, 1010, 1011, 1020, 1030, 1040,
    1100, 1110, 1120, 2000, 2010, 2011, 2020, 2030, 2040, 2050, 2060, 2070, 3000, 3001, 3010,
    3020, 3030, 3040, 3050, 4000, 4010, 4020, 4030, 4040, 4050, 5000, 5010, 5011, 5020, 5030,
    5040, 5050, 6000, 6010, 6020, 7010, 7020, 8000, 8010,
)
CHUNK = 65_536
N_MAIN_ONLY = len(MAIN_ONLY_ABILITIES)
N_STD = len(ABILITIES) - N_MAIN_ONLY
CONCEPT_COUNT_PROBS = (0.30, 0.45, 0.25)  # P(1), P(2), P(3) planted concepts
BASE_STANDARD_WEIGHT = 0.4
BASE_MAIN_ONLY_WEIGHT = 0.1  # filler main slots only
FAVOURED_BOOST = 1.5
REQUIRED_BOOST = 0.8  # a planted concept's own abilities often get more than the minimum

# What each weapon class tends to run besides any concept (filler weights).
CLASS_TASTES: dict[str, dict[str, float]] = {
    "shooter": {"swim_speed_up": 3, "quick_super_jump": 2, "ink_resistance_up": 1.5,
                "special_charge_up": 1.5, "quick_respawn": 1.5, "sub_power_up": 1,
                "ink_saver_sub": 1, "run_speed_up": 0.5},
    "blaster": {"swim_speed_up": 2, "intensify_action": 2.5, "ink_saver_main": 1.5,
                "quick_super_jump": 1.5, "sub_resistance_up": 1.5, "special_charge_up": 1},
    "roller": {"swim_speed_up": 3, "run_speed_up": 2, "ink_saver_main": 2, "quick_respawn": 1.5,
               "quick_super_jump": 1.5, "object_shredder": 0.5},
    "brush": {"run_speed_up": 3, "swim_speed_up": 2, "ink_saver_main": 2,
              "ink_recovery_up": 1.5, "quick_respawn": 1.5},
    "charger": {"quick_super_jump": 3, "ink_saver_main": 2.5, "ink_recovery_up": 1.5,
                "run_speed_up": 1.5, "sub_resistance_up": 1.5, "swim_speed_up": 1},
    "slosher": {"ink_saver_main": 2, "ink_recovery_up": 2, "special_charge_up": 2,
                "swim_speed_up": 1.5, "quick_super_jump": 1.5, "sub_power_up": 1},
    "splatling": {"run_speed_up": 3, "ink_saver_main": 2, "quick_super_jump": 2,
                  "intensify_action": 1.5, "ink_resistance_up": 1.5},
    "dualie": {"swim_speed_up": 2.5, "intensify_action": 2.5, "run_speed_up": 1.5,
               "quick_super_jump": 1.5, "ink_saver_main": 1, "quick_respawn": 1},
    "brella": {"special_charge_up": 3, "special_power_up": 2, "ink_saver_main": 1.5,
               "sub_resistance_up": 1.5, "quick_super_jump": 1.5, "ink_recovery_up": 1},
    "stringer": {"quick_super_jump": 2.5, "run_speed_up": 2, "swim_speed_up": 1.5,
                 "special_charge_up": 1.5, "ink_saver_main": 1.5, "sub_power_up": 1},
    "splatana": {"swim_speed_up": 3, "ink_saver_main": 2, "run_speed_up": 1.5,
                 "intensify_action": 1.5, "quick_super_jump": 1.5, "special_charge_up": 1},
}


def _class_taste_table() -> np.ndarray:
    """``(n_classes, 26)`` filler weights per weapon class."""
    table = np.zeros((len(WEAPON_CLASSES), len(ABILITIES)))
    table[:, :N_MAIN_ONLY] = BASE_MAIN_ONLY_WEIGHT
    table[:, N_MAIN_ONLY:] = BASE_STANDARD_WEIGHT
    for cls, tastes in CLASS_TASTES.items():
        for a, w in tastes.items():
            table[WEAPON_CLASSES.index(cls), ABILITY_INDEX[a]] += w
    return table


def _main_only_by_piece_table(concepts) -> np.ndarray:
    """``(C + 1, 3)``: the main-only ability column each concept puts in each piece, -1 none.

    The extra last row (index -1) is the "no concept" row.
    """
    table = np.full((len(concepts) + 1, N_MAINS), -1, np.int16)
    for i, c in enumerate(concepts):
        for a in c.required:
            if a in PIECE_OF_MAIN_ONLY:
                table[i, GEAR_PIECES.index(PIECE_OF_MAIN_ONLY[a])] = ABILITY_INDEX[a]
    return table


def _conflict_table(mo_table: np.ndarray) -> np.ndarray:
    """``(C, C)`` bool: same concept, or different main-only abilities on one piece."""
    mo = mo_table[:-1]
    a, b = mo[:, None, :], mo[None, :, :]
    clash = ((a >= 0) & (b >= 0) & (a != b)).any(-1)
    return clash | np.eye(len(mo), dtype=bool)


def _piece_allowed_table() -> np.ndarray:
    """``(3, 26)`` bool: which abilities may fill each piece's main slot."""
    allowed = np.zeros((N_MAINS, len(ABILITIES)), bool)
    allowed[:, N_MAIN_ONLY:] = True
    for a, piece in PIECE_OF_MAIN_ONLY.items():
        allowed[GEAR_PIECES.index(piece), ABILITY_INDEX[a]] = True
    return allowed


_TASTES = _class_taste_table()
_PIECE_ALLOWED = _piece_allowed_table()
_TASTES_T = np.ascontiguousarray(_TASTES.T).astype(np.float32)  # (26, n_classes)


@dataclass(frozen=True, eq=False)
class World:
    """The tables the generator draws a concept set with (ability-major copies for the hot
    loops, see below). Made by :func:`world_for`, once per set."""

    concepts: tuple[Concept, ...]
    names: tuple[str, ...]
    conflict: np.ndarray  # (C, C) bool
    req_std_t: np.ndarray  # (14, C + 1) int32: standard AP each concept requires; col -1 none
    main_only_t: np.ndarray  # (3, C + 1): main-only column each concept puts in each piece
    affinity_t: np.ndarray  # (C, n_classes) float32
    lean_t: np.ndarray  # (26, C) float32: filler weight a planted concept adds


def _make_world(concepts: tuple[Concept, ...]) -> World:
    req = np.concatenate([required_ap_table(concepts),
                          np.zeros((1, len(ABILITIES)), np.int16)]).astype(np.int32)  # row -1
    main_only = _main_only_by_piece_table(concepts)
    # A planted concept's filler lean: its favoured abilities, and its own standard abilities.
    lean = (FAVOURED_BOOST * favoured_table(concepts)
            + REQUIRED_BOOST * (req[:-1] > 0) * (np.arange(len(ABILITIES)) >= N_MAIN_ONLY))
    return World(
        concepts=concepts,
        names=tuple(c.name for c in concepts),
        conflict=_conflict_table(main_only),
        req_std_t=np.ascontiguousarray(req[:, N_MAIN_ONLY:].T),
        main_only_t=np.ascontiguousarray(main_only.T),
        affinity_t=np.ascontiguousarray(class_affinity_table(concepts).T).astype(np.float32),
        lean_t=np.ascontiguousarray(lean.T).astype(np.float32),
    )


_WORLDS: dict[str, World] = {}
_WORLDS_KEPT = 8


def world_for(concepts=None) -> World:
    """The world of a concept set (None: the built-in set; a path: a concept set file;
    or a sequence of :class:`Concept`), cached by the set's content."""
    concepts = resolve_concepts(concepts)
    key = concept_set_key(concepts)
    world = _WORLDS.get(key)
    if world is None:
        if len(_WORLDS) >= _WORLDS_KEPT:
            _WORLDS.clear()
        world = _WORLDS[key] = _make_world(concepts)
    return world


_CLASS_OF_GAME_ID = {w.game_id: WEAPON_CLASSES.index(w.weapon_class) for w in WEAPONS}


# The hot loops below keep arrays ability-major, ``(K, n)``: numpy reduces and
# scans a short leading axis over long contiguous rows far faster than the
# other way round.


def _sample_categorical(rng: np.random.Generator, weights: np.ndarray, k: int = 1) -> np.ndarray:
    """``(K, n)`` non-negative weights -> ``(k, n)`` draws in ``[0, K)`` (inverse CDF)."""
    cdf = np.cumsum(weights, axis=0, dtype=np.float32)
    cdf /= np.maximum(cdf[-1], 1e-30)  # an all-zero column draws 0; callers mask it
    u = rng.random((k, weights.shape[1]), dtype=np.float32)
    idx = (u[None, :, :] > cdf[:, None, :]).sum(0, dtype=np.int32)
    return np.minimum(idx, len(weights) - 1)


def _draw_concepts(rng: np.random.Generator, cls: np.ndarray, world: World) -> np.ndarray:
    """``(n,)`` class index -> ``(3, n)`` concept ids in placement order, -1 unused."""
    n = len(cls)
    count = rng.choice(len(CONCEPT_COUNT_PROBS), size=n, p=CONCEPT_COUNT_PROBS) + 1
    affinity = world.affinity_t[:, cls]
    chosen = np.full((3, n), -1, np.int32)
    blocked = np.zeros(affinity.shape, bool)
    for r in range(3):
        weights = np.where(blocked, np.float32(0), affinity)
        pick = _sample_categorical(rng, weights)[0]
        active = (r < count) & (weights.sum(0) > 0)
        chosen[r] = np.where(active, pick, -1)
        blocked |= world.conflict[:, pick] & active
    return chosen


def _first_free(free: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """``free (3, n)``, ``perm (3, n)`` -> ``(n,)`` first free main slot in each build's order."""
    f = np.take_along_axis(free, perm, axis=0)
    return np.where(f[0], perm[0], np.where(f[1], perm[1], perm[2]))


def _place_concepts(rng: np.random.Generator, chosen: np.ndarray, world: World):
    """Place each drawn concept's requirement, in draw order, dropping any that no longer fits.

    ``chosen (3, n)``. Returns ``mains (3, n)`` ability columns (-1 empty),
    ``sub_counts (14, n)`` subs per standard ability, and ``labels (C, n)`` bool.
    """
    n = chosen.shape[1]
    cols = np.arange(n)
    mains = np.full((N_MAINS, n), -1, np.int16)
    sub_counts = np.zeros((N_STD, n), np.int32)
    std_ap = np.zeros((N_STD, n), np.int32)
    labels = np.zeros((len(world.concepts), n), bool)
    alive = chosen >= 0
    perm = rng.random((N_MAINS, n), dtype=np.float32).argsort(0)
    coin = rng.random((3, N_STD, n), dtype=np.float32) < 0.5
    for r in range(3):
        # Pieces that the main-only abilities of still-alive concepts need stay reserved.
        reserved = np.zeros((N_MAINS, n), bool)
        for r2 in range(3):
            reserved |= alive[r2] & (world.main_only_t[:, chosen[r2]] >= 0)
        cid = chosen[r]
        need = np.maximum(world.req_std_t[:, cid] - std_ap, 0)
        free_mains = ((mains < 0) & ~reserved).sum(0)
        free_subs = N_SUBS - sub_counts.sum(0)
        # Plan mains and subs per ability: a main when most of 10 AP is needed
        # (sometimes also for 4-6 AP, for variety), otherwise 3-AP subs.
        rem = need % MAIN_AP
        want = need // MAIN_AP + ((rem >= 7) | ((rem >= 4) & coin[r]))
        m_plan = np.zeros_like(need)
        left = free_mains
        for a in np.flatnonzero(need.any(1)):
            m_plan[a] = np.minimum(want[a], left)
            left = left - m_plan[a]
        s_plan = -(-np.maximum(need - MAIN_AP * m_plan, 0) // SUB_AP)
        ok = (cid >= 0) & (s_plan.sum(0) <= free_subs)
        alive[r] &= ok
        # Commit: main-only abilities into their reserved pieces, then standard mains and subs.
        mo = world.main_only_t[:, cid]
        mains = np.where(ok & (mo >= 0), mo, mains)
        m_plan *= ok
        m_cum = np.cumsum(m_plan, axis=0)
        for k in range(N_MAINS):
            has = m_cum[-1] > k
            if not has.any():
                break
            ability = N_MAIN_ONLY + (m_cum <= k).sum(0)  # the k-th planned main's ability
            slot = _first_free((mains < 0) & ~reserved, perm)
            mains[slot, cols] = np.where(has, ability, mains[slot, cols])
        s_plan *= ok
        sub_counts += s_plan
        std_ap += MAIN_AP * m_plan + SUB_AP * s_plan
        labels[cid[ok], cols[ok]] = True
    return mains, sub_counts, labels


def _fill(rng: np.random.Generator, cls: np.ndarray, mains: np.ndarray,
          sub_counts: np.ndarray, labels: np.ndarray, world: World) -> np.ndarray:
    """Fill every empty slot from class tastes plus planted concepts' leanings.

    ``mains (3, n)`` is filled in place; ``sub_counts (14, n)``, ``labels (C, n)``.
    Returns ``subs (n, 9)`` ability columns.
    """
    n = mains.shape[1]
    weights = _TASTES_T[:, cls] + world.lean_t @ labels.astype(np.float32)
    for p in range(N_MAINS):
        empty = mains[p] < 0
        if empty.any():
            w = weights[:, empty] * _PIECE_ALLOWED[p][:, None]
            mains[p, empty] = _sample_categorical(rng, w)[0]
    free = N_SUBS - sub_counts.sum(0)
    draws = _sample_categorical(rng, weights[N_MAIN_ONLY:], N_SUBS)  # (9, n)
    use = np.arange(N_SUBS)[:, None] < free
    flat = np.arange(n) * N_STD + draws
    counts = sub_counts.T + np.bincount(flat[use], minlength=n * N_STD).reshape(n, N_STD)
    # Counts -> an explicit list of nine sub slots (grouped by ability); every row sums to 9.
    columns = np.tile(np.arange(N_MAIN_ONLY, len(ABILITIES), dtype=np.int16), n)
    return np.repeat(columns, counts.ravel()).reshape(n, N_SUBS)


def generate_slots(n: int, rng: np.random.Generator, weapon_ids: np.ndarray, *,
                   concepts=None):
    """One chunk at the slot level.

    Returns ``weapons (n,)`` game ids, ``mains (n, 3)`` (head, clothes, shoes)
    and ``subs (n, 9)`` ability columns of :data:`primary.vocab.ABILITIES`,
    and ``labels (n, C)`` bool. ``concepts``: as for :func:`world_for`, or a :class:`World`.
    """
    world = concepts if isinstance(concepts, World) else world_for(concepts)
    weapons = weapon_ids[rng.integers(0, len(weapon_ids), n)]
    cls = _class_index(weapons)
    chosen = _draw_concepts(rng, cls, world)
    mains, sub_counts, labels = _place_concepts(rng, chosen, world)
    subs = _fill(rng, cls, mains, sub_counts, labels, world)
    return weapons, mains.T, subs, labels.T


def _class_index(game_ids: np.ndarray) -> np.ndarray:
    """``(n,)`` game ids (all in the weapon table) -> ``(n,)`` class index."""
    lookup_ids = np.array(sorted(_CLASS_OF_GAME_ID), np.int32)
    lookup_cls = np.array([_CLASS_OF_GAME_ID[int(g)] for g in lookup_ids], np.int32)
    return lookup_cls[np.searchsorted(lookup_ids, game_ids)]


def _weapon_ids(weapons) -> np.ndarray:
    if weapons is None:
        return np.array(SYNTHETIC_WEAPON_IDS, np.int32)
    ids = []
    for w in weapons:
        gid = w.game_id if isinstance(w, Weapon) else int(w)
        weapon_by_game_id(gid)  # unknown ids fail here, naming the id
        ids.append(gid)
    if not ids:
        raise ValueError("generate_builds: weapons is empty")
    return np.array(ids, np.int32)


def generate_builds(n: int, seed: int = 0, *, weapons: Sequence[int | Weapon] | None = None,
                    concepts=None, progress: bool = False) -> BuildSet:
    """``n`` legal synthetic builds with concept labels, deterministic per ``seed``.

    weapons: game ids (or :class:`Weapon`) of :data:`primary.weapons.WEAPONS` to draw from
    uniformly; default :data:`SYNTHETIC_WEAPON_IDS`. concepts: the concept set to plant (None: the
    built-in :data:`primary.planted_concepts.CONCEPTS`; a concept set file path; or a sequence of
    :class:`Concept`); the label columns follow its order.
    """
    if int(n) < 0:
        raise ValueError(f"generate_builds: n must be >= 0, got {n}")
    weapon_ids = _weapon_ids(weapons)
    world = world_for(concepts)
    parts = []
    starts = range(0, int(n), CHUNK)
    if progress:
        from runkit.progress import show_progress

        starts = show_progress(starts, desc="synthetic builds", unit="chunk")
    for i, start in enumerate(starts):
        rng = np.random.default_rng([int(seed), i])
        w, mains, subs, labels = generate_slots(min(CHUNK, int(n) - start), rng, weapon_ids,
                                                concepts=world)
        if not check_slots_legal(mains, subs).all():
            raise RuntimeError("synthetic world produced an illegal slot assignment")
        parts.append(BuildSet(w, slots_to_ap(mains, subs), labels, world.names))
    if not parts:
        return BuildSet(np.zeros(0, np.int32), np.zeros((0, len(ABILITIES)), np.int16),
                        np.zeros((0, len(world.names)), bool), world.names)
    return BuildSet.concat(parts)
