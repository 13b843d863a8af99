"""The causal check of feature explanations: edit builds, run the models again, compare.

An explanation says "feature f fires on builds that meet conjunction R". If that is the
feature's cause and not a correlate, then adding R's conditions to builds that lack R
should raise f's activation, and removing them from builds that have R should lower it.
:func:`causal_check` edits held-out builds both ways (:mod:`primary.build_edits`: legal
builds only), runs the primary model and the SAE on the edited builds (batched, jitted),
and reports per feature the mean activation change, the share of builds where f turns on
(add) or off (remove), and whether the signs agree with the rule. A feature explained on
partial builds (:mod:`primary.partial_builds`, the SAE's own inputs) is checked on them
the same way: :func:`causal_check` given partial builds edits their tokens
(:mod:`primary.partial_edits`).

Builds are edited once per distinct conjunction (features that share a rule share the
edited builds), and only the activation of each feature on its own edited builds is
computed (a gather and a dot product per pair, not the whole SAE).

:func:`rung_curves` steps one ability at a time through its AP rungs on a sample of
builds and returns the chosen features' mean activation at each rung.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bridge.harvest import pooled_of_inputs, pooled_of_partial_builds
from primary.build_edits import edit_conjunctions, set_ability_rung
from primary.build_inputs import full_build_inputs
from primary.builds import BuildSet
from primary.examples import max_build_tokens, pad_to_width
from primary.partial_builds import PartialBuilds
from primary.partial_edits import edit_partial_conjunctions
from primary.vocab import (
    AP_THRESHOLDS,
    MAIN_AP,
    MAIN_ONLY_ABILITIES,
    STANDARD_ABILITIES,
    ap_to_token_multihot,
)
from sae_jax.activity import ACTIVE_THRESHOLD
from sae_jax.model import encode

ROW_BATCH = 1024  # pooled vectors per SAE encoder call
MEETS_CHUNK = 1024  # distinct conjunctions per chunk when finding the builds to edit
_WIDTH = max_build_tokens()


@dataclass(frozen=True)
class CausalConfig:
    per_direction: int = 32  # builds edited per distinct conjunction and direction
    # At most this many edited builds go through the primary (its forward is the cost):
    # with many rules, fewer builds per rule (down to min_per_direction), then only the
    # rules of the highest-priority features are checked.
    max_builds: int = 32_768
    min_per_direction: int = 8
    batch_size: int = 512  # primary forward batch
    seed: int = 0

    def __post_init__(self):
        for name in ("per_direction", "batch_size", "max_builds", "min_per_direction"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CausalConfig.{name} must be positive, got "
                                 f"{getattr(self, name)}")


@partial(jax.jit, static_argnames=("spec",))
def _encode_rows(params, x, *, spec):
    return encode(params, x, spec)[1]


def _activation_batches(sae, x: np.ndarray):
    """Yield ``(start, h (B, F))`` over the rows of ``x``: the SAE's own encoder (any
    architecture; a top-k activation depends on the whole row), in one compiled shape."""
    params, spec = sae.params(), sae.config.encoder
    x = np.asarray(x, np.float32)
    for s in range(0, len(x), ROW_BATCH):
        part = x[s:s + ROW_BATCH]
        m = len(part)
        if m < ROW_BATCH:
            part = np.concatenate([part, np.zeros((ROW_BATCH - m, x.shape[1]), np.float32)])
        yield s, np.asarray(_encode_rows(params, jnp.asarray(part), spec=spec))[:m]


def pair_activations(sae, x: np.ndarray, rows: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``h[rows[i], features[i]]`` of the SAE on pooled vectors ``x (m, D)``: ``(P,)``.
    Only the rows that pairs name are encoded."""
    rows, features = np.asarray(rows), np.asarray(features)
    uniq, inverse = np.unique(rows, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(0, len(uniq) + ROW_BATCH, ROW_BATCH))
    out = np.empty(len(rows), np.float32)
    for b, (s, h) in enumerate(_activation_batches(sae, np.asarray(x)[uniq])):
        sel = order[bounds[b]:bounds[b + 1]]
        out[sel] = h[inverse[sel] - s, features[sel]]
    return out


