"""Edit partial builds so that they meet, or stop meeting, conditions.

The causal check of a feature explained on partial builds (:mod:`bridge.causal`) edits
held-out partial builds (:mod:`primary.partial_builds`) as :mod:`primary.build_edits`
edits full ones: it adds a rule's conditions to partial builds that lack them and removes
them from those that have them. A partial build is a token set, so an edit puts tokens in
or takes them out:

- ``ability`` (at least rung ``t``): adding puts in the rung-``t`` token; removing takes
  out the ability's tokens of rung ``t`` and above.
- ``main_only``: adding puts its token in (and takes out another main-only ability of the
  same piece); removing takes it out.
- ``absent``: adding takes out every token of the ability; removing puts in its first
  token (rung 3, or the main-only ability's token).
- ``open_main``: adding takes out the piece's main-only tokens; removing puts in the
  first main-only ability of the piece.
- ``tokens_at_most k`` / ``tokens_at_least k``: tokens taken out at random (never those of
  abilities the conjunction names) until the count is met, or first-rung tokens of
  standard abilities the build does not show put in at random.
- weapon conditions swap the weapon (:func:`primary.build_edits.edit_weapons`).

Where an edit makes a partial build show more than any legal build holds
(:func:`primary.partial_builds.fits_a_build`), room is made as full-build edits make it:
the top token of the standard ability the conjunction does not name that shows the most
AP is taken out, again until it fits. An edited partial build is kept (``ok``) when it
meets all (add) or none (remove) of its conditions and fits a legal build.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from primary.build_edits import edit_weapons
from primary.conditions import ABILITY_KINDS, Condition, rows_meet
from primary.partial_builds import PartialBuilds, fits_a_build, seen_ap
from primary.vocab import (
    ABILITY_INDEX,
    ABILITY_TOKENS,
    AP_THRESHOLDS,
    MAIN_ONLY_ABILITIES,
    MAIN_ONLY_BY_PIECE,
    PIECE_OF_MAIN_ONLY,
)

_N_MAIN_ONLY = len(MAIN_ONLY_ABILITIES)
_N_RUNGS = len(AP_THRESHOLDS)


def token_columns(ability: str) -> np.ndarray:
    """The columns of :data:`primary.vocab.ABILITY_TOKENS` that are ``ability``'s tokens
    (one for a main-only ability, the rungs in order for a standard one)."""
    i = ABILITY_INDEX[ability]
    if i < _N_MAIN_ONLY:
        return np.array([i])
    return _N_MAIN_ONLY + (i - _N_MAIN_ONLY) * _N_RUNGS + np.arange(_N_RUNGS)


def _first_rung_columns() -> np.ndarray:
    return np.array([token_columns(a)[0] for a in ABILITY_INDEX
                     if ABILITY_INDEX[a] >= _N_MAIN_ONLY])


def _named_columns(conj: np.ndarray, conditions) -> np.ndarray:
    """``(n, 138)`` bool: the tokens of the abilities each row's conjunction names (count
    edits leave them alone)."""
    out = np.zeros((len(conj), len(ABILITY_TOKENS)), bool)
    for k in np.unique(conj[conj >= 0]):
        c = conditions[k]
        if c.kind in ABILITY_KINDS or c.kind == "shown_from":
            rows = (conj == k).any(1)
            out[np.ix_(rows, token_columns(c.ability))] = True
        elif c.kind == "open_main":
            cols = np.concatenate([token_columns(a) for a in MAIN_ONLY_BY_PIECE[c.value]])
            out[np.ix_((conj == k).any(1), cols)] = True
    return out


def _set_tokens(tokens: np.ndarray, c: Condition, rows: np.ndarray, add: bool) -> None:
    """Edit ``tokens[rows]`` in place so that they meet ``c`` (``add``) or not; counts and
    weapons are edited elsewhere."""
    present = add != c.negated  # adding an absence takes the ability's tokens out
    if c.kind in ABILITY_KINDS:
        cols = token_columns(c.ability)
        if c.kind == "ability" and add:
            tokens[rows, cols[AP_THRESHOLDS.index(c.threshold)]] = True
        elif c.kind == "ability":
            tokens[np.ix_(rows, cols[AP_THRESHOLDS.index(c.threshold):])] = False
        elif present:
            tokens[rows, cols[0]] = True
            if c.kind != "absent" and c.ability in PIECE_OF_MAIN_ONLY:
                rivals = [a for a in MAIN_ONLY_BY_PIECE[PIECE_OF_MAIN_ONLY[c.ability]]
                          if a != c.ability]
                tokens[np.ix_(rows, [token_columns(a)[0] for a in rivals])] = False
        else:
            tokens[np.ix_(rows, cols)] = False
    elif c.kind == "shown_from":
        cols = token_columns(c.ability)
        at = AP_THRESHOLDS.index(c.threshold)
        if add:  # the rungs below go; the rung itself comes in where none above is shown
            tokens[np.ix_(rows, cols[:at])] = False
            bare = rows[~tokens[np.ix_(rows, cols[at:])].any(1)]
            tokens[bare, cols[at]] = True
        else:  # its first rung shown as well
            tokens[rows, cols[0]] = True
    elif c.kind == "open_main":
        cols = [token_columns(a)[0] for a in MAIN_ONLY_BY_PIECE[c.value]]
        if add:
            tokens[np.ix_(rows, cols)] = False
        else:
            tokens[rows, cols[0]] = True


def _set_count(tokens: np.ndarray, rows: np.ndarray, target: np.ndarray, named: np.ndarray,
               rng: np.random.Generator) -> None:
    """Tokens of ``rows`` taken out (never ``named`` ones) or first-rung tokens of unshown
    standard abilities put in, at random, until each row holds ``target`` tokens (or
    nothing is left to change)."""
    first = _first_rung_columns()
    for r, want in zip(rows, target):
        have = int(tokens[r].sum())
        if have > want:
            free = np.flatnonzero(tokens[r] & ~named[r])
            drop = rng.permutation(free)[:have - want]
            tokens[r, drop] = False
        elif have < want:
            shown = np.array([tokens[r, token_columns(a)].any() for a in ABILITY_INDEX
                              if ABILITY_INDEX[a] >= _N_MAIN_ONLY])
            free = first[~shown & ~named[r, first]]
            tokens[r, rng.permutation(free)[:want - have]] = True


def _make_room(tokens: np.ndarray, named: np.ndarray) -> None:
    """Take out, row by row, the top token of the unnamed standard ability showing the most
    AP until what the row shows fits a legal build (or no such ability is left)."""
    std = np.arange(_N_MAIN_ONLY, len(ABILITY_INDEX))
    cols = np.stack([token_columns(a) for a in ABILITY_INDEX if ABILITY_INDEX[a] >= _N_MAIN_ONLY])
    todo = np.flatnonzero(~fits_a_build(seen_ap(tokens)))
    for _ in range(cols.size):
        if not len(todo):
            return
        shown = seen_ap(tokens[todo])[:, std]  # (r, 14)
        free = ~named[todo][:, cols[:, 0]]
        donor = np.where(free & (shown > 0), shown, -1).argmax(1)
        can = np.where(free & (shown > 0), shown, -1).max(1) > 0
        rows = todo[can]
        d = donor[can]
        # The donor's highest rung present goes.
        present = tokens[rows[:, None], cols[d]]
        top = cols[d, len(AP_THRESHOLDS) - 1 - present[:, ::-1].argmax(1)]
        tokens[rows, top] = False
        todo = rows[~fits_a_build(seen_ap(tokens[rows]))]


def edit_partial_conjunctions(partial: PartialBuilds, conj, conditions: Sequence[Condition],
                              *, add: bool, weapon_pool=None,
                              seed: int = 0) -> tuple[PartialBuilds, np.ndarray]:
    """Make each partial build meet all (``add``) or none (remove) of its conjunction's
    conditions (see the module docstring). ``conj``: ``(T,)`` or ``(n, T)`` indices into
    ``conditions`` (-1 unused), one row per partial build. Returns ``(edited, ok)``."""
    n = len(partial)
    conj = np.asarray(conj, np.int64)
    if conj.ndim == 1:
        conj = np.broadcast_to(conj, (n, len(conj)))
    if conj.shape[0] != n or ((conj < -1) | (conj >= len(conditions))).any():
        raise ValueError(f"conjunctions must be (T,) or ({n}, T) indices into the "
                         f"{len(conditions)} conditions, got shape {conj.shape}")
    tokens = partial.tokens.copy()
    meets = rows_meet(partial, conj, conditions)
    named = _named_columns(conj, conditions)
    rng = np.random.default_rng(seed)
    counts = []
    for k in np.unique(conj[conj >= 0]):
        c = conditions[k]
        rows = np.flatnonzero(((conj == k) & (meets != add)).any(1))
        if c.kind in ("tokens_at_most", "tokens_at_least"):
            counts.append((c, rows))
        elif len(rows):
            _set_tokens(tokens, c, rows, add)
    # Counts last: they take out or put in tokens around what the other conditions set.
    for c, rows in counts:
        step = 1 if c.kind == "tokens_at_most" else -1  # to leave the count: one past k
        target = c.threshold if add else c.threshold + step
        _set_count(tokens, rows, np.full(len(rows), target), named, rng)
    _make_room(tokens, named)
    weapons, ok = edit_weapons(partial, conj, conditions, meet=add, pool=weapon_pool,
                               seed=seed)
    edited = PartialBuilds(weapons, tokens, partial.build_index)
    after = rows_meet(edited, conj, conditions)
    done = after.all(1) if add else ~(after & (conj >= 0)).any(1)
    return edited, ok & done & fits_a_build(edited.ap)


__all__ = ["edit_partial_conjunctions", "token_columns"]
