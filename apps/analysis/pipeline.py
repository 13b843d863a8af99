"""Analyze a trained SAE run: feature statistics, concept recovery, the HTML feature browser.

``analyze(workdir)`` reads ``workdir/run.json`` (the primary model directory and
the data settings), rebuilds the run's evaluation builds (the test split, made
the way training made it), takes the pooled vector of every full build, and
writes ``workdir/concepts.json`` (when the builds carry planted concepts),
``workdir/absorption.json`` (absorption and splitting of the AP rungs,
:mod:`apps.analysis.rung_absorption`) and ``workdir/report/index.html``. A run
trained on activation files (``--activations``) is analyzed by
:mod:`apps.analysis.activation_analysis` (no AP rungs, so no absorption).

The command is :mod:`apps.analyze` (``python -m apps.analyze --workdir=DIR``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from apps.analysis.feature_summary import (
    BATCH_SIZE,
    StageTimer,
    feature_statistics,
    feature_table,
    sae_activations,
    training_metrics,
)
from apps.analysis.rung_absorption import rung_absorption
from apps.analysis.steered_views import add_steered_builds
from bridge.harvest import pooled_of_inputs
from bridge.steering import edit_feature_params
from primary.build_inputs import full_build_inputs
from primary.vocab import (
    ABILITIES,
    MASK,
    NULL,
    PAD,
    BuildError,
    ap_to_token_multihot,
)
from runkit.run_dir import RunDir, RunRecord
from sae_jax import feature_stats as analysis
from sae_jax.absorption import absorption_roles, write_absorption
from sae_jax.activity import dead_mask, dense_mask, live_mask
from sae_jax.concept_recovery import assigned_concept, concept_recovery, write_concepts
from sae_jax.feature_labels import labels_to_json, read_labels
from sae_jax.pair_recovery import (
    detector_features,
    pair_memberships,
    pairs_line,
    with_pairs,
)
from sae_jax.sparse_activations import collect

STEERED_EXAMPLES = 4  # of those, how many are steered (feature set to 0 and to its max)
TOP_PREDICTIONS = 5
INFLUENCE_TOKENS = 8


# ---------------------------------------------------------------- evaluation builds

def _run_settings(run: RunDir) -> tuple[RunRecord, object]:
    """The run's ``run.json`` and its settings (for an imported run, which has no
    ``train_config.json``, those ``run.json`` records)."""
    from sae_jax.config import SAETrainConfig

    record = run.read_run()
    if run.has_settings():  # with any accepted --override changes
        cfg = SAETrainConfig.from_dict(run.settings(), where=str(run.settings_path))
    else:  # an imported run: only run.json says how its data was made
        cfg = SAETrainConfig(data_source=record.data_source, data_path=run.data_path(record),
                             num_builds=record.num_builds, seed=record.seed)
    return record, cfg


def evaluation_builds(workdir, vocab, weapon_vocab, *, limit: int | None = None):
    """The run's held-out builds: the test split, made with the same source, seed and split
    seed as training (``apps.runs.setup``), at most ``limit`` (default the run's
    ``eval_builds``)."""
    from apps.runs.setup import run_concepts, run_splits, split_seed

    run = RunDir(workdir)
    record, cfg = _run_settings(run)
    # Training drew and split its builds with this seed.
    seed = split_seed(run.primary_dir(record), cfg)
    concepts = run_concepts(run.root) if cfg.data_source == "synthetic" else None  # as planted
    splits = run_splits(cfg, seed=seed, vocab=vocab, weapon_vocab=weapon_vocab,
                        concepts=concepts)
    builds = splits.test_builds(cfg.eval_builds if limit is None else int(limit))
    if len(builds) == 0:
        raise ValueError(f"the run in {run.root} has no test builds to analyze")
    return builds


def known_builds(builds, vocab, weapon_vocab):
    """The builds whose weapon and tokens the model's vocabularies hold (an imported model
    may know fewer weapons than the synthetic world draws); says how many were left out."""
    multihot = ap_to_token_multihot(builds.ap)
    ok = np.isin(builds.weapons, weapon_vocab.game_ids)
    ok &= ~multihot[:, vocab.ability_token_ids < 0].any(1)
    if ok.all():
        return builds
    if not ok.any():
        raise BuildError(f"none of the {len(builds)} evaluation builds fits the model's "
                         f"vocabularies ({vocab.source}, {weapon_vocab.source})")
    print(f"note: {int((~ok).sum())} of {len(builds)} evaluation builds use weapons or tokens "
          "the model does not know; analyzing the other ones")
    return builds.subset(np.flatnonzero(ok))


# ---------------------------------------------------------------- steering of top examples

@partial(jax.jit, static_argnames=("graphdef", "clip_max"))
def _steered_logits(graphdef, state, sae_params, pooled, features, values, *, clip_max):
    """``pooled (N, k, D)``, ``features (N,)``, ``values (N, S)`` -> ``(N, 1 + S, k, V)``:
    slot 0 the model's own logits, slot 1 + s the logits with feature set to ``values[:, s]``
    (reconstruction error kept, so only the edit differs)."""
    primary = nnx.merge(graphdef, state)

    def per_feature(x, f, vals):
        edited = jax.vmap(lambda v: edit_feature_params(sae_params, clip_max, x, f, v, True))(vals)
        return jnp.concatenate([primary.head(x)[None], primary.head(edited)], axis=0)

    return jax.vmap(per_feature)(pooled, features, values)


def _special_ids(vocab) -> np.ndarray:
    return np.array([vocab.token_to_id[t] for t in (PAD, NULL, MASK) if t in vocab.token_to_id])


def _top_token_lists(logits: np.ndarray, vocab, n: int) -> list[list[str]]:
    """Top ``n`` ability tokens per row of ``logits (..., V)`` (special tokens left out)."""
    z = np.array(logits, np.float64)
    z[..., _special_ids(vocab)] = -np.inf
    top = np.argsort(-z, axis=-1, kind="stable")[..., :n]
    return [[vocab.id_to_token[int(i)] for i in row] for row in top.reshape(-1, n)]


def _prediction_change(before: np.ndarray, after: np.ndarray, vocab) -> dict:
    """How the model's top predictions move between two logit rows ``(V,)``."""
    top_b = _top_token_lists(before, vocab, TOP_PREDICTIONS)[0]
    top_a = _top_token_lists(after, vocab, TOP_PREDICTIONS)[0]
    prob_delta = 1 / (1 + np.exp(-after)) - 1 / (1 + np.exp(-before))
    prob_delta[_special_ids(vocab)] = 0.0
    up = [(vocab.id_to_token[int(i)], float(prob_delta[i])) for i in np.argsort(-prob_delta)[:3]
          if prob_delta[i] > 0.005]
    down = [(vocab.id_to_token[int(i)], float(prob_delta[i])) for i in np.argsort(prob_delta)[:3]
            if prob_delta[i] < -0.005]
    return {"top": top_a, "entered": [t for t in top_a if t not in top_b],
            "left": [t for t in top_b if t not in top_a], "rose": up, "fell": down}


