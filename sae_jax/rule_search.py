"""Explain features by rules over boolean conditions: searched on one split, scored on another.

Inputs are generic: a condition matrix ``C (n, K) bool`` (what each input meets) and which
features are active on each input (``(n, F) bool``, or an :class:`ActiveMatrix` of packed
bits when ``n x F`` bools would not fit in memory). Nothing here knows what a condition is.

Per feature, on the FIT rows:

- the rule that best predicts "feature active" by F1: a conjunction of up to ``max_terms``
  conditions, found by a beam search that runs for all features of a chunk at once (the
  true positives of every one-condition extension of every beam entry are one matmul,
  ``(A * C_S)^T C``; the supports of the extensions depend only on the beam entries, so
  they are one matmul over the distinct entries). A longer conjunction replaces a shorter
  one when its F1 is at least the shorter one's plus ``min_gain`` (default -0.01: a
  condition that nearly every explained input meets is kept, so the rule is the most
  specific one that fits as well); among equal scores the lower condition index wins
  (callers order conditions by preference, e.g. higher AP rungs first).
- optionally an OR with a second conjunction, searched the same way on the positives the
  first misses, kept only when the OR gains ``or_min_gain`` F1 on the fit rows and the
  second conjunction adds at least ``min_support`` true positives;
- where that rule is broader than the feature (fit precision below ``broad_ratio`` times
  fit recall: it holds on many inputs where the feature is silent) and the feature has
  ``min_level_positives`` positives on the search rows, the conjunction that
  restores precision: the first conjunction extended one condition at a time (up to
  ``max_terms``), each step the extension of best F1 among those that raise precision,
  until precision is at least ``broad_ratio`` times recall; it replaces the shorter rule
  when its fit F1, less the new conditions' costs, is within ``restore_tolerance`` of the
  shorter rule's (``Explanations.restored``). A broad rule that no conjunction restores
  is kept, and its held-out precision and recall say that it is broader;
- the same preference for the specific within a family: each condition of the chosen rule
  is replaced by the strictest condition of its family that holds only where it holds
  and keeps the rule's fit F1 within ``tighten_tolerance`` ("Quick Super Jump >= 12"
  rather than ">= 3" when nearly every input that fires with it has 12 or more);
- the single conditions with the highest lift ``P(active | c) / P(active)`` (with support).

Then on the HELD-OUT rows: precision, recall, F1 of the rule, the feature's frequency and
the rule's. Conditions of one family (``families``) are never conjoined (nested AP rungs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from runkit.progress import show_progress

MAX_TERMS_LIMIT = 3  # set keys pack up to 3 condition indices of 16 bits into an int64


@dataclass(frozen=True)
class ExplainConfig:
    beam: int = 4  # beam entries kept per feature and depth
    max_terms: int = 3  # conditions per conjunction
    # F1 a longer conjunction must add on the fit rows; 0 keeps a condition that every
    # explained input meets, the default -0.01 one that nearly every input meets (the most
    # specific rule that fits as well).
    min_gain: float = -0.01
    # The same preference within a family: a condition of the chosen rule is replaced by
    # a stricter one of its family (one that holds only where it holds, e.g. a higher AP
    # rung) when the rule's fit F1 drops by at most this, so that the rule says what the
    # firing inputs have rather than the least of it. Negative: no tightening.
    tighten_tolerance: float = 0.01
    or_min_gain: float = 0.03  # F1 an OR with a second conjunction must add on the fit rows
    # A rule is broader than its feature when its precision is below this times its recall
    # (on the fit rows); then the conjunction that restores precision is searched, and
    # taken when its fit F1 is within restore_tolerance of the broad rule's. 0: never.
    broad_ratio: float = 0.6
    restore_tolerance: float = 0.05
    or_below_recall: float = 0.9  # an OR is searched only where the first part's recall is lower
    allow_or: bool = True
    # Search the OR part only at the level each feature is explained at (chosen by its first
    # conjunction): less work, but on the demo the median held-out F1 drops 0.03.
    or_at_chosen_level: bool = False
    # A feature is explained at the strongest activity level whose rule's fit F1 is within
    # this of the best level's (its strongest activations are what it stands for).
    level_tolerance: float = 0.03
    level_good_f1: float = 0.8  # ... or whose rule reaches this fit F1 anyway
    max_fit_rows: int = 10_000  # the search runs on at most this many fit rows (a sample)
    min_support: int = 10  # inputs a lift condition (or an OR's second part) must cover
    min_rule_support: int = 10  # inputs a rule must cover on the search rows
    # Positives an activity level above 0 must have on the search rows to be searched:
    # a handful of strong activations is fitted by some 3-condition rule by chance.
    min_level_positives: int = 30
    top_lifts: int = 5
    feature_chunk: int = 256
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.max_terms <= MAX_TERMS_LIMIT:
            raise ValueError(f"ExplainConfig.max_terms must be in 1..{MAX_TERMS_LIMIT}, "
                             f"got {self.max_terms}")
        for name in ("beam", "max_fit_rows", "feature_chunk", "top_lifts", "min_support",
                     "min_rule_support", "min_level_positives"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ExplainConfig.{name} must be positive, got "
                                 f"{getattr(self, name)}")
        if not 0 <= self.broad_ratio <= 1 or self.restore_tolerance < 0:
            raise ValueError(f"ExplainConfig.broad_ratio must be in [0, 1] and "
                             f"restore_tolerance >= 0, got {self.broad_ratio} and "
                             f"{self.restore_tolerance}")


def split_rows(n: int, *, fit_fraction: float = 0.5, seed: int = 0):
    """``(fit_rows, heldout_rows)``: a seeded random split of ``range(n)``, each sorted."""
    if not 0 < fit_fraction < 1:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 rows to split into fit and held-out, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    k = min(n - 1, max(1, int(round(n * fit_fraction))))
    return np.sort(perm[:k]), np.sort(perm[k:])


class ActiveMatrix:
    """Which of ``F`` features are active on each of ``n`` inputs, as packed bits
    (``(ceil(n / 8), F)`` uint8, rows packed along axis 0): 1/8 of a bool matrix."""

    def __init__(self, packed: np.ndarray, n: int):
        packed = np.asarray(packed, np.uint8)
        if packed.ndim != 2 or packed.shape[0] != -(-n // 8):
            raise ValueError(f"packed activity {packed.shape} does not hold {n} rows")
        self.packed, self.n = packed, int(n)

    @property
    def num_features(self) -> int:
        return self.packed.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.num_features

    @classmethod
    def from_dense(cls, active) -> ActiveMatrix:
        active = np.asarray(active, bool)
        if active.ndim != 2:
            raise ValueError(f"activity must be (n, F) bool, got shape {active.shape}")
        return cls(np.packbits(active, axis=0), len(active))

    @classmethod
    def from_batches(cls, batches: Iterable[np.ndarray]) -> ActiveMatrix:
        """Stream ``(B, F)`` bool batches (any sizes) into packed bits."""
        parts, carry, n = [], None, 0
        for batch in batches:
            batch = np.asarray(batch, bool)
            n += len(batch)
            if carry is not None:
                batch = np.concatenate([carry, batch])
            whole = len(batch) // 8 * 8
            if whole:
                parts.append(np.packbits(batch[:whole], axis=0))
            carry = batch[whole:]
        if carry is not None and len(carry):
            parts.append(np.packbits(carry, axis=0))
        if not parts:
            raise ValueError("no activity batches given")
        return cls(np.concatenate(parts), n)

    def columns(self, f0: int, f1: int, rows=None) -> np.ndarray:
        """``(len(rows), f1 - f0)`` bool for features ``f0:f1`` (all rows if None)."""
        block = np.unpackbits(self.packed[:, f0:f1], axis=0, count=self.n).astype(bool)
        return block if rows is None else block[rows]


def as_active_matrix(active) -> ActiveMatrix:
    return active if isinstance(active, ActiveMatrix) else ActiveMatrix.from_dense(active)


@dataclass
class Explanations:
    """Per-feature results, arrays over ``F`` features.

    conjunctions: ``(F, 2, max_terms)`` int condition indices, -1 padded; conjunction 1
    is all -1 when the rule has no OR part, conjunction 0 when the feature has no rule
    (never active on the fit rows). ``lift_*``: ``(F, top_lifts)``, condition -1 when absent.
    """

    conjunctions: np.ndarray
    fit_f1: np.ndarray
    level: np.ndarray  # the activity level each feature is explained at (0: active)
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    f1_level0: np.ndarray  # the same rule scored against level 0 ("active")
    frequency: np.ndarray  # the feature's at its level, on the held-out rows
    rule_frequency: np.ndarray  # the rule's, on the held-out rows
    heldout_active: np.ndarray  # active count on the held-out rows
    lift_condition: np.ndarray
    lift: np.ndarray
    lift_precision: np.ndarray
    lift_support: np.ndarray
    restored: np.ndarray  # (F,) bool: the rule is a conjunction that restored precision
    fit_rows: int
    search_rows: int
    heldout_rows: int

    def rule(self, f: int) -> list[list[int]]:
        """Feature ``f``'s rule as an OR of conjunctions of condition indices."""
        return [[int(c) for c in conj if c >= 0] for conj in self.conjunctions[f]
                if (conj >= 0).any()]