def feature_activations(sae, x: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``(m, len(features))`` activations of the chosen features on pooled vectors ``x``."""
    features = np.asarray(features)
    parts = [h[:, features] for _, h in _activation_batches(sae, x)]
    return np.concatenate(parts) if parts else np.zeros((0, len(features)), np.float32)


def _known(builds, vocab, weapon_vocab) -> np.ndarray:
    """Rows (full or partial builds) whose weapon and tokens the model's vocabularies hold."""
    ok = np.isin(builds.weapons, weapon_vocab.game_ids)
    tokens = builds.tokens if isinstance(builds, PartialBuilds) else \
        ap_to_token_multihot(builds.ap)
    return ok & ~tokens[:, vocab.ability_token_ids < 0].any(1)


def pooled_of_builds(primary, builds: BuildSet, vocab, weapon_vocab,
                     batch_size: int = 512) -> np.ndarray:
    """``(n, D)`` pooled vectors of whole builds, always in one input shape (``batch_size`` rows x
    the most tokens a build can have), so the many small calls compile once."""
    n = len(builds)
    inputs = full_build_inputs(builds, vocab, weapon_vocab, where="edited builds")
    inputs = pad_to_width(inputs, max(_WIDTH, inputs["tokens"].shape[1]), vocab.pad_id)
    rows = -(-n // batch_size) * batch_size
    if rows > n:  # whole batches: the extra rows copy row 0 and are dropped after
        inputs = {k: np.concatenate([v, np.repeat(v[:1], rows - n, axis=0)])
                  for k, v in inputs.items()}
    return pooled_of_inputs(primary, inputs, batch_size=batch_size)[:n]


def _pick_rows(cond: np.ndarray, uniq: np.ndarray, per_direction: int, rng):
    """For each distinct conjunction: up to ``per_direction`` rows lacking it and having it.
    Returns ``(rows (m,), conj id (m,), add (m,) bool)``."""
    keys = rng.random(len(cond))  # one random order of the builds, shared by all rules
    ext = np.concatenate([cond, np.ones((len(cond), 1), bool)], axis=1)
    rows, ids, adds = [], [], []
    for u0 in range(0, len(uniq), MEETS_CHUNK):
        block = uniq[u0:u0 + MEETS_CHUNK]
        meets = ext[:, np.where(block < 0, cond.shape[1], block)].all(-1)  # (n, Uc)
        for add in (True, False):
            want = ~meets if add else meets
            score = np.where(want, keys[:, None], np.inf)
            k = min(per_direction, len(cond))
            top = np.argpartition(score, k - 1, axis=0)[:k] if k < len(cond) else \
                np.broadcast_to(np.arange(len(cond))[:, None], score.shape)
            good = np.isfinite(np.take_along_axis(score, top, 0))
            r, c = np.nonzero(good)
            rows.append(top[r, c])
            ids.append(u0 + c)
            adds.append(np.full(len(c), add))
    return np.concatenate(rows), np.concatenate(ids), np.concatenate(adds)


def _edits_of(builds):
    """``(edit, concat, pooled)``: how rows of ``builds`` (full or partial) are edited,
    stacked and run through the primary."""
    if isinstance(builds, PartialBuilds):
        def pooled(primary, rows, vocab, weapon_vocab, batch_size):
            return pooled_of_partial_builds(primary, rows, vocab, weapon_vocab,
                                            batch_size=batch_size)

        return edit_partial_conjunctions, PartialBuilds.concat, pooled
    return edit_conjunctions, BuildSet.concat, pooled_of_builds


def causal_check(primary, vocab, weapon_vocab, sae, builds, pooled: np.ndarray,
                 cond: np.ndarray, conditions, conjunctions: np.ndarray, *,
                 config: CausalConfig = CausalConfig(), thresholds=None,
                 priority=None) -> dict:
    """Add and remove each feature's conjunction on ``builds`` and measure the feature.

    ``builds``: a :class:`~primary.builds.BuildSet` or
    :class:`~primary.partial_builds.PartialBuilds` (edited as tokens);
    ``pooled (n, D)``: the primary's pooled vectors of ``builds``; ``cond (n, K)`` their
    condition matrix over ``conditions``; ``conjunctions (F, T)`` each feature's
    conjunction as indices into ``conditions`` (-1 padded; all -1: no rule, not checked).
    Returns arrays over features: ``add_n``, ``add_mean_change``, ``add_turned_on`` (share
    of edited builds, inactive before, active after), ``remove_n``, ``remove_mean_change``,
    ``remove_turned_off``; on/off is against ``thresholds (F,)`` (default: active), and
    ``agrees`` (1 / 0, NaN when nothing could be edited or the feature's rule was left
    out by the ``max_builds`` budget, which keeps the rules of the features with the
    highest ``priority (F,)``, e.g. held-out F1):
    adding raises the mean activation and removing lowers it (each where measured).
    """
    conjunctions = np.asarray(conjunctions, np.int64)
    num_f = len(conjunctions)
    if len(pooled) != len(builds) or len(cond) != len(builds):
        raise ValueError(f"rows differ: builds {len(builds)}, pooled {len(pooled)}, "
                         f"conditions {len(cond)}")
    has_rule = (conjunctions >= 0).any(1)
    out = {k: np.zeros(num_f) for k in ("add_mean_change", "add_turned_on",
                                         "remove_mean_change", "remove_turned_off")}
    out["add_n"] = np.zeros(num_f, np.int64)
    out["remove_n"] = np.zeros(num_f, np.int64)
    out["agrees"] = np.full(num_f, np.nan)
    if not has_rule.any():
        return out
    canon = np.sort(np.where(conjunctions < 0, np.iinfo(np.int64).max, conjunctions), axis=1)
    canon = np.where(canon == np.iinfo(np.int64).max, -1, canon)
    # Over budget: fewer builds per rule, then only the rules of the top-priority features.
    pri = np.zeros(num_f) if priority is None else np.asarray(priority, np.float64)
    _, first_of = np.unique(canon, axis=0, return_inverse=True)
    first_of = first_of.reshape(-1)
    per_dir = config.per_direction
    rules = len(np.unique(first_of[has_rule]))
    if 2 * per_dir * rules > config.max_builds:
        per_dir = max(config.min_per_direction, config.max_builds // (2 * rules))
        room = max(1, config.max_builds // (2 * per_dir))
        if rules > room:
            best = np.full(first_of.max() + 1, -np.inf)
            np.maximum.at(best, first_of[has_rule], pri[has_rule])
            kept = np.argsort(-best, kind="stable")[:room]
            has_rule &= np.isin(first_of, kept)
    uniq, feature_conj = np.unique(canon[has_rule], axis=0, return_inverse=True)
    feature_conj = feature_conj.reshape(-1)
    rng = np.random.default_rng(config.seed)
    src, conj_id, add = _pick_rows(np.asarray(cond, bool), uniq, per_dir, rng)
    edit, concat, pooled_of = _edits_of(builds)
    edited_parts, ok_parts, order = [], [], []
    for direction in (True, False):
        sel = np.flatnonzero(add == direction)
        if not len(sel):
            continue
        e, ok = edit(builds.subset(src[sel]), uniq[conj_id[sel]], conditions,
                     add=direction, weapon_pool=weapon_vocab.game_ids, seed=config.seed)
        edited_parts.append(e)
        ok_parts.append(ok & _known(e, vocab, weapon_vocab))
        order.append(sel)
    sel = np.concatenate(order)
    ok = np.concatenate(ok_parts)
    edited = concat(edited_parts).subset(np.flatnonzero(ok))
    src, conj_id, add = src[sel][ok], conj_id[sel][ok], add[sel][ok]
    if not len(src):
        return out
    x_edit = pooled_of(primary, edited, vocab, weapon_vocab, config.batch_size)
    # Every (edited build, feature with that build's conjunction) pair.
    features = np.flatnonzero(has_rule)
    by_conj = np.argsort(feature_conj, kind="stable")
    start = np.searchsorted(feature_conj[by_conj], np.arange(len(uniq)))
    count = np.bincount(feature_conj, minlength=len(uniq))
    reps = count[conj_id]
    pair_edit = np.repeat(np.arange(len(src)), reps)
    offset = np.arange(len(pair_edit)) - np.repeat(np.cumsum(reps) - reps, reps)
    pair_feature = features[by_conj[np.repeat(start[conj_id], reps) + offset]]
    after = pair_activations(sae, x_edit, pair_edit, pair_feature)
    before = pair_activations(sae, np.asarray(pooled, np.float32), src[pair_edit],
                              pair_feature)
    change = after - before
    if thresholds is None:
        was_on, now_on = before > ACTIVE_THRESHOLD, after > ACTIVE_THRESHOLD
    else:  # a feature explained at a higher activity level is "on" at that level
        level = np.asarray(thresholds, np.float32)[pair_feature]
        was_on = (before >= level) & (before > ACTIVE_THRESHOLD)
        now_on = (after >= level) & (after > ACTIVE_THRESHOLD)
    pair_add = add[pair_edit]
    for direction, name in ((True, "add"), (False, "remove")):
        m = pair_add == direction
        n = np.bincount(pair_feature[m], minlength=num_f)
        out[f"{name}_n"] = n
        out[f"{name}_mean_change"] = np.bincount(pair_feature[m], change[m], num_f) / \
            np.maximum(n, 1)
        if direction:
            base = m & ~was_on
            flips = np.bincount(pair_feature[base], now_on[base], num_f)
            out["add_turned_on"] = flips / np.maximum(np.bincount(pair_feature[base],
                                                                  minlength=num_f), 1)
        else:
            base = m & was_on
            flips = np.bincount(pair_feature[base], ~now_on[base], num_f)
            out["remove_turned_off"] = flips / np.maximum(np.bincount(pair_feature[base],
                                                                      minlength=num_f), 1)
    add_ok = np.where(out["add_n"] > 0, out["add_mean_change"] > 0, True)
    rem_ok = np.where(out["remove_n"] > 0, out["remove_mean_change"] < 0, True)
    measured = (out["add_n"] > 0) | (out["remove_n"] > 0)
    out["agrees"] = np.where(measured, (add_ok & rem_ok).astype(float), np.nan)
    return out


@dataclass(frozen=True)
class RungEdits:
    """The pooled vectors of a build sample edited through every kept rung of every
    ability (:func:`rung_edits`): they do not depend on the SAE, so one set serves every
    SAE read on the same primary. ``tags``: ``(ability, ap, builds)`` per rung, in the
    order of the rows of ``pooled``."""

    pooled: np.ndarray
    tags: tuple[tuple[str, int, int], ...]


def rung_edits(primary, vocab, weapon_vocab, builds: BuildSet, *, abilities=None,
               min_legal: float = 0.5, batch_size: int = 512) -> RungEdits:
    """Every build of the sample set to each rung of each ability (default: all; standard
    ones through 0, 3, 6, 12, ... 57, main-only through 0 and 10), other abilities changed
    only where slots must be freed (:func:`primary.build_edits.set_ability_rung`), and the
    pooled vectors of those that stay legal. A rung is kept while at least ``min_legal``
    of the sample can legally hold it ("as far as legal")."""
    abilities = list(STANDARD_ABILITIES + MAIN_ONLY_ABILITIES) if abilities is None else \
        list(abilities)
    parts, tags = [], []
    for a in abilities:
        values = (0, MAIN_AP) if a in MAIN_ONLY_ABILITIES else (0,) + AP_THRESHOLDS
        for v in values:
            e, ok = set_ability_rung(builds, a, v)
            ok &= _known(e, vocab, weapon_vocab)
            if ok.mean() < min_legal:
                break
            parts.append(e.subset(np.flatnonzero(ok)))
            tags.append((a, int(v), int(ok.sum())))
    if not parts:
        return RungEdits(np.zeros((0, primary.config.hidden_dim), np.float32), ())
    pooled = pooled_of_builds(primary, BuildSet.concat(parts), vocab, weapon_vocab, batch_size)
    return RungEdits(pooled, tuple(tags))


def curves_of(sae, edits: RungEdits, features) -> dict:
    """``{feature: {ability: {"ap": [...], "mean": [...], "n": [...]}}}``: each chosen
    feature's mean activation at each rung of ``edits`` (``n``: builds averaged)."""
    features = np.asarray(features, np.int64)
    curves: dict = {int(f): {} for f in features}
    if not edits.tags:
        return curves
    h = feature_activations(sae, edits.pooled, features)  # (m, len(features))
    start = 0
    for a, v, n in edits.tags:
        mean = h[start:start + n].mean(0)
        start += n
        for i, f in enumerate(features):
            c = curves[int(f)].setdefault(a, {"ap": [], "mean": [], "n": []})
            c["ap"].append(int(v))
            c["mean"].append(float(mean[i]))
            c["n"].append(n)
    return curves


def rung_curves(primary, vocab, weapon_vocab, sae, builds: BuildSet, features, *,
                abilities=None, min_legal: float = 0.5, batch_size: int = 512) -> dict:
    """Mean activation of each chosen feature as one ability steps through its rungs:
    :func:`curves_of` the :func:`rung_edits` of ``builds``."""
    edits = rung_edits(primary, vocab, weapon_vocab, builds, abilities=abilities,
                       min_legal=min_legal, batch_size=batch_size)
    return curves_of(sae, edits, features)


__all__ = ["CausalConfig", "RungEdits", "causal_check", "curves_of", "feature_activations",
           "pair_activations", "pooled_of_builds", "rung_curves", "rung_edits"]