def steering_tables(primary, sae, vocab, pooled: np.ndarray, features, top_rows: np.ndarray,
                    top_values: np.ndarray, max_act: np.ndarray) -> dict[int, list[dict]]:
    """``{feature: [{"row", "before", "zero", "max"}, ...]}``: how the model's predictions on
    each feature's top ``STEERED_EXAMPLES`` builds change with the feature set to 0 and to
    its maximum ``max_act[f]`` (``top_rows``/``top_values``: ``(F, k)`` of the analysis
    statistics, rows of ``pooled``)."""
    features = np.asarray(features, np.int64)
    if not len(features):
        return {}
    k = min(STEERED_EXAMPLES, len(pooled), top_rows.shape[1])
    rows = np.maximum(top_rows[features, :k], 0)
    values = np.stack([np.zeros(len(features)), max_act[features]], axis=1)
    graphdef, state = nnx.split(primary)
    logits = np.asarray(_steered_logits(
        graphdef, state, sae.params(), jnp.asarray(pooled[rows]), jnp.asarray(features),
        jnp.asarray(values, jnp.float32), clip_max=sae.config.encoder))
    steering = {}
    for i, f in enumerate(features):
        items = []
        for e in range(k):
            if top_rows[f, e] < 0 or top_values[f, e] <= 0:
                continue
            before = logits[i, 0, e]
            items.append({
                "row": int(rows[i, e]),
                "before": _top_token_lists(before, vocab, TOP_PREDICTIONS)[0],
                "zero": _prediction_change(before, logits[i, 1, e], vocab),
                "max": _prediction_change(before, logits[i, 2, e], vocab),
            })
        steering[int(f)] = items
    return steering


# ---------------------------------------------------------------- the whole analysis

def _describe_build(builds, i: int) -> dict:
    from primary.weapons import weapon_name

    ap = builds.ap[i]
    abilities = sorted(((ABILITIES[j], int(v)) for j, v in enumerate(ap) if v > 0),
                       key=lambda kv: (-kv[1], kv[0]))
    return {"weapon": weapon_name(int(builds.weapons[i])), "abilities": abilities,
            "concepts": builds.concepts_of(i)}