# ---------------------------------------------------------------- conjunction masks

def conjunction_mask(cond: np.ndarray, conj: np.ndarray) -> np.ndarray:
    """``cond (n, K)`` bool, ``conj (..., T)`` int (-1: no condition) -> ``(n, ...)`` bool.
    An all -1 conjunction meets nothing (it is no rule)."""
    conj = np.asarray(conj)
    ext = np.concatenate([cond, np.ones((len(cond), 1), bool)], axis=1)
    idx = np.where(conj < 0, cond.shape[1], conj)
    out = ext[:, idx].all(-1)
    return out & (conj >= 0).any(-1)


def rule_mask(cond: np.ndarray, conjunctions: np.ndarray) -> np.ndarray:
    """``conjunctions (F, J, T)`` -> ``(n, F)`` bool: the OR of each feature's conjunctions."""
    return conjunction_mask(cond, conjunctions).any(-1)


def _f1(tp, pos, pred):
    denom = pos + pred
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


# ---------------------------------------------------------------- the beam search

def _set_keys(sets: np.ndarray, k: int) -> np.ndarray:
    """Sorted condition sets ``(..., d)`` -> one int64 key each."""
    base = np.int64(k + 1)
    key = np.zeros(sets.shape[:-1], np.int64)
    for j in range(sets.shape[-1]):
        key = key * base + sets[..., j].astype(np.int64)
    return key


