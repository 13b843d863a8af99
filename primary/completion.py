"""Completing a partial build into a full, legal gear build with the model.

The search state is a minimum-AP row (``(26,)``, columns
:data:`primary.vocab.ABILITIES`) whose tokens the model sees. It starts at the
observed abilities, which are never lowered. A move raises one ability to one
of its token thresholds (a main-only ability to 10 AP); it gains the logits of
every token it newly implies (the log-odds of those tokens being in the build,
each read from the model run on the set as it was when the move was made).
Stopping keeps the score. Each step runs the model once on all live beams
(one jitted forward, fixed padded shapes), scores every move whose row still
fits a build (:func:`primary.allocator.fits`), and keeps the ``beam_size``
best distinct rows; a beam size of 1 is greedy (add the best token while its
logit is positive).

A finished row is allocated (:func:`primary.allocator.allocate`, least
overshoot) and its empty slots are filled, mains first, each with the standard
ability whose extra AP gains the most logit (ties: the one whose next token the
model likes best), so the result is always a full 57-AP build. The build's
score is the beam score plus what the filling gained.

The model call is pluggable: ``logits_fn(tokens (B, L), weapons (B, 1),
key_padding_mask (B, L)) -> logits (B, V)``, so steering can drive completion. A batch of
builds may carry inputs of its own per build (``logits_inputs`` of :func:`complete_builds`,
e.g. each build's own feature edits): each model row then gets its build's entries as
further arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from primary.allocator import (
    PieceSlots,
    allocate,
    fits,
    min_ap_row,
    raise_fits,
    slot_pieces,
)
from primary.builds import N_MAIN_ONLY, N_MAINS, N_SUBS
from primary.examples import LENGTH_BUCKETS, bucket_length
from primary.model import HashedGraph, SetCompletionModel
from primary.vocab import (
    ABILITIES,
    ABILITY_INDEX,
    ABILITY_NAMES,
    ABILITY_TOKENS,
    AP_THRESHOLDS,
    GEAR_PIECES,
    MAIN_AP,
    MAIN_ONLY_ABILITIES,
    PIECE_OF_MAIN_ONLY,
    STANDARD_ABILITIES,
    SUB_AP,
    BuildError,
    Vocab,
    WeaponVocab,
    ap_to_token_multihot,
    resolve_abilities,
    tokenize_build,
)
from primary.weapons import UnknownWeaponError, weapon_name
from primary.weapons import resolve_weapon as resolve_table_weapon
from runkit.progress import show_progress

LogitsFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

N_TOKENS = len(ABILITY_TOKENS)
N_STD, N_THR = len(STANDARD_ABILITIES), len(AP_THRESHOLDS)
# Ability column and AP level of each of the 138 ability tokens.
TOKEN_ABILITY = np.array([ABILITY_INDEX[t] if t in ABILITY_INDEX else
                          ABILITY_INDEX[t.rpartition("_")[0]] for t in ABILITY_TOKENS], np.int64)
TOKEN_LEVEL = np.array([MAIN_AP if t in ABILITY_INDEX else int(t.rpartition("_")[2])
                        for t in ABILITY_TOKENS], np.int64)
# IMPLIES[j, k]: raising token j's ability to j's level brings token k (if not yet present).
IMPLIES = ((TOKEN_ABILITY[:, None] == TOKEN_ABILITY[None, :])
           & (TOKEN_LEVEL[None, :] <= TOKEN_LEVEL[:, None])).astype(np.float32)
_NEG = -1e30
# Piece of each main-only column, and the main-only columns of each piece.
MO_PIECE = np.array([GEAR_PIECES.index(PIECE_OF_MAIN_ONLY[a]) for a in MAIN_ONLY_ABILITIES])
MO_COLUMNS_OF_PIECE = [np.flatnonzero(MO_PIECE == p) for p in range(len(GEAR_PIECES))]
# Filling a slot: whether an option that brings a new token beats every one that brings none.
PREFER_NEW_TOKENS = False
DEFAULT_ROWS_PER_CALL = 1024
# Up to this hidden size a completion pads every model call to the largest length bucket: a
# small model's compilation per bucket costs more than the padded work; for a big one (e.g.
# the full-size 512-d primary) the padding costs more than the compilations.
FIXED_WIDTH_MAX_HIDDEN = 128


@partial(jax.jit, static_argnames=("graph",))
def _model_logits(graph, state, tokens, weapons, key_padding_mask):
    return nnx.merge(graph.graphdef, state)(tokens, weapons, key_padding_mask)


def model_logits_fn(primary: SetCompletionModel, *, split=None) -> LogitsFn:
    """The plain model as a ``logits_fn`` (one jitted forward per input shape). ``split``:
    ``nnx.split(primary)`` when the caller keeps one (splitting takes milliseconds)."""
    graphdef, state = split or nnx.split(primary)
    return partial(_model_logits, HashedGraph(graphdef), state)


# ----------------------------------------------------------------------------- inputs


def resolve_weapon(weapon, weapon_vocab: WeaponVocab, *, where: str = "weapon") -> int:
    """A game id, stat.ink key, internal or English name (:func:`primary.weapons.resolve_weapon`)
    -> a game id the model knows. A game id outside the weapon table is taken as it is (an
    imported model may know one)."""
    known = {int(g) for g in weapon_vocab.game_ids}
    text = weapon.strip() if isinstance(weapon, str) else weapon
    if isinstance(text, str) and text.lstrip("-").isdigit() and int(text) in known:
        gid = int(text)
    elif (isinstance(text, (int, np.integer)) and not isinstance(text, bool)
          and int(text) in known):
        gid = int(text)
    else:
        try:
            gid = resolve_table_weapon(weapon, where=where).game_id
        except UnknownWeaponError as e:
            raise BuildError(str(e)) from None
    if gid not in known:
        raise BuildError(f"{where}: weapon {weapon!r} (game id {gid}, {weapon_name(gid)}) is "
                         f"not in {weapon_vocab.source}: this model was not trained on it")
    return gid


def check_observed(rows: np.ndarray, *, where: str = "observed abilities") -> None:
    """Refuse observed rows that no legal build can hold, naming the first and why."""
    ok = fits(rows)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        reason = allocate(rows[i]).reason
        at = f" (row {i})" if len(rows) > 1 else ""
        raise BuildError(f"{where}{at} cannot be part of a legal build: {reason}")


def _token_matrix(rows: np.ndarray, vocab: Vocab, width: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 26)`` AP rows -> ``(n, Lb)`` vocab ids (tokenisation order, right-padded) and
    ``(n, Lb)`` padding mask; Lb the smallest length bucket that fits (or ``width``). Tokens
    the vocabulary lacks are left out (the model cannot see them); an empty set is
    ``[<NULL>]``."""
    hot = ap_to_token_multihot(rows) & (vocab.ability_token_ids >= 0)[None, :]
    lengths = hot.sum(1)
    width = width or bucket_length(max(1, int(lengths.max(initial=0))))
    tokens = np.full((len(rows), width), vocab.pad_id, np.int32)
    pos = np.cumsum(hot, axis=1) - 1
    r, c = np.nonzero(hot)
    tokens[r, pos[r, c]] = vocab.ability_token_ids[c]
    tokens[lengths == 0, 0] = vocab.null_id
    return tokens, tokens == vocab.pad_id