def analyze_features(primary, vocab, sae, builds, pooled: np.ndarray, *,
                     top_features: int = 64, timer: StageTimer | None = None) -> dict:
    """Everything the report shows, as a JSON-ready dict (see :mod:`apps.analysis.report`).

    ``pooled (n, D)``: pooled vectors of the full ``builds``. One encoder pass over them
    keeps the positive activations sparse (:mod:`sae_jax.sparse_activations`); every
    statistic, the concept recovery and the co-activation read those, so memory grows with
    the active entries, never with ``n x F``. ``timer`` records each stage's seconds.
    """
    timer = timer or StageTimer()
    num_features = sae.hidden_dim
    spec = sae.config.encoder
    with timer("activations"):
        sparse = collect(sae_activations(sae, pooled), num_features, total_rows=len(pooled),
                         desc="SAE activations").sort_by_value()
        positive_activations = sparse.nnz
    with timer("statistics"):
        fs = feature_statistics(sparse, spec.clip_max)
        stats, summary, ranked, hist_max, edges = (fs.stats, fs.summary, fs.ranked,
                                                   fs.hist_max, fs.edges)
        shown = ranked[:top_features]

    with timer("logit influence"):
        kernel = primary.output_layer.kernel[...]
        influence = np.asarray(analysis.logit_influence(sae.atoms(), kernel))
        promoted, suppressed = analysis.top_tokens(influence, INFLUENCE_TOKENS)

    concepts, sae_f1 = None, None
    if builds.concepts is not None and len(builds.concept_names):
        with timer("concept recovery"):
            concepts, sae_f1, _ = concept_recovery(
                sparse, pooled, builds.concepts, builds.concept_names, return_matrices=True,
                progress=True)
        with timer("concept pairs"):
            concepts = with_pairs(concepts, sparse, builds.concepts, sae_f1)
    with timer("absorption"):
        absorption = rung_absorption(builds, pooled, sparse, sae)

    if concepts is not None:
        # Concept detectors (single and paired) get a section too, even when they rank
        # below the cut.
        already = set(shown.tolist())
        extra = [f for f in detector_features(concepts)
                 if f not in already and summary.max_act[f] > 0]
        shown = np.concatenate([shown, np.array(sorted(set(extra)), shown.dtype)])
    rank_of = {int(f): i + 1 for i, f in enumerate(ranked)}
    pairs_of = pair_memberships(concepts) if concepts is not None else {}

    top_rows = np.asarray(stats.top_rows)
    top_vals = np.asarray(stats.top_values)
    with timer("steering"):
        steering = steering_tables(primary, sae, vocab, pooled, shown, top_rows, top_vals,
                                   summary.max_act)

    # P(g fires | f fires) for the shown features f against every feature g.
    with timer("co-activation"):
        coact_counts = analysis.coactivation_counts(sparse, shown)
    del sparse
    coact_pos = {int(f): i for i, f in enumerate(shown)}
    live = live_mask(summary.frequency)
    with timer("pages"):
        pages = []
        for f in shown:
            f = int(f)
            examples = [dict(_describe_build(builds, int(r)), row=int(r), activation=float(v))
                        for r, v in zip(top_rows[f], top_vals[f]) if r >= 0 and v > 0]
            page = {
                "id": f, "rank": rank_of.get(f), "score": float(summary.score[f]),
                "frequency": float(summary.frequency[f]),
                "mean_when_active": float(summary.mean_when_active[f]),
                "max_act": float(summary.max_act[f]),
                "hist": np.asarray(stats.hist[f]).tolist(),
                "top_examples": examples,
                "promoted": [(vocab.id_to_token[int(t)], float(influence[f, t]))
                             for t in promoted[f] if influence[f, t] > 0],
                "suppressed": [(vocab.id_to_token[int(t)], float(influence[f, t]))
                               for t in suppressed[f] if influence[f, t] < 0],
                "steering": steering.get(f, []),
                "concept": None, "coactive": [], "pairs": pairs_of.get(f, []),
                "absorption": absorption_roles(absorption, f),
            }
            if concepts is not None:
                page["concept"] = assigned_concept(concepts, f)
            page["coactive"] = analysis.coactive_features(coact_counts[coact_pos[f]], f, live)
            pages.append(page)

        table = feature_table(summary, ranked)
    return {
        "num_builds": int(len(pooled)), "num_features": int(num_features),
        "d_in": int(sae.config.input_dim), "clip_max": spec.clip_max, "hist_max": hist_max,
        "hist_edges": edges.tolist(),
        "num_ranked": int(len(ranked)), "num_top": int(len(ranked[:top_features])),
        "dead": int(np.sum(dead_mask(summary.frequency))),
        "dense": int(np.sum(dense_mask(summary.frequency))),
        "positive_activations": int(positive_activations),
        "pages": pages, "features": table, "concepts": concepts, "absorption": absorption,
    }