def _top_unique(scores: np.ndarray, parents: np.ndarray, width: int):
    """The ``width`` best distinct extensions of each feature's beam.

    ``scores (Fc, B, K)``: score of beam entry ``b`` extended by condition ``k``;
    ``parents (Fc, B, d)`` sorted beam sets. Only the best few candidates are turned into
    sets (a set of ``d + 1`` conditions has at most ``d + 1`` parents, so that many times
    ``width`` candidates hold ``width`` distinct ones). Returns ``(scores (Fc, width),
    sets (Fc, width, d + 1))``; missing entries score -1.
    """
    fc, b, k = scores.shape
    flat = scores.reshape(fc, b * k)
    m = flat.shape[1]
    take = min(m, width * (parents.shape[-1] + 1))
    # Sorted so that ties go to the lowest index (the caller's order of preference).
    part = np.sort(np.argpartition(-flat, take - 1, axis=1)[:, :take], axis=1) \
        if take < m else np.broadcast_to(np.arange(m), (fc, m))
    order = np.take_along_axis(part, np.argsort(-np.take_along_axis(flat, part, 1),
                                                 axis=1, kind="stable"), 1)
    s = np.take_along_axis(flat, order, 1)
    parent = np.take_along_axis(parents, (order // k)[:, :, None], 1)  # (Fc, take, d)
    sets = np.sort(np.concatenate([parent, (order % k)[:, :, None]], axis=-1), axis=-1)
    kk = _set_keys(sets, k)
    earlier = np.tril(np.ones((take, take), bool), -1)
    dup = ((kk[:, :, None] == kk[:, None, :]) & earlier[None]).any(-1)
    s = np.where(dup, -1.0, s)
    pick = np.argsort(dup, axis=1, kind="stable")[:, :width]  # first non-duplicates, in order
    out_s = np.take_along_axis(s, pick, 1)
    out_sets = np.take_along_axis(sets, pick[:, :, None], 1)
    if out_s.shape[1] < width:
        pad = width - out_s.shape[1]
        out_s = np.pad(out_s, ((0, 0), (0, pad)), constant_values=-1.0)
        out_sets = np.pad(out_sets, ((0, 0), (0, pad), (0, 0)))
    return out_s, out_sets


class ConditionTable:
    """The search rows' condition matrix in the layouts the search reads, made once per
    call of :func:`explain` and shared by every chunk, level and OR search: ``cf (n, K)``
    float32, ``rows_of (K, n)`` bool (one contiguous row per condition), the pair supports
    ``(K, K)``, a cache of the supports of longer conjunctions (beam entries recur
    across features and levels) and ``stricter (K, K)`` bool: ``[i, j]`` when condition
    ``j`` may replace ``i`` in a tightened rule (of ``i``'s family, holding on these rows
    only where ``i`` holds, on fewer of them or as many with ``j`` preferred by its lower
    index, and costing no more)."""

    CACHE_LIMIT = 200_000  # conjunctions whose (K,) supports are kept

    def __init__(self, cond: np.ndarray, fam: np.ndarray, costs: np.ndarray):
        cond = np.asarray(cond, bool)
        self.n, self.k = cond.shape
        self.cf = cond.astype(np.float32)
        self.rows_of = np.ascontiguousarray(cond.T)
        self.sup1 = self.cf.sum(0)
        self.pairs = self.cf.T @ self.cf
        self.fam = np.asarray(fam)
        self.costs = np.asarray(costs, np.float64)
        self._sup_cache: dict[int, np.ndarray] = {}
        k = np.arange(self.k)
        sup_i, sup_j = self.sup1[:, None], self.sup1[None, :]
        fewer = (sup_j < sup_i) | ((sup_j == sup_i) & (k[None, :] < k[:, None]))
        self.stricter = ((self.fam[:, None] == self.fam[None, :]) & (self.pairs == sup_j)
                         & (sup_j > 0) & fewer & (self.costs[None, :] <= self.costs[:, None]))

    def rows_meeting(self, conj: np.ndarray) -> np.ndarray:
        """``conj (F, T)`` -1 padded -> ``(F, n)`` bool: rows meeting every condition given
        (every row for an all -1 conjunction)."""
        ext = np.concatenate([self.rows_of, np.ones((1, self.n), bool)])
        return ext[np.where(conj < 0, self.k, conj)].all(-2)

    def conjunction_rows(self, conj: np.ndarray) -> np.ndarray:
        """``conj (F, T)`` -1 padded -> ``(F, n)`` bool; an all -1 conjunction meets nothing."""
        return self.rows_meeting(conj) & (conj >= 0).any(-1)[:, None]

    def meets(self, sets: np.ndarray) -> np.ndarray:
        """``sets (..., d)`` -> ``(..., n)`` bool: rows meeting every condition of a set."""
        return self.rows_of[sets].all(-2)

    def supports(self, sets: np.ndarray) -> np.ndarray:
        """``sets (M, d)`` sorted, d >= 2 -> ``(M, K)``: rows meeting the set and each
        condition."""
        if sets.shape[-1] == 1:
            return self.pairs[sets[:, 0]]
        keys = _set_keys(sets, self.k)
        uniq, inverse = np.unique(keys, return_inverse=True)
        first = np.zeros(len(uniq), np.int64)
        first[inverse.reshape(-1)] = np.arange(len(keys))
        missing = [i for i, key in enumerate(uniq.tolist()) if key not in self._sup_cache]
        if missing:
            rows = self.meets(sets[first[missing]]).astype(np.float32)
            sup = rows @ self.cf  # (M', K)
            if len(self._sup_cache) + len(missing) <= self.CACHE_LIMIT:
                for i, row in zip(missing, sup):
                    self._sup_cache[int(uniq[i])] = row
            else:
                fresh = dict(zip(missing, sup))
        table = np.stack([self._sup_cache[int(key)] if int(key) in self._sup_cache
                          else fresh[i] for i, key in enumerate(uniq.tolist())])
        return table[inverse.reshape(-1)]


def search_conjunctions(table: ConditionTable, active: np.ndarray, cfg: ExplainConfig):
    """Best conjunction per feature by F1, less the costs of its conditions.

    ``table``: the search rows' conditions; ``active (n, Fc)`` bool on those rows.
    Returns ``(conj (Fc, max_terms) int -1 padded, f1 (Fc,), tp1 (Fc, K), sup1 (K,))``
    (the F1 is the plain one; the single-condition counts are reused for lifts).
    """
    n, k = table.n, table.k
    fc = active.shape[1]
    act_t = np.ascontiguousarray(active.T)  # (Fc, n)
    pos = act_t.sum(1).astype(np.float32)  # (Fc,)
    sup1 = table.sup1
    tp1 = act_t.astype(np.float32) @ table.cf  # (Fc, K)
    floor = max(1, cfg.min_rule_support)
    cost = table.costs
    f1_1 = _f1(tp1, pos[:, None], sup1[None])
    score_1 = np.where(sup1[None] >= floor, f1_1 - cost[None], -1.0)
    width = min(cfg.beam, k)
    order = np.argsort(-score_1, axis=1, kind="stable")[:, :width]
    scores = np.take_along_axis(score_1, order, 1)
    sets = order[:, :, None]
    best = np.full((fc, cfg.max_terms), -1, np.int64)
    best[:, 0] = sets[:, 0, 0]
    best_score = scores[:, 0].copy()
    best_f1 = np.take_along_axis(f1_1, order[:, :1], 1)[:, 0]
    for depth in range(2, cfg.max_terms + 1):
        in_set = table.meets(sets)  # (Fc, B, n): rows meeting each beam entry
        m = (in_set & act_t[:, None, :]).astype(np.float32).reshape(fc * width, n)
        tp = (m @ table.cf).reshape(fc, width, k)
        sup = table.supports(sets.reshape(fc * width, -1)).reshape(fc, width, k)
        f1 = _f1(tp, pos[:, None, None], sup)
        same_family = (table.fam[sets][:, :, :, None] == table.fam[None, None, None, :]).any(2)
        bad = same_family | (sup < floor) | (scores[:, :, None] <= -1.0)  # -1: no entry
        parent_cost = cost[sets].sum(-1)  # (Fc, B)
        cand = np.where(bad, -1.0, f1 - parent_cost[:, :, None] - cost[None, None, :])
        scores, sets = _top_unique(cand, sets, width)
        better = scores[:, 0] >= best_score + cfg.min_gain
        best[better, :depth] = sets[better, 0]
        best[better, depth:] = -1
        best_f1 = np.where(better, scores[:, 0] + cost[sets[:, 0]].sum(-1), best_f1)
        best_score = np.where(better, scores[:, 0], best_score)
    none = pos == 0
    best[none] = -1
    best_f1 = np.where(none, 0.0, best_f1)
    return best, best_f1, tp1, sup1


def _counts(mask: np.ndarray, active: np.ndarray):
    """``mask``, ``active`` ``(n, Fc)`` bool -> ``(tp, predicted, positives)`` ``(Fc,)``."""
    return ((mask & active).sum(0).astype(np.float64), mask.sum(0).astype(np.float64),
            active.sum(0).astype(np.float64))


def _lifts(tp1, sup1, pos, n, cfg: ExplainConfig):
    base = pos / max(n, 1)  # (Fc,)
    prec = np.where(sup1[None] > 0, tp1 / np.maximum(sup1[None], 1), 0.0)
    lift = np.where(base[:, None] > 0, prec / np.maximum(base[:, None], 1e-12), 0.0)
    ok = (sup1[None] >= cfg.min_support) & (tp1 > 0)
    lift = np.where(ok, lift, -1.0)
    if lift.shape[1] < cfg.top_lifts:  # fewer conditions than lifts asked: pad with none
        pad = cfg.top_lifts - lift.shape[1]
        lift = np.pad(lift, ((0, 0), (0, pad)), constant_values=-1.0)
        prec = np.pad(prec, ((0, 0), (0, pad)))
        sup1 = np.pad(sup1, (0, pad))
    top = np.argsort(-lift, axis=1, kind="stable")[:, :cfg.top_lifts]
    val = np.take_along_axis(lift, top, 1)
    cond = np.where(val > 0, top, -1)
    return (cond, np.maximum(val, 0.0), np.take_along_axis(prec, top, 1),
            np.broadcast_to(sup1, lift.shape)[np.arange(len(top))[:, None], top].astype(np.int64))


# ---------------------------------------------------------------- the whole explanation

def _or_parts(table: ConditionTable, a_fit: np.ndarray, conj: np.ndarray,
              fit_f1: np.ndarray, cfg: ExplainConfig):
    """Second conjunctions where an OR helps: ``(conj2 (Fc, T) -1 where none, fit F1)``."""
    conj2 = np.full_like(conj, -1)
    fit_f1 = fit_f1.copy()
    act_t = a_fit.T  # (Fc, n)
    first = table.conjunction_rows(conj)  # (Fc, n)
    tp, pos = (first & act_t).sum(1), act_t.sum(1)
    # Only where the first conjunction leaves positives out (the search costs as much).
    need = np.flatnonzero(tp < cfg.or_below_recall * pos)
    if len(need):
        a, fst = act_t[need], first[need]
        found, _, _, _ = search_conjunctions(table, (a & ~fst).T, cfg)
        second = table.conjunction_rows(found)
        either = fst | second
        f1_or = _f1((either & a).sum(1), a.sum(1), either.sum(1))
        cost2 = np.where(found >= 0, table.costs[found], 0.0).sum(1)
        new_tp = (second & a & ~fst).sum(1)
        keep = ((f1_or - cost2 > fit_f1[need] + cfg.or_min_gain) & (found >= 0).any(1)
                & (new_tp >= cfg.min_support))
        conj2[need[keep]] = found[keep]
        fit_f1[need[keep]] = f1_or[keep]
    return conj2, fit_f1


def _extension_counts(table: ConditionTable, act_t: np.ndarray, conjs: np.ndarray):
    """True positives and predictions ``(Fr, K)`` of each rule with its first conjunction
    extended by each condition (its OR part kept); ``act_t (Fr, n)``, ``conjs (Fr, 2, T)``."""
    first = table.rows_meeting(conjs[:, 0])
    other = np.zeros_like(first)
    for q in range(1, conjs.shape[1]):
        other |= table.conjunction_rows(conjs[:, q])
    only_first = first & ~other  # rows the first conjunction adds to the others
    tp = (act_t & other).sum(1)[:, None] + (act_t & only_first).astype(np.float32) @ table.cf
    pred = other.sum(1)[:, None] + only_first.astype(np.float32) @ table.cf
    return tp, pred


def _restore_precision(table: ConditionTable, a_fit: np.ndarray, conjs: np.ndarray,
                       fit_f1: np.ndarray, cfg: ExplainConfig):
    """Rules broader than their feature (fit precision below ``cfg.broad_ratio`` times fit
    recall) replaced by the conjunction that restores precision, where one does within
    ``cfg.restore_tolerance`` of fit F1 (see the module docstring).

    ``a_fit (n, Fc)`` bool: activity at each feature's chosen level on the search rows;
    ``conjs (Fc, 2, T)``. Returns ``(conjs, fit_f1, restored (Fc,) bool)``, new arrays."""
    conjs, fit_f1 = conjs.copy(), fit_f1.copy()
    restored = np.zeros(len(conjs), bool)
    if cfg.broad_ratio <= 0:
        return conjs, fit_f1, restored
    act_t = np.ascontiguousarray(a_fit.T)
    pos = act_t.sum(1).astype(np.float64)
    rule = table.conjunction_rows(conjs[:, 0])
    for q in range(1, conjs.shape[1]):
        rule |= table.conjunction_rows(conjs[:, q])
    tp, pred = (rule & act_t).sum(1).astype(np.float64), rule.sum(1).astype(np.float64)
    precision = np.where(pred > 0, tp / np.maximum(pred, 1), 0.0)
    recall = np.where(pos > 0, tp / np.maximum(pos, 1), 0.0)
    # Only rules with positives enough to tell (as for levels above "active").
    todo = np.flatnonzero((precision < cfg.broad_ratio * recall) & (conjs[:, 0, -1] < 0)
                          & (conjs[:, 0, 0] >= 0) & (pos >= cfg.min_level_positives))
    if not len(todo):
        return conjs, fit_f1, restored
    trial = conjs[todo].copy()
    added_cost = np.zeros(len(todo))
    done = np.zeros(len(todo), bool)
    prec = precision[todo]
    floor = max(1, cfg.min_rule_support)
    for _ in range(conjs.shape[2]):
        slot = (trial[:, 0] < 0).argmax(1)  # the first free term of each first conjunction
        live = np.flatnonzero(~done & (trial[np.arange(len(todo)), 0, slot] < 0))
        if not len(live):
            break
        tp_k, pred_k = _extension_counts(table, act_t[todo[live]], trial[live])
        p_k = np.where(pred_k > 0, tp_k / np.maximum(pred_k, 1), 0.0)
        r_k = tp_k / np.maximum(pos[todo[live], None], 1)
        f1_k = _f1(tp_k, pos[todo[live], None], pred_k)
        terms = trial[live, 0]
        same_family = ((table.fam[np.maximum(terms, 0)][:, :, None] == table.fam[None, None, :])
                       & (terms >= 0)[:, :, None]).any(1)
        ok = ~same_family & (pred_k >= floor) & (p_k > prec[live, None])
        pick = np.argmax(np.where(ok, f1_k, -1.0), axis=1)
        rows = np.arange(len(live))
        step = ok[rows, pick]
        grow = live[step]
        trial[grow, 0, slot[grow]] = pick[step]
        added_cost[grow] += table.costs[pick[step]]
        prec[grow] = p_k[rows, pick][step]
        fit_new = f1_k[rows, pick]
        done[live[~step]] = True  # nothing raises precision: stop
        reached = step & (p_k[rows, pick] >= cfg.broad_ratio * r_k[rows, pick])
        for i, j in zip(live[reached], rows[reached]):
            done[i] = True
            f = todo[i]
            if fit_new[j] - added_cost[i] >= fit_f1[f] - cfg.restore_tolerance:
                key = np.where(trial[i, 0] < 0, np.iinfo(np.int64).max, trial[i, 0])
                conjs[f, 0] = trial[i, 0][np.argsort(key, kind="stable")]
                fit_f1[f] = fit_new[j]
                restored[f] = True
    return conjs, fit_f1, restored


def _tighten(table: ConditionTable, a_fit: np.ndarray, conjs: np.ndarray,
             fit_f1: np.ndarray, cfg: ExplainConfig):
    """Each condition of each rule replaced, one at a time, by the strictest condition of
    its family (``table.stricter``) that keeps the whole rule's fit F1 (OR parts
    included) at least the original's less ``cfg.tighten_tolerance``.

    ``a_fit (n, Fc)`` bool: each feature's activity at its chosen level on the search
    rows; ``conjs (Fc, 2, T)``. Returns ``(conjs, fit_f1)``, new arrays."""
    conjs, new_f1 = conjs.copy(), fit_f1.copy()
    if cfg.tighten_tolerance < 0:
        return conjs, new_f1
    stricter = table.stricter
    has = stricter.any(1)
    act_t = np.ascontiguousarray(a_fit.T)  # (Fc, n)
    pos = act_t.sum(1).astype(np.float64)
    floor = fit_f1 - cfg.tighten_tolerance
    for part in range(conjs.shape[1]):
        for term in range(conjs.shape[2]):
            c = conjs[:, part, term]
            todo = np.flatnonzero((c >= 0) & has[np.maximum(c, 0)])
            if not len(todo):
                continue
            rest = conjs[todo, part].copy()
            rest[:, term] = -1
            rest_rows = table.rows_meeting(rest)  # every row when the term stands alone
            other = np.zeros_like(rest_rows)
            for q in range(conjs.shape[1]):
                if q != part:
                    other |= table.conjunction_rows(conjs[todo, q])
            a = act_t[todo]
            only_here = rest_rows & ~other  # rows this conjunction adds to the others
            tp = (a & other).sum(1)[:, None] + (a & only_here).astype(np.float32) @ table.cf
            pred = other.sum(1)[:, None] + only_here.astype(np.float32) @ table.cf
            f1 = _f1(tp, pos[todo, None], pred)  # (len(todo), K): this term replaced by each
            ok = stricter[c[todo]] & (f1 >= floor[todo, None]) & (pred >= cfg.min_rule_support)
            # The strictest acceptable condition (fewest rows; ties to the lower index).
            rank = np.where(ok, table.sup1[None, :], np.inf)
            pick = np.argmin(rank, axis=1)
            take = np.isfinite(rank[np.arange(len(todo)), pick])
            rows = todo[take]
            conjs[rows, part, term] = pick[take]
            new_f1[rows] = f1[take, pick[take]]
    # Conjunctions keep their conditions in ascending order, -1 last.
    key = np.where(conjs < 0, np.iinfo(np.int64).max, conjs)
    return np.take_along_axis(conjs, np.argsort(key, axis=-1, kind="stable"), -1), new_f1


def _rules_for(table: ConditionTable, a_fit: np.ndarray, cfg: ExplainConfig, with_or: bool):
    """Rule search of one activity target: ``(conjunctions (Fc, 2, T), fit F1, tp1, sup1)``."""
    conj, fit_f1, tp1, sup1 = search_conjunctions(table, a_fit, cfg)
    conjs = np.full((len(conj), 2, cfg.max_terms), -1, np.int64)
    conjs[:, 0] = conj
    if with_or:
        conjs[:, 1], fit_f1 = _or_parts(table, a_fit, conj, fit_f1, cfg)
    return conjs, fit_f1, tp1, sup1


def _empty_level(fc: int, cfg: ExplainConfig):
    """Results of a level that was not searched: no rule (fit F1 -1), no lifts."""
    nl = cfg.top_lifts
    return (np.full((fc, 2, cfg.max_terms), -1, np.int64), np.full(fc, -1.0),
            np.full((fc, nl), -1, np.int64), np.zeros((fc, nl)), np.zeros((fc, nl)),
            np.zeros((fc, nl), np.int64))


def explain(cond: np.ndarray, active, *, fit_rows: np.ndarray, heldout_rows: np.ndarray,
            families: np.ndarray | None = None, costs: np.ndarray | None = None,
            config: ExplainConfig = ExplainConfig(), progress: bool = True) -> Explanations:
    """Rules, held-out scores and lifts for every feature (see the module docstring).

    ``cond (n, K)`` bool; ``active``: ``(n, F)`` bool or :class:`ActiveMatrix`, or a list
    of them, one per activation level (level 0 first: "active"; higher levels: "active
    at least this strongly"). With several levels each feature is explained at the level
    whose rule fits (nearly, ``level_tolerance``) best on the fit rows or reaches
    ``level_good_f1``, the strongest such level,
    and its held-out scores are at that level (``level``); ``f1_level0`` scores the same
    rule against level 0. ``fit_rows`` and ``heldout_rows`` index ``range(n)``;
    ``families (K,)`` int (default: all distinct). ``costs (K,)``: F1 on the fit rows a
    condition must add to enter a rule (default 0; e.g. for conditions on what an input
    lacks, which are many and nearly always true).
    """
    cond = np.asarray(cond, bool)
    levels = [as_active_matrix(a) for a in (active if isinstance(active, (list, tuple))
                                            else [active])]
    n, k = cond.shape
    for a in levels:
        if a.shape != levels[0].shape or a.n != n:
            raise ValueError(f"activity levels must all be ({n}, F); got "
                             f"{[lv.shape for lv in levels]} for {n} condition rows")
    if k >= (1 << 16) - 1:
        raise ValueError(f"at most 65534 conditions, got {k}")
    fam = np.arange(k) if families is None else np.asarray(families)
    if fam.shape != (k,):
        raise ValueError(f"families must be ({k},), got {fam.shape}")
    costs = np.zeros(k) if costs is None else np.asarray(costs, np.float64)
    if costs.shape != (k,) or (costs < 0).any():
        raise ValueError(f"costs must be ({k},) and >= 0, got shape {costs.shape}")
    fit_rows, heldout_rows = np.asarray(fit_rows), np.asarray(heldout_rows)
    if len(fit_rows) == 0 or len(heldout_rows) == 0:
        raise ValueError(f"fit ({len(fit_rows)}) and held-out ({len(heldout_rows)}) rows "
                         "must both be non-empty")
    rng = np.random.default_rng(config.seed)
    search = fit_rows if len(fit_rows) <= config.max_fit_rows else np.sort(
        rng.choice(fit_rows, config.max_fit_rows, replace=False))
    table = ConditionTable(cond[search], fam, costs)
    c_held = cond[heldout_rows]
    num_f, t, nl = levels[0].num_features, config.max_terms, config.top_lifts
    out = dict(
        conjunctions=np.full((num_f, 2, t), -1, np.int64), fit_f1=np.zeros(num_f),
        level=np.zeros(num_f, np.int64),
        precision=np.zeros(num_f), recall=np.zeros(num_f), f1=np.zeros(num_f),
        f1_level0=np.zeros(num_f),
        frequency=np.zeros(num_f), rule_frequency=np.zeros(num_f),
        heldout_active=np.zeros(num_f, np.int64),
        lift_condition=np.full((num_f, nl), -1, np.int64), lift=np.zeros((num_f, nl)),
        lift_precision=np.zeros((num_f, nl)), lift_support=np.zeros((num_f, nl), np.int64),
        restored=np.zeros(num_f, bool))
    chunks = range(0, num_f, config.feature_chunk)
    for f0 in show_progress(chunks, desc="explaining features", unit="chunk",
                            disable=not progress, leave=False):
        f1_ = min(num_f, f0 + config.feature_chunk)
        fc = f1_ - f0
        blocks = [a.columns(f0, f1_) for a in levels]
        or_all = config.allow_or and not config.or_at_chosen_level
        a_fits = [block[search] for block in blocks]
        # A level above "active" is searched only where it has positives enough to fit.
        todo = [np.arange(fc)] + [np.flatnonzero(a.sum(0) >= config.min_level_positives)
                                  for a in a_fits[1:]]
        # All levels in one search: the features are independent, and wider matrices make
        # better use of the matmuls (and of the supports the levels share).
        stacked = np.concatenate([a[:, t] for a, t in zip(a_fits, todo)], axis=1)
        conjs, fit_f1, tp1, sup1 = _rules_for(table, stacked, config, or_all)
        found = (conjs, fit_f1) + _lifts(tp1, sup1, stacked.sum(0).astype(np.float64),
                                         len(search), config)
        bounds = np.cumsum([0] + [len(t) for t in todo])
        per_level = []
        for lv, t in enumerate(todo):
            res = _empty_level(fc, config)
            for r, part in zip(res, found):
                r[t] = part[bounds[lv]:bounds[lv + 1]]
            per_level.append(res)
        # The strongest level whose rule fits almost as well as the best level's.
        fits = np.stack([p[1] for p in per_level])  # (L, Fc); -1 where not searched
        near = (((fits >= fits.max(0, keepdims=True) - config.level_tolerance)
                 | (fits >= config.level_good_f1)) & (fits >= 0))
        chosen = len(blocks) - 1 - np.argmax(near[::-1], axis=0)
        cols = np.arange(fc)
        best = {key: np.stack([p[i] for p in per_level])[chosen, cols]
                for i, key in enumerate(("conjs", "fit_f1", "lc", "lv", "lp", "ls"))}
        best["level"] = chosen
        if config.allow_or and config.or_at_chosen_level:
            for lv in np.unique(chosen):
                these = np.flatnonzero((chosen == lv) & (best["conjs"][:, 0] >= 0).any(1))
                if len(these):
                    best["conjs"][these, 1], best["fit_f1"][these] = _or_parts(
                        table, blocks[lv][search][:, these], best["conjs"][these, 0],
                        best["fit_f1"][these], config)
        a_chosen = np.stack(a_fits)[best["level"], :, np.arange(fc)].T  # (n_search, Fc)
        best["conjs"], best["fit_f1"], restored = _restore_precision(
            table, a_chosen, best["conjs"], best["fit_f1"], config)
        best["conjs"], best["fit_f1"] = _tighten(table, a_chosen, best["conjs"],
                                                 best["fit_f1"], config)
        held = np.stack([b[heldout_rows] for b in blocks], 0)  # (L, n_h, Fc)
        a_held = held[best["level"], :, np.arange(fc)].T  # each feature at its level
        sl = slice(f0, f1_)
        mask = rule_mask(c_held, best["conjs"])
        tp, pred, pos = _counts(mask, a_held)
        out["conjunctions"][sl] = best["conjs"]
        out["fit_f1"][sl] = best["fit_f1"]
        out["level"][sl] = best["level"]
        out["precision"][sl] = np.where(pred > 0, tp / np.maximum(pred, 1), 0.0)
        out["recall"][sl] = np.where(pos > 0, tp / np.maximum(pos, 1), 0.0)
        out["f1"][sl] = _f1(tp, pos, pred)
        tp0, pred0, pos0 = _counts(mask, held[0])
        out["f1_level0"][sl] = _f1(tp0, pos0, pred0)
        out["frequency"][sl] = pos / len(heldout_rows)
        out["rule_frequency"][sl] = pred / len(heldout_rows)
        out["heldout_active"][sl] = pos.astype(np.int64)
        out["lift_condition"][sl], out["lift"][sl] = best["lc"], best["lv"]
        out["lift_precision"][sl], out["lift_support"][sl] = best["lp"], best["ls"]
        out["restored"][sl] = restored
    return Explanations(**out, fit_rows=len(fit_rows), search_rows=len(search),
                        heldout_rows=len(heldout_rows))


# ---------------------------------------------------------------- text

def rule_text(rule: Sequence[Sequence[int]], texts: Sequence[str]) -> str:
    """``[[a, b], [c]]`` -> ``"(A and B) or C"``; an empty rule -> ``"no rule"``."""
    parts = [" and ".join(texts[c] for c in conj) for conj in rule if len(conj)]
    if not parts:
        return "no rule"
    if len(parts) == 1:
        return parts[0]
    return " or ".join(f"({p})" if " and " in p else p for p in parts)


def percent(x: float) -> str:
    """A share as a short percentage: 11%, 0.4%."""
    return f"{100 * x:.0f}%" if x >= 0.095 or x == 0 else f"{100 * x:.1g}%"


def sentence(rule: Sequence[Sequence[int]], texts: Sequence[str], f1: float,
             frequency: float, *, level: float | None = None, on: str | None = None) -> str:
    """``"Ninja Squid and Swim Speed Up ≥15 (F1 0.93, fires 11%)"``; with an activity
    ``level``: ``"... (F1 0.93 at activation ≥ 1.6, fires 11%)"``; with the inputs it
    was read ``on``: ``"... (on partial builds, F1 0.93, fires 11%)"``."""
    at = "" if level is None else f" at activation ≥ {level:.2g}"
    where = "" if on is None else f"{on}, "
    return f"{rule_text(rule, texts)} ({where}F1 {f1:.2f}{at}, fires {percent(frequency)})"


__all__ = ["ActiveMatrix", "ExplainConfig", "Explanations", "as_active_matrix",
           "conjunction_mask", "explain", "percent", "rule_mask", "rule_text",
           "search_conjunctions", "sentence", "split_rows"]
