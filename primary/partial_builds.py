"""Partial builds: the inputs the primary completes, and the SAE's own inputs.

Primary training never shows the model a whole build: each example is a build with some
of its tokens removed, or the empty input ``[<NULL>]`` beside the weapon
(:func:`primary.examples.make_examples`), and an SAE run trains on the pooled vectors of
exactly such examples. The analysis reads features on them as well as on full builds (a
sparse dictionary has many features that fire almost only on partial builds).

:func:`partial_builds` draws them from full builds as training does: per build
``instances`` examples with ``k`` of its ``n`` tokens removed (``k`` in
``1..max(1, n - 1)``, ``P(k)`` proportional to ``k ** 1.2``), and the empty input for a
seeded draw of builds, so that empty inputs are the share of the rows they are in training
(one in :data:`primary.examples.NUM_INSTANCES` + 1).

A partial build is a token set, ``tokens (m, 138)`` bool over
:data:`primary.vocab.ABILITY_TOKENS`, with a weapon. What it shows of an ability is its
*seen* AP: the highest rung among the ability's tokens (a main-only ability: 10 when its
token is there). The tokens of a partial build need not be the nested run a full build
has: ``[swim_speed_up_29]`` alone shows 29 AP. ``ap`` is the seen AP, so the conditions of
:mod:`primary.conditions` read a partial build as what it shows ("Swim Speed Up ≥15": a
Swim Speed Up token of rung 15 or higher is there; "no Swim Speed Up": none is), and
``token_counts`` is how many tokens it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from primary.examples import NUM_INSTANCES, make_examples
from primary.vocab import (
    ABILITY_TOKENS,
    AP_THRESHOLDS,
    GEAR_PIECES,
    MAIN_AP,
    MAIN_ONLY_ABILITIES,
    PIECE_OF_MAIN_ONLY,
    STANDARD_ABILITIES,
    SUB_AP,
    SUBS_PER_PIECE,
)

_N_MAIN_ONLY = len(MAIN_ONLY_ABILITIES)
_N_MAINS = len(GEAR_PIECES)
_N_SUBS = _N_MAINS * SUBS_PER_PIECE


def seen_ap(tokens: np.ndarray) -> np.ndarray:
    """``(m, 138)`` token sets -> ``(m, 26)`` int16: per ability the AP its tokens show
    (the highest rung present; 10 for a main-only ability's token; 0 without a token)."""
    tokens = np.asarray(tokens, bool)
    m = len(tokens)
    main_only = tokens[:, :_N_MAIN_ONLY] * MAIN_AP
    rungs = tokens[:, _N_MAIN_ONLY:].reshape(m, len(STANDARD_ABILITIES), len(AP_THRESHOLDS))
    standard = (rungs * np.asarray(AP_THRESHOLDS)[None, None, :]).max(-1, initial=0)
    return np.concatenate([main_only, standard], axis=1).astype(np.int16)


def fits_a_build(ap: np.ndarray) -> np.ndarray:
    """``(m, 26)`` seen AP -> ``(m,)`` bool: some legal build shows at least this much of
    every ability (so a token set showing it is part of that build's tokens): at most one
    main-only ability per piece, and every standard ability ``a`` given mains ``m`` and
    subs ``s`` with ``10 m + 3 s >= a``, within the mains the main-only abilities leave
    and the nine subs (the fewest subs for each number of mains used, ability by ability)."""
    ap = np.asarray(ap).astype(np.int64)
    m = len(ap)
    pieces = np.array([GEAR_PIECES.index(PIECE_OF_MAIN_ONLY[a]) for a in MAIN_ONLY_ABILITIES])
    per_piece = np.stack([(ap[:, :_N_MAIN_ONLY][:, pieces == p] > 0).sum(1)
                          for p in range(_N_MAINS)], 1)
    free_mains = _N_MAINS - per_piece.sum(1)
    big = _N_SUBS + 1 + MAIN_AP * _N_MAINS  # more subs than any build has
    fewest = np.full((m, _N_MAINS + 1), big)  # mains used -> fewest subs
    fewest[:, 0] = 0
    for a in ap[:, _N_MAIN_ONLY:].T:
        subs = [-(-np.maximum(a - MAIN_AP * k, 0) // SUB_AP) for k in range(_N_MAINS + 1)]
        nxt = np.full_like(fewest, big)
        for used in range(_N_MAINS + 1):
            for k in range(used + 1):
                nxt[:, used] = np.minimum(nxt[:, used], fewest[:, used - k] + subs[k])
        fewest = nxt
    within = np.arange(_N_MAINS + 1)[None, :] <= free_mains[:, None]
    return (per_piece <= 1).all(1) & (np.where(within, fewest, big).min(1) <= _N_SUBS)


@dataclass(frozen=True)
class PartialBuilds:
    """``m`` partial builds. ``weapons (m,)`` game ids; ``tokens (m, 138)`` bool over
    :data:`primary.vocab.ABILITY_TOKENS`; ``build_index (m,)``: the row of the full builds
    each was drawn from."""

    weapons: np.ndarray
    tokens: np.ndarray
    build_index: np.ndarray

    def __post_init__(self):
        weapons = np.asarray(self.weapons, np.int32)
        tokens = np.asarray(self.tokens, bool)
        index = np.asarray(self.build_index, np.int64)
        if tokens.shape != (len(weapons), len(ABILITY_TOKENS)) or index.shape != weapons.shape:
            raise ValueError(f"PartialBuilds: weapons {weapons.shape}, tokens {tokens.shape} "
                             f"and build_index {index.shape} must hold the same rows (tokens "
                             f"over the {len(ABILITY_TOKENS)} ability tokens)")
        object.__setattr__(self, "weapons", weapons)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "build_index", index)

    def __len__(self) -> int:
        return len(self.weapons)

    @property
    def ap(self) -> np.ndarray:
        """``(m, 26)`` the AP each partial build shows (:func:`seen_ap`)."""
        return seen_ap(self.tokens)

    @property
    def token_counts(self) -> np.ndarray:
        """``(m,)`` ability tokens each holds (0: the empty input)."""
        return self.tokens.sum(1)

    def subset(self, idx) -> PartialBuilds:
        return PartialBuilds(self.weapons[idx], self.tokens[idx], self.build_index[idx])

    @classmethod
    def concat(cls, parts) -> PartialBuilds:
        parts = list(parts)
        if not parts:
            raise ValueError("PartialBuilds.concat needs at least one PartialBuilds")
        return cls(np.concatenate([p.weapons for p in parts]),
                   np.concatenate([p.tokens for p in parts]),
                   np.concatenate([p.build_index for p in parts]))

    def token_names(self, i: int) -> list[str]:
        """Row ``i``'s tokens in tokenisation order."""
        return [ABILITY_TOKENS[j] for j in np.flatnonzero(self.tokens[i])]


def _multihot_of_examples(tokens: np.ndarray, vocab) -> np.ndarray:
    """Vocab-id rows ``(m, L)`` -> ``(m, 138)`` token sets (special tokens dropped)."""
    column = np.full(len(vocab), -1, np.int64)
    known = vocab.ability_token_ids >= 0
    column[vocab.ability_token_ids[known]] = np.flatnonzero(known)
    col = column[tokens]
    rows = np.broadcast_to(np.arange(len(tokens))[:, None], col.shape)
    out = np.zeros((len(tokens), len(ABILITY_TOKENS)), bool)
    out[rows[col >= 0], col[col >= 0]] = True
    return out


def partial_builds(builds, vocab, weapon_vocab, *, instances: int = 1,
                   seed: int = 0) -> PartialBuilds:
    """Partial builds drawn from ``builds`` (a :class:`~primary.builds.BuildSet`) as primary
    training draws its examples (see the module docstring): ``instances`` per build with
    tokens removed, then empty inputs for ``round(len(builds) * instances /
    NUM_INSTANCES)`` builds drawn with ``seed``. Deterministic per seed."""
    if not 1 <= instances <= NUM_INSTANCES:
        raise ValueError(f"partial builds per build must be in 1..{NUM_INSTANCES}, got "
                         f"{instances}")
    ex = make_examples(builds, vocab, weapon_vocab, num_instances=instances,
                       include_null=False, seed=seed)
    removed = _multihot_of_examples(ex.tokens, vocab)
    n = len(builds)
    rng = np.random.default_rng([int(seed), 0xE7])
    empty = np.sort(rng.choice(n, size=int(round(n * instances / NUM_INSTANCES)),
                               replace=False))
    index = np.concatenate([ex.build_index.astype(np.int64), empty])
    tokens = np.concatenate([removed, np.zeros((len(empty), len(ABILITY_TOKENS)), bool)])
    return PartialBuilds(np.asarray(builds.weapons)[index], tokens, index)


__all__ = ["PartialBuilds", "fits_a_build", "partial_builds", "seen_ap"]