def analyze_and_write(workdir, primary, vocab, weapon_vocab, sae, builds, pooled: np.ndarray,
                      *, run: dict | None = None, top_features: int = 64,
                      explanations: bool = True, concept_set=None,
                      timer: StageTimer | None = None, shared_explanation_builds=None) -> dict:
    """The analysis of ``builds`` (with their ``pooled (n, D)`` vectors) written into
    ``workdir``: ``concepts.json`` (when the builds carry concepts), ``absorption.json``,
    ``explanations.json`` (unless ``explanations`` is False) and ``report/``. ``run``: the
    run's ``run.json`` (shown on the page); ``concept_set``: the planted set, the
    explanations' ground truth (None: the built-in set); ``shared_explanation_builds``: the
    :func:`apps.analysis.explanations.explanation_builds` of these builds, when several SAEs
    share them (None: made here).
    Returns the report document; ``timer`` records each stage's seconds."""
    from apps.analysis.explanations import compute_explanations, write_explanations
    from apps.analysis.report import write_report

    timer = timer or StageTimer()
    workdir = Path(workdir)
    doc = analyze_features(primary, vocab, sae, builds, pooled, top_features=top_features,
                           timer=timer)
    with timer("steered builds"):
        add_steered_builds(doc["pages"], builds, primary, sae, vocab, weapon_vocab)
    doc["title"] = f"SAE features of {workdir.name}"
    doc["run"] = {k: (run or {}).get(k) for k in ("primary_model_dir", "data_source",
                                                  "num_builds", "seed")}
    doc["metrics"] = training_metrics(workdir)
    # Human labels are shown beside the explanations; nothing here writes them.
    run = RunDir(workdir)
    doc["labels"] = labels_to_json(read_labels(run.labels_path, num_features=sae.hidden_dim))
    if run.curves_path.exists():
        doc["curves_png"] = str(run.curves_path)
    if doc["concepts"] is not None:
        write_concepts(run.concepts_path, doc["concepts"])
    write_absorption(run.absorption_path, doc["absorption"])
    doc["explanations"] = None
    if explanations:
        with timer("explanations"):
            planted = {} if concept_set is None else {"concepts": concept_set}
            doc["explanations"] = compute_explanations(
                primary, vocab, weapon_vocab, sae, builds, pooled,
                curve_features=[p["id"] for p in doc["pages"]],
                concepts_result=doc["concepts"], shared=shared_explanation_builds, **planted)
            write_explanations(run.explanations_path, doc["explanations"])
    with timer("report"):
        doc["index"] = str(write_report(run.report_dir, doc))
        run.seal_analysis()
    return doc


@dataclass(frozen=True)
class AnalysisInputs:
    """What the analyzes of several SAE runs on one primary and one data setting share (a
    sweep's members): the primary and its vocabularies, the held-out builds, their pooled
    vectors, the planted concept set and the explanations' builds (None: no explanations).
    Made by :func:`analysis_inputs`."""

    primary: object
    vocab: object
    weapon_vocab: object
    builds: object
    pooled: np.ndarray
    concept_set: object
    explanation_builds: object


def analysis_inputs(workdir, *, num_builds: int | None = None, explanations: bool = True,
                    primary=None) -> AnalysisInputs:
    """The inputs of :func:`analyze` for the run in ``workdir`` (``primary``: its primary
    as ``(model, vocab, weapon_vocab)``, already loaded; None: loaded here)."""
    from apps.analysis.explanations import explanation_builds
    from apps.runs.setup import run_concepts
    from primary.model_dir import load_primary

    run = RunDir(workdir)
    workdir = run.root
    model, vocab, weapon_vocab = primary or load_primary(run.primary_dir())
    builds = known_builds(evaluation_builds(workdir, vocab, weapon_vocab, limit=num_builds),
                          vocab, weapon_vocab)
    inputs = full_build_inputs(builds, vocab, weapon_vocab, where=f"{workdir} test builds")
    pooled = pooled_of_inputs(model, inputs, batch_size=BATCH_SIZE)
    concept_set = run_concepts(workdir)  # the set the run planted
    shared = None
    if explanations:
        planted = {} if concept_set is None else {"concepts": concept_set}
        shared = explanation_builds(model, vocab, weapon_vocab, builds, pooled, **planted)
    return AnalysisInputs(model, vocab, weapon_vocab, builds, pooled, concept_set, shared)