def _token_logits(logits_fn: LogitsFn, vocab: Vocab, rows: np.ndarray, weapon_ids: np.ndarray,
                  chunk: int, width: int | None = None, row_inputs: tuple = ()) -> np.ndarray:
    """``(n, 26)`` rows -> ``(n, 138)`` logits of the ability tokens (0 where the vocabulary
    lacks the token), in fixed ``chunk``-row calls so each length bucket compiles once.
    ``row_inputs``: arrays with one entry per row, passed on to ``logits_fn`` (filler rows
    get zeros)."""
    tokens, mask = _token_matrix(rows, vocab, width)
    out = np.zeros((len(rows), N_TOKENS), np.float32)
    have = vocab.ability_token_ids >= 0
    for start in range(0, len(rows), chunk):
        stop = min(start + chunk, len(rows))
        t = np.full((chunk, tokens.shape[1]), vocab.pad_id, np.int32)
        t[:, 0] = vocab.null_id  # filler rows: a lone <NULL>, never fully masked
        m = t == vocab.pad_id
        w = np.zeros((chunk, 1), np.int32)
        t[:stop - start], m[:stop - start] = tokens[start:stop], mask[start:stop]
        w[:stop - start, 0] = weapon_ids[start:stop]
        extra = []
        for x in row_inputs:
            filled = np.zeros((chunk,) + x.shape[1:], x.dtype)
            filled[:stop - start] = x[start:stop]
            extra.append(jnp.asarray(filled))
        logits = np.asarray(logits_fn(jnp.asarray(t), jnp.asarray(w), jnp.asarray(m), *extra))
        if logits.shape != (chunk, len(vocab)):
            raise ValueError(f"logits_fn returned shape {logits.shape}, expected "
                             f"({chunk}, {len(vocab)})")
        out[start:stop, have] = logits[:stop - start, vocab.ability_token_ids[have]]
    return out


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CompletedBuild:
    """One full, legal build.

    mains ``(3,)`` (head, clothes, shoes) and subs ``(9,)``: ability columns of
    :data:`primary.vocab.ABILITIES` (three subs per piece, in piece order).
    """

    weapon: int
    mains: np.ndarray
    subs: np.ndarray
    ap: dict[str, int]
    score: float
    observed: dict[str, int]

    @property
    def pieces(self) -> tuple[PieceSlots, ...]:
        return slot_pieces(self.mains, self.subs)

    @property
    def tokens(self) -> list[str]:
        return tokenize_build(self.ap)

    @property
    def added(self) -> dict[str, int]:
        """AP the completion gave each ability beyond what was observed."""
        return {a: v - self.observed.get(a, 0) for a, v in self.ap.items()
                if v > self.observed.get(a, 0)}

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {
            "weapon": self.weapon, "weapon_name": weapon_name(self.weapon),
            "pieces": [{"piece": p.piece, "main": p.main, "subs": list(p.subs)}
                       for p in self.pieces],
            "ap": dict(self.ap), "tokens": self.tokens, "score": float(self.score),
            "observed": dict(self.observed), "added": self.added,
        }

    def describe(self) -> str:
        """The build as a player reads it (in-game names): one line per gear piece, then AP
        totals and what the score means."""
        width = max(len(p.piece) for p in self.pieces)
        name_width = max(len(n) for n in ABILITY_NAMES.values())
        lines = [f"{weapon_name(self.weapon)} (score {self.score:.2f})"]
        for p in self.pieces:
            subs = ", ".join(ABILITY_NAMES.get(a, "(empty)") for a in p.subs)
            main = ABILITY_NAMES.get(p.main, "(empty)")
            lines.append(f"  {p.piece:<{width}}  main {main:<{name_width}}  subs {subs}")
        totals = sorted(self.ap.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("  AP: " + ", ".join(f"{ABILITY_NAMES[a]} {v}" for a, v in totals))
        return "\n".join(lines)


@dataclass(frozen=True)
class Completion:
    """The best build and the beam's runners-up (distinct builds, best first)."""

    best: CompletedBuild
    runners_up: tuple[CompletedBuild, ...]

    def to_dict(self) -> dict:
        return {"best": self.best.to_dict(), "runners_up": [b.to_dict() for b in self.runners_up]}


@dataclass(frozen=True)
class RankedBuilds:
    """The distinct builds the beam finished with, per completion, best score first:
    ``mains (n, R, 3)``, ``subs (n, R, 9)``, ``ap (n, R, 26)`` int16, ``score (n, R)``. Two
    beams that fill into the same build count once; -inf scores (at the end) mark no build."""

    mains: np.ndarray
    subs: np.ndarray
    ap: np.ndarray
    score: np.ndarray


@dataclass(frozen=True)
class CompletionBatch:
    """``n`` completions as arrays (the best build of each): ``mains (n, 3)``, ``subs (n, 9)``,
    ``ap (n, 26)`` int16, ``score (n,)``; ``rows (n, R, 26)`` and ``row_scores (n, R)`` are
    the finished beam rows (minimum AP before filling), best first (-inf: no such beam).
    ``ranked`` holds every finished beam's build, distinct and best first (see
    :class:`RankedBuilds`); its first build is the best one above."""

    mains: np.ndarray
    subs: np.ndarray
    ap: np.ndarray
    score: np.ndarray
    rows: np.ndarray
    row_scores: np.ndarray
    ranked: RankedBuilds

    def best_build(self, i: int, weapon: int, observed: np.ndarray) -> CompletedBuild:
        """Build ``i`` as a :class:`CompletedBuild` (what :func:`complete_build` gives as
        ``best`` for the same inputs); ``weapon`` and ``observed`` ``(26,)`` as completed."""
        return CompletedBuild(int(weapon), self.mains[i], self.subs[i],
                              {ABILITIES[c]: int(v) for c, v in enumerate(self.ap[i]) if v > 0},
                              float(self.score[i]),
                              {ABILITIES[c]: int(v) for c, v in enumerate(observed) if v > 0})


# ----------------------------------------------------------------------------- search


_HASH_WEIGHTS = np.random.default_rng(7).integers(1, 2**61, len(ABILITIES), dtype=np.int64)


def _row_hash(rows: np.ndarray) -> np.ndarray:
    """A linear hash of AP rows (int64 wrap-around), so a raised row's hash is cheap."""
    return (rows.astype(np.int64) * _HASH_WEIGHTS).sum(-1)


def _legal_moves(rows: np.ndarray, movable: np.ndarray) -> np.ndarray:
    """``(m, 26)`` rows, ``(m, 138)`` candidate moves -> which moves leave a row that fits."""
    return movable & raise_fits(rows, TOKEN_ABILITY, TOKEN_LEVEL)


def _beam_search(logits_fn, vocab, rows0, weapon_ids, beam_size, chunk, progress, width=None,
                 inputs=()):
    """Returns finished rows ``(n, B, 26)``, scores ``(n, B)`` (-inf empty), their last
    token logits ``(n, B, 138)``, all best first. ``inputs``: arrays with one entry per
    problem, handed to ``logits_fn`` for each of its rows."""
    n, B = len(rows0), beam_size
    rows = np.repeat(rows0[:, None, :], B, 1).astype(np.int64)
    score = np.full((n, B), -np.inf)
    score[:, 0] = 0.0
    done = np.zeros((n, B), bool)
    last = np.zeros((n, B, N_TOKENS), np.float32)
    in_vocab = vocab.ability_token_ids >= 0
    bar = show_progress(desc="completing", unit="step", disable=not progress)
    while True:
        live = np.isfinite(score) & ~done
        if not live.any():
            break
        idx = np.argwhere(live)
        ell = _token_logits(logits_fn, vocab, rows[live], np.repeat(weapon_ids, B)[live.ravel()],
                            chunk, width, tuple(x[idx[:, 0]] for x in inputs))
        last[live] = ell
        hot = ap_to_token_multihot(rows[live])
        # Gain of each move: the logits of every token it newly implies.
        gain = (ell * ~hot) @ IMPLIES.T
        ok = _legal_moves(rows[live], ~hot & in_vocab[None, :])
        move_score = np.where(ok, score[live][:, None] + gain, -np.inf)
        # Pool per problem: every beam as it is (stopping / finished), then every move.
        pool_score = np.full((n, B + B * N_TOKENS), -np.inf)
        pool_score[:, :B] = score
        moves = np.full((n, B, N_TOKENS), -np.inf)
        moves[idx[:, 0], idx[:, 1]] = move_score
        pool_score[:, B:] = moves.reshape(n, -1)
        prob, pos = np.nonzero(np.isfinite(pool_score))
        cand_score = pool_score[prob, pos]
        src = np.where(pos < B, pos, (pos - B) // N_TOKENS)
        tok = np.where(pos < B, -1, (pos - B) % N_TOKENS)
        # The hash of each candidate's row, from its parent's without building the row.
        parent = rows[prob, src]
        ab, lvl = TOKEN_ABILITY[np.maximum(tok, 0)], TOKEN_LEVEL[np.maximum(tok, 0)]
        old = parent[np.arange(len(prob)), ab]
        raise_by = np.where(tok >= 0, np.maximum(lvl - old, 0), 0)
        h = _row_hash(parent) + raise_by * _HASH_WEIGHTS[ab]
        # Distinct rows only (the best-scored copy), then the best B per problem.
        order = np.lexsort((-cand_score, h, prob))
        first = np.ones(len(order), bool)
        first[1:] = (prob[order][1:] != prob[order][:-1]) | (h[order][1:] != h[order][:-1])
        uniq = order[first]
        uniq = uniq[np.lexsort((-cand_score[uniq], prob[uniq]))]
        rank = np.arange(len(uniq)) - np.searchsorted(prob[uniq], prob[uniq])
        sel = uniq[rank < B]
        slot = rank[rank < B]
        new_rows = np.zeros_like(rows)
        new_score = np.full((n, B), -np.inf)
        new_done = np.zeros((n, B), bool)
        new_last = np.zeros_like(last)
        p_sel = prob[sel]
        new_rows[p_sel, slot] = parent[sel]
        new_rows[p_sel, slot, ab[sel]] += raise_by[sel]
        new_score[p_sel, slot] = cand_score[sel]
        new_done[p_sel, slot] = tok[sel] < 0  # kept as it is: stopped
        new_last[p_sel, slot] = last[p_sel, src[sel]]
        rows, score, done, last = new_rows, new_score, new_done, new_last
        bar.update(1)
    bar.close()
    return rows, score, last


def _fill(rows_ap: np.ndarray, mains: np.ndarray, subs: np.ndarray, ell: np.ndarray,
          prefer_new: bool = PREFER_NEW_TOKENS):
    """Fill the empty slots (-1) of ``m`` allocations in place, mains first; returns the filled
    AP ``(m, 26)`` and the logit each row gained.

    A main may also take a main-only ability of a piece that has none (a standard main on
    that piece moves to the empty slot). With ``prefer_new`` an option that brings a new
    token beats one that brings none (see :data:`PREFER_NEW_TOKENS`).
    """
    ap = rows_ap.astype(np.int64).copy()
    gained = np.zeros(len(ap))
    std_ell = ell[:, N_MAIN_ONLY:].reshape(len(ap), N_STD, N_THR)
    thr = np.asarray(AP_THRESHOLDS)

    def options(rows, amount):
        """(gain, crosses, next-token logit) of each standard ability given ``amount`` AP."""
        cur = ap[rows][:, N_MAIN_ONLY:, None]
        cross = (thr > cur) & (thr <= cur + amount)
        delta = (std_ell[rows] * cross).sum(-1)
        above = thr > cur + amount
        nxt = np.where(above.any(-1), np.take_along_axis(
            std_ell[rows], above.argmax(-1)[..., None], -1)[..., 0], _NEG)
        return delta, cross.any(-1), nxt

    def choose(delta, new, nxt):
        # Most logit gained (first: whether a token is new, if preferred); ties: the option
        # whose next token the model likes best.
        key = np.where(new, 0.0, -1e6) + delta if prefer_new else delta
        return _argmax_lex(key, nxt)

    for _ in range(N_MAINS):  # a main-only choice can move a main into another empty slot
        for j in range(N_MAINS):
            rows = np.flatnonzero(mains[:, j] < 0)
            if not len(rows):
                continue
            delta, new, nxt = options(rows, MAIN_AP)
            m = mains[rows]
            has_mo = np.stack([np.isin(m, MO_COLUMNS_OF_PIECE[p]).any(1)
                               for p in range(N_MAINS)], 1)
            mo_ok = ~has_mo[:, MO_PIECE]  # (r, 12)
            mo_delta = np.where(mo_ok, ell[rows, :N_MAIN_ONLY], _NEG)
            best = choose(np.concatenate([mo_delta, delta], 1),
                          np.concatenate([mo_ok, new], 1),
                          np.concatenate([np.full_like(mo_delta, _NEG), nxt], 1))
            is_mo = best < N_MAIN_ONLY
            gained[rows] += np.where(is_mo, mo_delta[np.arange(len(rows)), np.minimum(
                best, N_MAIN_ONLY - 1)], delta[np.arange(len(rows)), np.maximum(
                    best - N_MAIN_ONLY, 0)])
            for r, col in zip(rows[is_mo], best[is_mo]):
                p = MO_PIECE[col]
                mains[r, j], mains[r, p] = mains[r, p], col
            std_rows = rows[~is_mo]
            mains[std_rows, j] = best[~is_mo]
            ap[rows, best] += MAIN_AP
    for j in range(N_SUBS):
        rows = np.flatnonzero(subs[:, j] < 0)
        if not len(rows):
            continue
        delta, new, nxt = options(rows, SUB_AP)
        best = choose(delta, new, nxt)
        subs[rows, j] = N_MAIN_ONLY + best
        ap[rows, N_MAIN_ONLY + best] += SUB_AP
        gained[rows] += delta[np.arange(len(rows)), best]
    return ap, gained


def _argmax_lex(primary_key: np.ndarray, secondary_key: np.ndarray) -> np.ndarray:
    """Row-wise argmax of ``primary_key``, ties broken by ``secondary_key`` then column."""
    top = primary_key.max(1, keepdims=True)
    cand = np.where(np.isclose(primary_key, top, rtol=0, atol=1e-6), secondary_key, -np.inf)
    return cand.argmax(1)


def _finish(rows: np.ndarray, ell: np.ndarray):
    """Allocate and fill ``(m, 26)`` finished rows: ``mains (m, 3)``, ``subs (m, 9)``, AP, gain."""
    m = len(rows)
    mains = np.full((m, N_MAINS), -1, np.int32)
    subs = np.full((m, N_SUBS), -1, np.int32)
    base = np.zeros((m, len(ABILITIES)), np.int64)
    for i, row in enumerate(rows):
        alloc = allocate(row)
        if not alloc.feasible:  # the search only keeps rows that fit
            raise AssertionError(f"a finished row does not fit: {alloc.reason}")
        mains[i], subs[i] = alloc.mains, alloc.subs
        base[i] = [alloc.ap.get(a, 0) for a in ABILITIES]
    ap, gained = _fill(base, mains, subs, ell)
    # Subs grouped for reading: the most-used ability first (slot order carries no meaning).
    count = (subs[:, :, None] == subs[:, None, :]).sum(2)
    order = np.lexsort((subs, -count), axis=1)
    return mains, np.take_along_axis(subs, order, 1), ap, gained


def _finished_builds(rows: np.ndarray, score: np.ndarray, last: np.ndarray):
    """Every beam of ``(n, B)`` allocated and filled: ``mains (n, B, 3)``, ``subs (n, B, 9)``,
    ``ap (n, B, 26)`` and the total score ``(n, B)`` (-inf where a beam is empty)."""
    n, B = score.shape
    ok = np.isfinite(score)
    mains = np.full((n, B, N_MAINS), -1, np.int32)
    subs = np.full((n, B, N_SUBS), -1, np.int32)
    ap = np.zeros((n, B, len(ABILITIES)), np.int64)
    total = np.full((n, B), -np.inf)
    mains[ok], subs[ok], ap[ok], gained = _finish(rows[ok], last[ok])
    total[ok] = score[ok] + gained
    return mains, subs, ap, total


def _ranked_builds(mains, subs, ap, total) -> RankedBuilds:
    """Every beam's build of :func:`_finished_builds`, best first, a repeated build kept once
    (at its best score)."""
    def take(arrays, order):
        return [np.take_along_axis(x, order if x.ndim == 2 else order[..., None], 1)
                for x in arrays]

    mains, subs, ap, total = take((mains, subs, ap, total),
                                  np.argsort(-total, axis=1, kind="stable"))
    same = (ap[:, :, None, :] == ap[:, None, :, :]).all(-1)  # (n, R, R)
    before = np.tril(np.ones(same.shape[1:], bool), -1)  # [r, s]: s ranks before r
    repeat = (same & before).any(-1) | ~np.isfinite(total)
    total = np.where(repeat, -np.inf, total)
    # Distinct builds first, in their order.
    return RankedBuilds(*take((mains, subs, ap.astype(np.int16), total),
                              np.argsort(repeat, axis=1, kind="stable")))


def _check_inputs(primary, logits_fn, vocab, weapon_vocab, beam_size):
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    if logits_fn is None:
        if primary is None:
            raise ValueError("complete_build needs a primary model or a logits_fn")
        if primary.config.vocab_size != len(vocab):
            raise ValueError(f"the model predicts {primary.config.vocab_size} tokens, "
                             f"{vocab.source} has {len(vocab)}")
        if primary.config.weapon_vocab_size != len(weapon_vocab):
            raise ValueError(f"the model knows {primary.config.weapon_vocab_size} weapons, "
                             f"{weapon_vocab.source} has {len(weapon_vocab)}")
        logits_fn = model_logits_fn(primary)
    return logits_fn


def prefers_fixed_width(primary: SetCompletionModel) -> bool:
    """The ``fixed_width`` that completes a few builds with ``primary`` soonest."""
    return primary.config.hidden_dim <= FIXED_WIDTH_MAX_HIDDEN


def complete_builds(primary: SetCompletionModel | None, vocab: Vocab, weapon_vocab: WeaponVocab,
                    weapons: np.ndarray, observed: np.ndarray, *, beam_size: int = 4,
                    logits_fn: LogitsFn | None = None, rows_per_call: int | None = None,
                    fixed_width: bool = False, progress: bool = False,
                    logits_inputs: tuple[np.ndarray, ...] = ()) -> CompletionBatch:
    """Complete ``n`` builds at once: ``weapons (n,)`` game ids, ``observed (n, 26)`` minimum AP.

    Every step runs the model once on all live beams of all builds, in calls of
    ``rows_per_call`` rows (default: ``n * beam_size`` up to 1024), each padded to the
    smallest length bucket that fits, or with ``fixed_width`` to the largest (one shape to
    compile: quicker for small runs, more work per call). ``logits_inputs``: arrays whose
    first axis is the ``n`` builds; ``logits_fn`` is called with each row's entries as
    further arguments (``(rows_per_call, ...)`` each; zeros for filler rows). Observed rows
    that cannot be part of a legal build raise :class:`BuildError` naming the row and why.
    """
    logits_fn = _check_inputs(primary, logits_fn, vocab, weapon_vocab, beam_size)
    observed = np.asarray(observed)
    if observed.ndim != 2 or observed.shape[1] != len(ABILITIES) or len(observed) == 0:
        raise ValueError(f"observed must have shape (n > 0, {len(ABILITIES)}), got "
                         f"{observed.shape}")
    weapons = np.asarray(weapons)
    if weapons.shape != (len(observed),):
        raise ValueError(f"weapons must have shape ({len(observed)},), got {weapons.shape}")
    for i, x in enumerate(logits_inputs):
        if len(x) != len(observed):
            raise ValueError(f"logits_inputs[{i}] has {len(x)} entries, expected one per build "
                             f"({len(observed)})")
    check_observed(observed)
    weapon_ids = weapon_vocab.encode_game_ids(weapons, where="weapons to complete")
    chunk = rows_per_call or min(len(observed) * beam_size, DEFAULT_ROWS_PER_CALL)
    rows, score, last = _beam_search(logits_fn, vocab, observed.astype(np.int64), weapon_ids,
                                     beam_size, chunk, progress,
                                     LENGTH_BUCKETS[-1] if fixed_width else None,
                                     tuple(np.asarray(x) for x in logits_inputs))
    mains, subs, ap, total = _finished_builds(rows, score, last)
    best = total.argmax(1)
    take = (np.arange(len(best)), best)
    return CompletionBatch(mains[take], subs[take], ap[take].astype(np.int16), total[take], rows,
                           score, _ranked_builds(mains, subs, ap, total))


def complete_build(primary: SetCompletionModel | None, vocab: Vocab, weapon_vocab: WeaponVocab,
                   weapon, observed: Mapping[str, int] | np.ndarray, *, beam_size: int = 4,
                   logits_fn: LogitsFn | None = None, fixed_width: bool = False
                   ) -> Completion:
    """Complete one partial build into a full legal one, with the beam's runners-up.

    ``weapon``: a game id or a weapon name / stat.ink key. ``observed``: ``{ability: AP}``,
    each ability by any name :func:`primary.vocab.resolve_ability` takes
    (minimum AP, never lowered) or a ``(26,)`` row. ``logits_fn``: see the module docstring
    (default: the plain model). Runners-up are the other distinct finished beams, each
    allocated and filled the same way (up to ``beam_size - 1`` of them; two rows may fill
    into the same build, which is then listed once). ``fixed_width``: see
    :func:`complete_builds`.
    """
    logits_fn = _check_inputs(primary, logits_fn, vocab, weapon_vocab, beam_size)
    gid = resolve_weapon(weapon, weapon_vocab)
    if isinstance(observed, Mapping):
        observed = resolve_abilities(observed, where="observed abilities")
    row = min_ap_row(observed, where="observed abilities")
    check_observed(row[None])
    weapon_ids = weapon_vocab.encode_game_ids(np.array([gid]), where="weapon to complete")
    rows, score, last = _beam_search(logits_fn, vocab, row[None], weapon_ids, beam_size,
                                     beam_size, False, LENGTH_BUCKETS[-1] if fixed_width else None)
    mains, subs, ap, total = (x[0] for x in _finished_builds(rows, score, last))
    obs = {ABILITIES[i]: int(v) for i, v in enumerate(row) if v > 0}
    builds, seen = [], set()
    for i in np.argsort(-total, kind="stable"):
        key = tuple(ap[i])
        if not np.isfinite(total[i]) or key in seen:
            continue
        seen.add(key)
        builds.append(CompletedBuild(gid, mains[i], subs[i],
                                     {ABILITIES[c]: int(v) for c, v in enumerate(ap[i]) if v > 0},
                                     float(total[i]), obs))
    return Completion(builds[0], tuple(builds[1:]))


__all__ = ["CompletedBuild", "Completion", "CompletionBatch", "LogitsFn", "RankedBuilds",
           "check_observed", "complete_build", "complete_builds", "model_logits_fn",
           "prefers_fixed_width", "resolve_weapon"]
