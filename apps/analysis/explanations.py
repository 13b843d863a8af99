"""Explanations of every feature of a run: computed, scored, causally checked.

For the analysis builds of a run (``apps.analysis.pipeline``), topped up with fresh builds from
the same synthetic world where the builds come from one (:data:`MIN_EXPLAIN_BUILDS`; real
data cannot be topped up), and for the partial builds drawn from them as primary training
draws the SAE's inputs (:class:`PartialRows`): the condition matrix of each kind of input
(:mod:`primary.conditions`), which features are active (``sae_jax.activity``), a seeded
fit / held-out split, then, each feature on the inputs it fires on
(:func:`explained_on_partial`; the other kind's rule kept beside it)

- per feature a rule, its held-out precision / recall / F1 (and whether the rule is broader
  than the feature) and the top lifts (:mod:`sae_jax.rule_search`), read as a sentence
  that names the inputs;
- the causal check of the rule's first conjunction on held-out inputs of that kind
  (:mod:`bridge.causal`);
- which weapon classes and weapons it fires on, against its base rate;
- for a feature explained on partial builds, its strongest distinct partial builds;
- for the features the report shows, AP-rung response curves per ability.

Written to ``workdir/explanations.json`` (schema version 1, below) and put in the report
document. Nothing here reads the planted concepts except :func:`ground_truth_check`, which
compares the finished explanations (on full builds) with them.

Schema: ``{"version", "num_builds", "fresh_builds", "fit_rows", "heldout_rows", "search_rows",
"num_conditions", "partial_builds": {"rows", "fit_rows", "heldout_rows", "num_conditions",
"empty_inputs"} (null: full builds only), "summary": {"median_f1_window",
"window_features", "explained", "explained_f1", "explained_share", "nondead",
"explained_activity_share", "by_distribution", "broader", "restored", "too_rare",
"causal_agreement", "causal_checked", "ground_truth", ...}, "features": {"<id>": {"rule",
"rule_text", "sentence", "distribution", "frequency_full", "frequency_partial",
"by_distribution", "precision", "recall", "f1", "fit_f1", "broader", "restored",
"frequency", "rule_frequency", "lifts", "causal", "classes", "weapons", "top_partial"
(features explained on partial builds), "rung_curves" (shown features only)}}}``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bridge.causal import (
    CausalConfig,
    RungEdits,
    causal_check,
    curves_of,
    pooled_of_builds,
    rung_edits,
)
from bridge.harvest import pooled_of_partial_builds
from primary.builds import BuildSet
from primary.conditions import (
    CATALOGUE,
    PARTIAL_CATALOGUE,
    PARTIAL_KINDS,
    condition_matrix,
    families,
    occurring,
)
from primary.partial_builds import PartialBuilds, partial_builds
from primary.planted_concepts import CONCEPTS
from primary.synthetic import SYNTHETIC_WEAPON_IDS, generate_builds
from primary.vocab import AP_THRESHOLDS, MAIN_ONLY_ABILITIES
from primary.weapons import WEAPON_CLASSES, weapon_class_index, weapon_name
from runkit.jsonio import read_json, write_json
from runkit.progress import show_progress
from sae_jax.activity import ACTIVE_THRESHOLD, is_active, window_mask
from sae_jax.concept_recovery import RECOVERED_F1
from sae_jax.model import encode
from sae_jax.pair_recovery import pair_only
from sae_jax.rule_search import (
    ActiveMatrix,
    ExplainConfig,
    Explanations,
    explain,
    percent,
    rule_text,
    sentence,
    split_rows,
)

VERSION = 1
EXPLAINED_F1 = 0.5  # a feature counts as explained when its rule reaches this held-out F1
CURVE_BUILDS = 128  # sample of held-out builds for the rung curves
MIN_BUILDS = 4  # fewer cannot be split into fit and held-out rows worth scoring
TOP_CLASSES = 5
TOP_WEAPONS = 5
# Distinct partial builds listed per feature explained on them, strongest first.
TOP_PARTIAL_EXAMPLES = 5
MIN_WEAPON_SUPPORT = 5
ACT_BATCH = 1024  # a multiple of 8: packed batches concatenate row for row
# Activity levels besides "active": these fractions of each feature's largest activation.
# A feature that fires weakly on many builds and strongly on a few is explained at the
# level whose rule fits best (sae_jax.rule_search).
LEVEL_FRACTIONS = (0.15, 0.3, 0.5)
# F1 a condition on what a build lacks ("no Quick Super Jump") must add to enter a rule:
# nearly every build lacks most abilities, so without a price rules fill up with
# absences that change nothing. A partial build's own conditions (a token count, an open
# main) hold on most partial builds as well and pay the same price.
ABSENT_COST = 0.02
# A feature is explained on partial builds when it fires on full builds less than this
# share of its rate on partial builds; otherwise on full builds (where concepts are defined).
FULL_SHARE = 0.5
# Partial builds drawn per explanation build (and empty inputs in proportion).
PARTIAL_INSTANCES = 2
# Partial builds are drawn from at most this many explanation builds (two each, plus empty
# inputs): they bound the rows, and with them the memory of a wide SAE's activity on them.
PARTIAL_MAX_BUILDS = 20_000
# The rule search on partial builds reads up to this many fit rows (the full builds' search
# samples fewer): most features explained there fire on well under 1% of partial builds.
PARTIAL_MAX_FIT_ROWS = 20_000
# A non-dead feature active on fewer held-out rows of its distribution than this is too
# rare for its held-out F1 to say much (the summary counts these).
MIN_HELDOUT_ACTIVE = 10
# Synthetic builds are cheap and rules of features that fire on 1-5% of builds need
# hundreds of positives: explanations of a synthetic run use at least this many builds
# (the analyzed ones plus fresh ones from the same world), at most FRESH_FACTOR times the
# analyzed ones (a small analysis stays small).
MIN_EXPLAIN_BUILDS = 20_000
FRESH_FACTOR = 10
# Fresh builds are drawn with this seed: a stream apart from the runs' own seeds (0, 1, ...).
FRESH_SEED = 2_147_483_647


def condition_costs(conditions) -> np.ndarray:
    """``(K,)``: the fit F1 each condition must add to enter a rule (:data:`ABSENT_COST` for
    a condition on what a build lacks or one of a partial build's own, 0 otherwise)."""
    return np.array([ABSENT_COST if c.negated or c.kind in PARTIAL_KINDS else 0.0
                     for c in conditions])


@partial(jax.jit, static_argnames=("spec",))
def _max_jit(params, x, valid, *, spec):
    h = encode(params, x, spec)[1]
    return jnp.max(jnp.where(valid[:, None], h, 0.0), axis=0)


@partial(jax.jit, static_argnames=("spec",))
def _levels_jit(params, x, thresholds, *, spec):
    """``(L, B, F)`` bool: level 0 is "active"; level j > 0 is ``h >= thresholds[j]``."""
    h = encode(params, x, spec)[1]
    return jnp.concatenate([is_active(h)[None], h[None] >= thresholds[1:, None, :]], axis=0)


def _padded_batches(pooled: np.ndarray, size: int):
    n = len(pooled)
    for s in range(0, n, size):
        part = pooled[s:s + size]
        m = len(part)
        valid = np.arange(size) < m
        if m < size:
            part = np.concatenate([part, np.zeros((size - m, part.shape[1]), part.dtype)])
        yield jnp.asarray(part), jnp.asarray(valid), m


def activity_levels(sae, pooled: np.ndarray, *, fractions=LEVEL_FRACTIONS,
                    batch_size: int = ACT_BATCH) -> tuple[list[ActiveMatrix], np.ndarray]:
    """Which features are active on each pooled vector, at several levels, packed.

    Level 0: active (``sae_jax.activity``); level j: activation at least ``fractions[j-1]``
    of the feature's largest activation on these inputs. Returns ``(levels,
    thresholds (L, F))`` (level 0's threshold is the active threshold).
    """
    params, spec = sae.params(), sae.config.encoder  # the architecture's own encoder
    n = len(pooled)
    size = max(8, min(batch_size, -(-max(n, 1) // 8) * 8))
    top = np.zeros(sae.hidden_dim, np.float32)
    for x, valid, _ in _padded_batches(pooled, size):
        top = np.maximum(top, np.asarray(_max_jit(params, x, valid, spec=spec)))
    fr = np.asarray(fractions, np.float32)
    thresholds = np.concatenate([np.full((1, len(top)), ACTIVE_THRESHOLD, np.float32),
                                 np.maximum(fr[:, None] * top[None], ACTIVE_THRESHOLD)])
    parts: list[list[np.ndarray]] = [[] for _ in thresholds]
    th = jnp.asarray(thresholds)
    for x, _, m in show_progress(_padded_batches(pooled, size), desc="feature activity",
                                 total=-(-n // size), unit="batch", leave=False,
                                 disable=n <= size):
        planes = np.asarray(_levels_jit(params, x, th, spec=spec))[:, :m]
        for j in range(len(thresholds)):
            parts[j].append(np.packbits(planes[j], axis=0))
    return [ActiveMatrix(np.concatenate(p), n) for p in parts], thresholds


def _breakdown(active: ActiveMatrix, groups: np.ndarray, num_groups: int, chunk: int):
    """``(F, G)`` active counts per group, ``(G,)`` group sizes, ``(F,)`` active counts."""
    onehot = np.zeros((active.n, num_groups), np.float32)
    onehot[np.arange(active.n), groups] = 1.0
    counts = np.zeros((active.num_features, num_groups))
    total = np.zeros(active.num_features)
    for f0 in range(0, active.num_features, chunk):
        block = active.columns(f0, min(active.num_features, f0 + chunk)).astype(np.float32)
        counts[f0:f0 + chunk] = block.T @ onehot
        total[f0:f0 + chunk] = block.sum(0)
    return counts, onehot.sum(0), total


def _rows_of(rates, base, counts, support, names, top: int, min_support: int, key: str,
             extra=None):
    """The groups a feature fires on most above its base rate, as JSON rows."""
    lift = np.where(base > 0, rates / max(base, 1e-12), 0.0)
    ok = (counts > 0) & (support >= min_support)
    order = [i for i in np.lexsort((-counts, -lift)) if ok[i]][:top]
    rows = []
    for i in order:
        row = {key: names[i], "rate": float(rates[i]), "base": float(base),
               "lift": float(lift[i]), "support": int(support[i]), "active": int(counts[i])}
        if extra is not None:
            row.update(extra[i])
        rows.append(row)
    return rows


@dataclass(frozen=True)
class PartialRows:
    """The partial builds the explanations read beside the full ones: drawn from the
    explanation builds as primary training draws its examples (the SAE's own inputs,
    :mod:`primary.partial_builds`), their pooled vectors, the conditions they meet (those
    of :data:`primary.conditions.PARTIAL_CATALOGUE` that occur) and the fit / held-out
    rows (each partial build on the side of the build it was drawn from)."""

    builds: PartialBuilds
    pooled: np.ndarray
    conditions: list
    cond: np.ndarray
    fit: np.ndarray
    held: np.ndarray


def partial_rows(primary, vocab, weapon_vocab, builds: BuildSet, fit: np.ndarray, *,
                 seed: int, batch_size: int) -> PartialRows:
    """:class:`PartialRows` drawn from ``builds`` (whose fit rows are ``fit``), from a
    seeded sample of :data:`PARTIAL_MAX_BUILDS` of them where there are more."""
    on_fit = np.zeros(len(builds), bool)
    on_fit[fit] = True
    source = np.arange(len(builds))
    if len(builds) > PARTIAL_MAX_BUILDS:
        source = np.sort(np.random.default_rng([int(seed), 0x9A]).choice(
            len(builds), PARTIAL_MAX_BUILDS, replace=False))
        builds = builds.subset(source)
    part = partial_builds(builds, vocab, weapon_vocab, instances=PARTIAL_INSTANCES, seed=seed)
    # Rows name the explanation build they come from.
    part = PartialBuilds(part.weapons, part.tokens, source[part.build_index])
    pooled = pooled_of_partial_builds(primary, part, vocab, weapon_vocab,
                                      batch_size=batch_size)
    cond_all = condition_matrix(part, PARTIAL_CATALOGUE)
    keep = occurring(cond_all)
    rows_fit = on_fit[part.build_index]
    return PartialRows(part, pooled, [PARTIAL_CATALOGUE[k] for k in keep], cond_all[:, keep],
                       np.flatnonzero(rows_fit), np.flatnonzero(~rows_fit))


@dataclass(frozen=True)
class ExplanationBuilds:
    """What the explanations of every SAE on one primary and one set of analyzed builds
    share (a sweep's members): the builds topped up with fresh ones, their pooled
    vectors, the conditions they meet, the fit / held-out split, the rung edits of the
    curve sample and the partial builds drawn from them (None: full builds only). Made by
    :func:`explanation_builds`."""

    builds: BuildSet
    pooled: np.ndarray
    analyzed: int  # the first rows are the analyzed builds, the rest fresh ones
    conditions: list
    cond: np.ndarray
    fit: np.ndarray
    held: np.ndarray
    rungs: RungEdits | None
    partial: PartialRows | None = None

    @property
    def fresh(self) -> int:
        return len(self.builds) - self.analyzed


def _curve_edits(primary, vocab, weapon_vocab, builds, held: np.ndarray, *, seed: int,
                 batch_size: int) -> RungEdits:
    """The rung edits of the curve sample: :data:`CURVE_BUILDS` held-out builds, seeded."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(held, min(CURVE_BUILDS, len(held)), replace=False))
    return rung_edits(primary, vocab, weapon_vocab, builds.subset(sample),
                      batch_size=batch_size)


def explanation_builds(primary, vocab, weapon_vocab, builds, pooled: np.ndarray, *,
                       concepts=CONCEPTS, min_builds: int | None = None,
                       fit_fraction: float = 0.5, seed: int = 0, curves: bool = True,
                       partial: bool = True,
                       batch_size: int = CausalConfig().batch_size) -> ExplanationBuilds:
    """The SAE-independent part of :func:`compute_explanations` for ``builds`` (with
    pooled vectors ``pooled``); ``curves``: also edit the curve sample through every rung;
    ``partial``: also draw the partial builds (:func:`partial_rows`).

    ``min_builds`` (default :data:`MIN_EXPLAIN_BUILDS`, at most :data:`FRESH_FACTOR` times
    ``len(builds)``): when ``builds`` come from the synthetic world with ``concepts``
    planted (their concept labels name that set), fresh builds from the same world are
    added up to this many (0: none); the weapons are those the model knows.
    """
    if len(pooled) != len(builds):
        raise ValueError(f"{len(pooled)} pooled vectors for {len(builds)} builds")
    analyzed = len(builds)
    if min_builds is None:
        min_builds = min(MIN_EXPLAIN_BUILDS, FRESH_FACTOR * len(builds))
    fresh = fresh_builds(builds, concepts, weapon_vocab, min_builds - len(builds))
    pooled = np.asarray(pooled, np.float32)
    if len(fresh):
        builds = BuildSet.concat([builds, fresh])
        pooled = np.concatenate([pooled, pooled_of_builds(primary, fresh, vocab, weapon_vocab,
                                                          batch_size)])
    n = len(builds)
    if n < MIN_BUILDS:  # too few to split into fit and held-out rows
        empty = np.zeros(0, np.int64)
        return ExplanationBuilds(builds, pooled, analyzed, [], np.zeros((n, 0), bool), empty,
                                 empty, None)
    cond_all = condition_matrix(builds, CATALOGUE)
    keep = occurring(cond_all)  # the catalogue is fixed; only conditions that occur matter
    fit, held = split_rows(n, fit_fraction=fit_fraction, seed=seed)
    rungs = _curve_edits(primary, vocab, weapon_vocab, builds, held, seed=seed,
                         batch_size=batch_size) if curves else None
    part = partial_rows(primary, vocab, weapon_vocab, builds, fit, seed=seed,
                        batch_size=batch_size) if partial else None
    return ExplanationBuilds(builds, pooled, analyzed, [CATALOGUE[k] for k in keep],
                             cond_all[:, keep], fit, held, rungs, part)


@dataclass(frozen=True)
class _Reading:
    """One distribution's explanations: the rule search's results (for the ``searched``
    features; the others have none), the activity levels' thresholds ``(L, F)``, the
    level-0 activity and per feature its active count on all rows and on held-out rows."""

    name: str
    rows: object  # the ExplanationBuilds (full builds) or PartialRows
    ex: Explanations
    searched: np.ndarray
    thresholds: np.ndarray
    active: ActiveMatrix
    total: np.ndarray
    held_active: np.ndarray

    @property
    def frequency(self) -> np.ndarray:
        return self.total / max(self.active.n, 1)

    @property
    def level_threshold(self) -> np.ndarray:
        return self.thresholds[self.ex.level, np.arange(self.active.num_features)]


def _activity(rows, sae, chunk: int):
    """``(levels, thresholds, total (F,), held_active (F,))`` of the SAE on ``rows``."""
    levels, thresholds = activity_levels(sae, rows.pooled)
    active = levels[0]
    total, held_active = np.zeros(active.num_features), np.zeros(active.num_features)
    for f0 in range(0, active.num_features, chunk):
        f1 = min(active.num_features, f0 + chunk)
        block = active.columns(f0, f1)
        total[f0:f1], held_active[f0:f1] = block.sum(0), block[rows.held].sum(0)
    return levels, thresholds, total, held_active


@partial(jax.jit, static_argnames=("spec", "k"))
def _top_rows_jit(params, x, valid, *, spec, k):
    """``(values (F, k), rows (F, k))``: each feature's ``k`` largest activations in the batch."""
    h = jnp.where(valid[:, None], encode(params, x, spec)[1], -jnp.inf)
    return jax.lax.top_k(h.T, k)


def top_partial_examples(sae, rows: PartialRows, features: np.ndarray,
                         k: int = TOP_PARTIAL_EXAMPLES) -> dict[int, list[dict]]:
    """``{feature: [{"activation", "weapon", "game_id", "tokens"}, ...]}``: each of
    ``features``' ``k`` strongest distinct partial builds (an input drawn twice, such as the
    empty input of one weapon, is listed once), active ones only."""
    features = np.asarray(features, np.int64)
    if not len(features):
        return {}
    part = rows.builds
    key = np.concatenate([np.asarray(part.weapons, np.int64)[:, None],
                          np.packbits(part.tokens, axis=1).astype(np.int64)], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    pooled = rows.pooled[first]
    params, spec = sae.params(), sae.config.encoder
    k = min(k, len(first))
    size = max(8, min(ACT_BATCH, -(-len(first) // 8) * 8))
    best_v = np.full((sae.hidden_dim, 0), -np.inf, np.float32)
    best_r = np.zeros((sae.hidden_dim, 0), np.int64)
    for start, (x, valid, _) in zip(range(0, len(first), size), _padded_batches(pooled, size)):
        v, r = _top_rows_jit(params, x, valid, spec=spec, k=min(k, size))
        best_v = np.concatenate([best_v, np.asarray(v)], axis=1)
        best_r = np.concatenate([best_r, np.asarray(r) + start], axis=1)
        keep = np.argsort(-best_v, axis=1, kind="stable")[:, :k]
        best_v = np.take_along_axis(best_v, keep, 1)
        best_r = np.take_along_axis(best_r, keep, 1)
    out = {}
    for f in features:
        out[int(f)] = [{"activation": float(v), "weapon": weapon_name(int(part.weapons[row])),
                        "game_id": int(part.weapons[row]), "tokens": part.token_names(row)}
                       for v, row in zip(best_v[f], first[best_r[f]]) if v > ACTIVE_THRESHOLD]
    return out


def _widened(ex: Explanations, features: np.ndarray, num_f: int) -> Explanations:
    """``ex`` of ``features`` spread over all ``num_f`` features (the others: no rule)."""
    out = {}
    for name, value in vars(ex).items():
        if not isinstance(value, np.ndarray):
            out[name] = value
            continue
        empty = -1 if name in ("conjunctions", "lift_condition") else 0
        full = np.full((num_f,) + value.shape[1:], empty, value.dtype)
        full[features] = value
        out[name] = full
    return Explanations(**out)


def _read(name: str, rows, sae, activity, config: ExplainConfig, progress: bool,
          features: np.ndarray | None = None) -> _Reading:
    """Rules on one distribution's rows (``rows``: anything with ``pooled``, ``cond``,
    ``conditions``, ``fit`` and ``held``; ``activity``: its :func:`_activity`) of
    ``features`` (None: all)."""
    levels, thresholds, total, held_active = activity
    num_f = levels[0].num_features
    searched = np.ones(num_f, bool)
    if features is not None:
        searched = np.isin(np.arange(num_f), features)
        levels = [ActiveMatrix(lv.packed[:, features], lv.n) for lv in levels]
    ex = explain(rows.cond, levels, fit_rows=rows.fit, heldout_rows=rows.held,
                 families=families(rows.conditions), costs=condition_costs(rows.conditions),
                 config=config, progress=progress)
    if features is not None:
        ex = _widened(ex, np.asarray(features), num_f)
    return _Reading(name, rows, ex, searched, thresholds, levels[0] if features is None
                    else activity[0][0], total, held_active)


def explained_on_partial(frequency_full, frequency_partial) -> np.ndarray:
    """``(F,)`` bool: the features explained on partial builds, those that fire on full
    builds less than :data:`FULL_SHARE` times as often as on partial builds (the others,
    and features silent on both, are explained on full builds)."""
    return np.asarray(frequency_full) < FULL_SHARE * np.asarray(frequency_partial)


def broader_than_feature(precision, recall, ratio: float = ExplainConfig().broad_ratio):
    """Whether a rule holds on many inputs where its feature is silent: precision below
    ``ratio`` times recall (held-out)."""
    return np.asarray(precision) < ratio * np.asarray(recall)


def _reading_entry(r: _Reading, f: int, broad_ratio: float) -> dict:
    """Feature ``f``'s explanation on one distribution, as ``explanations.json`` holds it."""
    ex, conditions = r.ex, r.rows.conditions
    names, texts = [c.name for c in conditions], [c.text for c in conditions]
    rule = ex.rule(f)
    level = int(ex.level[f])
    threshold = float(r.level_threshold[f])
    on = f"on {r.name} builds"
    if rule:
        text = sentence(rule, texts, ex.f1[f], ex.frequency[f],
                        level=threshold if level else None, on=on)
    elif not r.searched[f]:
        text = (f"no rule {on}: too rare to explain, active on {int(r.held_active[f])} "
                f"of {len(r.rows.held):,} held-out rows (fires {percent(r.frequency[f])})")
    else:
        text = f"no rule {on}: never active on the fit split (fires {percent(r.frequency[f])})"
    return {
        "rule": [[names[c] for c in conj] for conj in rule],
        "rule_text": rule_text(rule, texts),
        "sentence": text,
        "level": {"index": level, "threshold": threshold,
                  "fraction_of_max": 0.0 if level == 0 else float(LEVEL_FRACTIONS[level - 1])},
        "f1_active": float(ex.f1_level0[f]),
        "precision": float(ex.precision[f]), "recall": float(ex.recall[f]),
        "f1": float(ex.f1[f]), "fit_f1": float(ex.fit_f1[f]),
        "broader": bool(rule) and bool(broader_than_feature(ex.precision[f], ex.recall[f],
                                                            broad_ratio)),
        "restored": bool(ex.restored[f]),
        "frequency": float(ex.frequency[f]), "frequency_all": float(r.frequency[f]),
        "rule_frequency": float(ex.rule_frequency[f]),
        "lifts": [{"condition": names[c], "text": texts[c], "lift": float(lv),
                   "precision": float(lp), "support": int(ls)}
                  for c, lv, lp, ls in zip(ex.lift_condition[f], ex.lift[f],
                                           ex.lift_precision[f], ex.lift_support[f])
                  if c >= 0],
    }


SHORT_KEYS = ("rule", "rule_text", "sentence", "precision", "recall", "f1", "broader",
              "frequency", "frequency_all", "level")


def _causal_of(primary, vocab, weapon_vocab, sae, r: _Reading, chosen: np.ndarray,
               config: CausalConfig) -> dict:
    """The causal check of the first conjunction of the features explained on ``r``'s
    distribution (``chosen (F,)`` bool), on its held-out rows."""
    rows, held = r.rows, r.rows.held
    first = np.where(chosen[:, None], r.ex.conjunctions[:, 0], -1)
    return causal_check(primary, vocab, weapon_vocab, sae, rows.builds.subset(held),
                        rows.pooled[held], rows.cond[held], rows.conditions, first,
                        config=config, thresholds=r.level_threshold, priority=r.ex.f1)


def _causal_entry(causal: dict, f: int) -> dict:
    return {
        "add": {"n": int(causal["add_n"][f]), "mean_change": float(causal["add_mean_change"][f]),
                "turned_on": float(causal["add_turned_on"][f])},
        "remove": {"n": int(causal["remove_n"][f]),
                   "mean_change": float(causal["remove_mean_change"][f]),
                   "turned_off": float(causal["remove_turned_off"][f])},
        "agrees": None if np.isnan(causal["agrees"][f]) else bool(causal["agrees"][f]),
    }


def _breakdowns(r: _Reading, chunk: int):
    """Per feature ``(F, G)`` active counts and ``(G,)`` sizes of each weapon class and of
    each weapon, on ``r``'s rows: ``(cls_counts, cls_support, w_counts, w_support,
    game_ids)``."""
    weapons = r.rows.builds.weapons
    cls_idx = weapon_class_index(weapons)
    cls_counts, cls_support, _ = _breakdown(r.active, np.where(cls_idx < 0, len(
        WEAPON_CLASSES), cls_idx), len(WEAPON_CLASSES) + 1, chunk)
    game_ids, w_idx = np.unique(weapons, return_inverse=True)
    w_counts, w_support, _ = _breakdown(r.active, w_idx.reshape(-1), len(game_ids), chunk)
    return cls_counts, cls_support, w_counts, w_support, game_ids


def compute_explanations(primary, vocab, weapon_vocab, sae, builds, pooled: np.ndarray, *,
                         curve_features=(), explain_config: ExplainConfig | None = None,
                         causal_config: CausalConfig | None = None,
                         concepts_result: dict | None = None, concepts=CONCEPTS,
                         fit_fraction: float = 0.5, seed: int = 0,
                         min_builds: int | None = None, progress: bool = True,
                         shared: ExplanationBuilds | None = None,
                         partial: bool = True) -> dict:
    """The ``explanations.json`` document for ``builds`` (with pooled vectors ``pooled``).

    Every feature is explained on full builds and, with ``partial``, on partial builds
    (:class:`PartialRows`); its entry is the explanation on the distribution where it fires
    (:func:`explained_on_partial`), with the other one's in ``by_distribution``.
    ``min_builds``: fresh synthetic builds to top up to (see :func:`explanation_builds`).
    ``curve_features``: features that get rung curves (the report's shown ones).
    ``concepts_result``: the run's ``concepts.json`` dict, for the ground-truth summary
    (synthetic runs; None otherwise). ``shared``: :func:`explanation_builds` of these same
    builds, made once for several SAEs on the same primary (None: made here; given, its
    fresh builds, split and partial builds stand, and ``min_builds``, ``fit_fraction`` and
    ``partial`` are not used).
    """
    t0 = time.perf_counter()
    explain_config = explain_config or ExplainConfig()
    causal_config = causal_config or CausalConfig()
    if shared is None:
        shared = explanation_builds(primary, vocab, weapon_vocab, builds, pooled,
                                    concepts=concepts, min_builds=min_builds,
                                    fit_fraction=fit_fraction, seed=seed,
                                    curves=bool(len(curve_features)), partial=partial,
                                    batch_size=causal_config.batch_size)
    elif shared.analyzed != len(builds) or len(pooled) != len(builds):
        raise ValueError(f"the shared explanation builds start with {shared.analyzed} analyzed "
                         f"builds, not these {len(builds)} (with {len(pooled)} pooled vectors)")
    n = len(shared.builds)
    if n < MIN_BUILDS:  # too few to split into fit and held-out rows: say so, explain none
        return {"version": VERSION, "num_builds": int(n), "fit_rows": 0, "heldout_rows": 0,
                "search_rows": 0, "num_conditions": 0,
                "num_catalogue_conditions": len(CATALOGUE),
                "num_features": int(sae.hidden_dim),
                "note": f"{n} builds: explanations need at least {MIN_BUILDS}",
                "summary": {"median_f1_window": None, "window_features": 0, "explained": 0,
                            "explained_f1": EXPLAINED_F1, "explained_share": None,
                            "nondead": 0, "causal_agreement": None,
                            "causal_checked": 0, "ground_truth": None},
                "features": {}}
    chunk = explain_config.feature_chunk
    full = _read("full", shared, sae, _activity(shared, sae, chunk), explain_config, progress)
    readings = [full]
    num_f = full.active.num_features
    on_partial = np.zeros(num_f, bool)
    if shared.partial is not None:
        activity = _activity(shared.partial, sae, chunk)
        on_partial = explained_on_partial(full.frequency, activity[2] / len(shared.partial.pooled))
        # Only the features explained on partial builds are searched there, and of those
        # only the ones active often enough for a held-out score to mean something.
        searched = on_partial & (activity[3] >= MIN_HELDOUT_ACTIVE)
        partial_config = replace(explain_config, max_fit_rows=max(
            explain_config.max_fit_rows, PARTIAL_MAX_FIT_ROWS))
        readings.append(_read("partial", shared.partial, sae, activity, partial_config,
                              progress, features=np.flatnonzero(searched)))
    t_rules = time.perf_counter() - t0
    choice = np.where(on_partial, len(readings) - 1, 0)  # index into readings per feature
    causal = [_causal_of(primary, vocab, weapon_vocab, sae, r, choice == i, causal_config)
              for i, r in enumerate(readings)]
    t_causal = time.perf_counter() - t0 - t_rules

    breakdowns = [_breakdowns(r, explain_config.feature_chunk) for r in readings]
    top_partial = {} if shared.partial is None else top_partial_examples(
        sae, shared.partial, np.flatnonzero(on_partial))
    curve_features = sorted({int(f) for f in curve_features})
    curves = {}
    if curve_features:
        rungs = shared.rungs
        if rungs is None:  # shared builds made without curves: edit the sample here
            rungs = _curve_edits(primary, vocab, weapon_vocab, shared.builds, shared.held,
                                 seed=seed, batch_size=causal_config.batch_size)
        curves = curves_of(sae, rungs, curve_features)
    t_all = time.perf_counter() - t0

    cls_names = list(WEAPON_CLASSES) + ["unknown"]
    features = {}
    for f in range(num_f):
        r = readings[choice[f]]
        entries = {q.name: _reading_entry(q, f, explain_config.broad_ratio) for q in readings
                   if q.searched[f] or q is r}
        cls_counts, cls_support, w_counts, w_support, game_ids = breakdowns[choice[f]]
        base = r.frequency[f]
        entry = dict(entries[r.name], distribution=r.name,
                     frequency_full=float(full.frequency[f]),
                     frequency_partial=float(readings[-1].frequency[f])
                     if len(readings) > 1 else None)
        entry["by_distribution"] = {name: {k: e[k] for k in SHORT_KEYS}
                                    for name, e in entries.items()}
        entry["causal"] = _causal_entry(causal[choice[f]], f)
        entry["classes"] = _rows_of(cls_counts[f] / np.maximum(cls_support, 1), base,
                                    cls_counts[f], cls_support, cls_names, TOP_CLASSES, 1,
                                    "class")
        entry["weapons"] = _rows_of(w_counts[f] / np.maximum(w_support, 1), base, w_counts[f],
                                    w_support, [weapon_name(int(g)) for g in game_ids],
                                    TOP_WEAPONS, MIN_WEAPON_SUPPORT, "weapon",
                                    [{"game_id": int(g)} for g in game_ids])
        if f in top_partial:
            entry["top_partial"] = top_partial[f]
        if f in curves:
            entry["rung_curves"] = curves[f]
        features[str(f)] = entry

    summary = explanation_summary(readings, choice, causal)
    summary["seconds"] = {"rules": round(t_rules, 2), "causal": round(t_causal, 2),
                          "total": round(t_all, 2)}
    doc = {
        "version": VERSION, "num_builds": int(n), "fresh_builds": shared.fresh,
        "fit_rows": int(full.ex.fit_rows),
        "heldout_rows": int(full.ex.heldout_rows), "search_rows": int(full.ex.search_rows),
        "num_conditions": len(shared.conditions), "num_catalogue_conditions": len(CATALOGUE),
        "num_features": int(num_f),
        "partial_builds": None if shared.partial is None else {
            "rows": len(shared.partial.builds), "fit_rows": int(len(shared.partial.fit)),
            "heldout_rows": int(len(shared.partial.held)),
            "num_conditions": len(shared.partial.conditions),
            "empty_inputs": int((shared.partial.builds.token_counts == 0).sum())},
        "summary": summary,
        "features": features,
    }
    if concepts_result is not None:
        doc["summary"]["ground_truth"] = ground_truth_check(doc, concepts_result, concepts)
    return doc


def explanation_summary(readings: list[_Reading], choice: np.ndarray, causal: list[dict]) -> dict:
    """The summary figures of ``explanations.json`` (see the module docstring): each
    feature counted on the distribution it is explained on (``choice``: index into
    ``readings``), the full builds' own figures beside them."""
    cols = np.arange(len(choice))

    def pick(get):
        return np.stack([get(r) for r in readings])[choice, cols]

    f1, frequency = pick(lambda r: r.ex.f1), pick(lambda r: r.frequency)
    has_rule = pick(lambda r: (r.ex.conjunctions[:, 0] >= 0).any(1))
    explained = (f1 >= EXPLAINED_F1) & has_rule
    nondead = np.stack([r.total for r in readings]).sum(0) > 0
    rare = nondead & (pick(lambda r: r.held_active) < MIN_HELDOUT_ACTIVE)
    agrees = np.stack([c["agrees"] for c in causal])[choice, cols]
    checked = explained & ~np.isnan(agrees)
    window = window_mask(frequency)
    full, own = readings[0], readings[-1]
    full_window = window_mask(full.frequency)
    broader = pick(lambda r: broader_than_feature(r.ex.precision, r.ex.recall)) & has_rule
    by = {r.name: {"features": int((choice == i).sum()),
                   "explained": int((explained & (choice == i)).sum())}
          for i, r in enumerate(readings)}
    return {
        "median_f1_window": float(np.median(f1[window])) if window.any() else None,
        "median_f1_active_window": float(np.median(pick(lambda r: r.ex.f1_level0)[window]))
        if window.any() else None,
        "median_f1_window_full": float(np.median(full.ex.f1[full_window]))
        if full_window.any() else None,
        "level_counts": np.bincount(pick(lambda r: r.ex.level),
                                    minlength=len(LEVEL_FRACTIONS) + 1).tolist(),
        "window_features": int(window.sum()),
        "explained": int(explained.sum()), "explained_f1": EXPLAINED_F1,
        "nondead": int(nondead.sum()),
        "explained_share": float(explained.sum() / nondead.sum()) if nondead.any() else None,
        # Where most features are rare, the share of the activations they carry says more
        # about how much of the SAE's work is explained (the last inputs: the SAE's own).
        "explained_activity_share": float(own.total[explained].sum() / own.total.sum())
        if own.total.sum() > 0 else None,
        "too_rare": int(rare.sum()), "min_heldout_active": MIN_HELDOUT_ACTIVE,
        "explained_on_full": int(((full.ex.f1 >= EXPLAINED_F1)
                                  & (full.ex.conjunctions[:, 0] >= 0).any(1)).sum()),
        "by_distribution": by,
        "broader": int((broader & explained).sum()),
        "restored": int((pick(lambda r: r.ex.restored) & has_rule).sum()),
        "causal_agreement": float(agrees[checked].mean()) if checked.any() else None,
        "causal_checked": int(checked.sum()),
        "ground_truth": None,
    }


def fresh_builds(builds: BuildSet, concepts, weapon_vocab, count: int) -> BuildSet:
    """``count`` fresh builds from the synthetic world that made ``builds`` (none when
    ``count <= 0`` or when ``builds`` do not carry that world's concept labels: real data),
    drawn with :data:`FRESH_SEED` and limited to the weapons ``weapon_vocab`` knows."""
    names = tuple(c.name for c in concepts)
    if count <= 0 or builds.concepts is None or builds.concept_names != names:
        return BuildSet(np.zeros(0, np.int32), np.zeros((0, builds.ap.shape[1]), np.int16))
    vocab_ids = {int(g) for g in weapon_vocab.game_ids}
    known = [g for g in SYNTHETIC_WEAPON_IDS if g in vocab_ids]
    if not known:
        raise ValueError(f"the model's weapon vocabulary ({weapon_vocab.source}) holds none of "
                         "the synthetic world's weapons")
    return generate_builds(count, FRESH_SEED, weapons=known, concepts=concepts)


def _rung_index(ap: int) -> int:
    """Index in :data:`AP_THRESHOLDS` of the largest rung <= ``ap`` (-1 below the first)."""
    return int(np.searchsorted(AP_THRESHOLDS, ap, side="right")) - 1


def _rule_mismatches(rule: list[list[str]], concept) -> list[str]:
    """Why ``rule`` (conjunctions of condition names) does not name exactly ``concept``'s
    required abilities, each within one rung of its AP; empty when it does."""
    from primary.conditions import condition_by_name

    why = []
    named: dict[str, list[int | None]] = {}
    for conj in rule:
        for name in conj:
            c = condition_by_name(name, where="an explanation rule")
            if c.kind not in ("ability", "main_only"):
                why.append(f"names {c.text}")
                continue
            named.setdefault(c.ability, []).append(c.threshold)
    required = dict(concept.required)
    extra = sorted(set(named) - set(required))
    missing = sorted(set(required) - set(named))
    if extra:
        why.append(f"names {', '.join(extra)}, which the concept does not require")
    if missing:
        why.append(f"misses {', '.join(missing)}")
    for a, thresholds in named.items():
        if a not in required or a in MAIN_ONLY_ABILITIES:
            continue
        want = _rung_index(required[a])
        for t in thresholds:
            if abs(_rung_index(t) - want) > 1:
                why.append(f"{a} at >= {t}, the concept requires {required[a]}")
    return why


def _tally(items: list[dict]) -> dict:
    matched = sum(item["match"] for item in items)
    return {"share": matched / len(items) if items else None, "checked": len(items),
            "total": len(items), "matched": matched, "concepts": items,
            "misses": [item for item in items if not item["match"]]}


def ground_truth_check(doc: dict, concepts_result: dict, concepts=CONCEPTS) -> dict:
    """Do the explanations of recovered concepts' best features name exactly the concepts'
    required abilities, each within one rung of the required AP?

    A concept is checked when its ``concepts.json`` row has SAE F1 >= 0.8. Its best
    feature's rule on full builds (where a concept is defined, whichever distribution the
    feature is explained on; all conjunctions) must consist of ability and main-only conditions
    only, name every required ability and no other, each standard one at a rung whose
    index is within one of the largest rung <= the required AP. Returns ``{"share",
    "checked", "total" (= checked), "matched", "concepts": [{"concept", "feature", "rule",
    "match", "why"}] (every checked concept), "misses" (those that do not match),
    "pairs"}``. ``pairs`` is the same tally for the concepts only a pair of features
    recovers (:mod:`sae_jax.pair_recovery`): the two rules together must name the
    requirements (items carry ``features`` in place of ``feature``).
    """
    by_name = {c.name: c for c in concepts}

    def concept_of(row):
        concept = by_name.get(row["concept"])
        if concept is None:
            raise ValueError(f"concepts.json names concept {row['concept']!r}, which the "
                             "given concept set lacks")
        return concept

    def on_full(entry):  # a concept is defined on full builds: their explanation counts
        return (entry.get("by_distribution") or {}).get("full", entry) if entry else None

    singles, pairs = [], []
    for row in concepts_result.get("rows", []):
        if row.get("sae_f1", 0.0) >= RECOVERED_F1:
            entry = on_full(doc["features"].get(str(row["feature"])))
            why = _rule_mismatches(entry["rule"] if entry else [], concept_of(row))
            singles.append({"concept": row["concept"], "feature": int(row["feature"]),
                            "rule": entry["rule_text"] if entry else "no rule",
                            "match": not why, "why": "; ".join(why)})
        elif pair_only(row):
            entries = [on_full(doc["features"].get(str(f))) for f in row["pair_features"]]
            rule = [conj for e in entries if e for conj in e["rule"]]
            why = [f"feature {f} has no rule" for f, e in zip(row["pair_features"], entries)
                   if not e] + _rule_mismatches(rule, concept_of(row))
            pairs.append({"concept": row["concept"], "features": list(row["pair_features"]),
                          "rule": " AND ".join(f"({e['rule_text']})" if e else "(no rule)"
                                               for e in entries),
                          "match": not why, "why": "; ".join(why)})
    return {**_tally(singles), "pairs": _tally(pairs)}


def write_explanations(path: str | os.PathLike, doc: dict) -> None:
    write_json(path, doc)


def load_explanations(path: str | os.PathLike) -> dict | None:
    """The ``explanations.json`` dict, or None when the file does not exist."""
    if not os.path.exists(path):
        return None
    return read_json(path, what="explanations file")


__all__ = ["ExplanationBuilds", "activity_levels", "compute_explanations", "explanation_builds",
           "fresh_builds", "ground_truth_check", "load_explanations", "write_explanations"]