def explanations_line(summary: dict) -> str:
    """The printed line on the explanations (``explanations.json``'s summary), rounded for
    people: the explained share and the agreement as percentages of the features that fire
    and of those checked, F1 to 3 digits."""
    agreement, checked = summary["causal_agreement"], summary["causal_checked"]
    if agreement is None:
        causal = "causal agreement n/a (no explained feature checked)"
    else:
        causal = (f"causal agreement {100 * agreement:.1f}% ({round(agreement * checked)} of "
                  f"{checked} checked)")
    median = summary["median_f1_window"]
    window = "n/a (no feature in the window)" if median is None else f"{median:.3f}"
    share, nondead = summary.get("explained_share"), summary.get("nondead")
    of = "" if share is None else f" ({100 * share:.1f}% of the {nondead} that fire)"
    return (f"explanations: {summary['explained']} features with held-out F1 >= "
            f"{summary['explained_f1']:g}{of}, {causal}, median F1 in the window {window}")


def absorption_line(summary: dict, seconds: float | None = None) -> str:
    """The printed line on absorption and splitting (``absorption.json``'s summary; the
    ``seconds`` it took, when known)."""
    took = "" if seconds is None else f" ({seconds:.1f}s)"
    if not summary["measured"]:
        return (f"absorption: no AP rung measured ({summary['few_builds']} with too "
                f"few builds, {summary['weak_probe']} the input barely encodes){took}")
    return (f"absorption on the AP rungs: {summary['measured']} of {summary['concepts']} "
            f"rungs measured; mean absorption fraction "
            f"{summary['mean_absorption_fraction']:.3f}, fully absorbed "
            f"{100 * summary['mean_full_absorption']:.1f}%, split "
            f"{100 * summary['split_share']:.0f}%{took}")


def analyze(workdir, *, top_features: int = 64, num_builds: int | None = None,
            explanations: bool = True, inputs: AnalysisInputs | None = None) -> dict:
    """Analyze the SAE run in ``workdir``; writes ``concepts.json`` (synthetic data only),
    ``absorption.json``, ``explanations.json`` (unless ``explanations`` is False) and
    ``report/index.html``. ``inputs``: :func:`analysis_inputs` made once for several runs
    that share them (then ``num_builds`` is theirs; None: made here). Returns the concept
    summary (empty dict without concepts)."""
    from sae_jax.sae_dir import load_sae

    t0 = time.perf_counter()
    run = RunDir(workdir)
    workdir = run.root
    record = run.read_run()
    if record.on_activations:  # no primary model: what applies to rows of a file
        from apps.analysis.activation_analysis import analyze_rows

        return analyze_rows(workdir, top_features=top_features, num_rows=num_builds,
                            inputs=inputs)
    if inputs is None:
        inputs = analysis_inputs(workdir, num_builds=num_builds, explanations=explanations)
    elif explanations and inputs.explanation_builds is None:
        raise ValueError("the shared analysis inputs were made without explanations")
    primary, vocab, weapon_vocab = inputs.primary, inputs.vocab, inputs.weapon_vocab
    sae = load_sae(run.sae_dir)
    if sae.config.input_dim != primary.config.hidden_dim:
        raise ValueError(f"{run.sae_dir} takes {sae.config.input_dim}-d inputs but the primary "
                         f"model in {record.primary_model_dir} pools to "
                         f"{primary.config.hidden_dim}")
    timer = StageTimer()
    doc = analyze_and_write(workdir, primary, vocab, weapon_vocab, sae, inputs.builds,
                            inputs.pooled, run=record.to_json(), top_features=top_features,
                            explanations=explanations, concept_set=inputs.concept_set,
                            timer=timer, shared_explanation_builds=inputs.explanation_builds)
    summary = doc["concepts"]["summary"] if doc["concepts"] is not None else {}
    print(f"analyzed {doc['num_builds']} held-out builds, {doc['num_features']} features "
          f"({doc['num_ranked']} in the 1%-30% window) in {time.perf_counter() - t0:.1f}s")
    if summary:
        print(f"concept recovery: {summary['recovered']}/{summary['total']} concepts with "
              f"SAE F1 >= 0.8; mean F1 SAE {summary['mean_sae_f1']:.3f} vs raw neuron "
              f"{summary['mean_neuron_f1']:.3f}")
        print(f"  {pairs_line(doc['concepts'])}")
    print(absorption_line(doc["absorption"]["summary"], timer.seconds.get("absorption")))
    if doc["explanations"] is not None:
        print(explanations_line(doc["explanations"]["summary"]))
    print(f"feature browser: {doc['index']}")
    return summary
