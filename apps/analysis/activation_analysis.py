"""The analysis of an SAE run trained on activation files (``--activations``).

Without a primary model there are no builds, tokens or predictions to relate a feature
to, so the analysis is what the activations alone give: over the run's held-out rows
(the evaluation's rows, never trained on; at most ``num_rows`` of them) each feature's
frequency, activation histogram, mean and maximum, its top rows by index in the files,
the ranking, the features it fires with (co-activation) and the run's evaluation. It
writes ``report/`` (the static report, :mod:`apps.analysis.report`); no explanations,
no concept recovery and no absorption (it is measured on the gear model's AP rungs).

:func:`analysis_rows` reads the rows once (several members of a sweep share them);
:func:`analyze_rows` analyzes one run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from apps.analysis.feature_summary import (
    StageTimer,
    feature_statistics,
    feature_table,
    sae_activations,
    training_metrics,
)
from runkit.run_dir import RunDir, RunDirError
from sae_jax import feature_stats as analysis
from sae_jax.activation_files import ActivationFiles, open_activations
from sae_jax.activity import dead_mask, dense_mask, live_mask
from sae_jax.config import SAETrainConfig
from sae_jax.feature_labels import labels_to_json, read_labels
from sae_jax.row_split import evaluation_split
from sae_jax.sparse_activations import collect


@dataclass(frozen=True)
class RowAnalysisInputs:
    """The rows a run on activation files is analyzed on: ``rows`` (table rows of
    ``files``) and their activations ``pooled (n, d_in)``."""

    files: ActivationFiles
    rows: np.ndarray
    pooled: np.ndarray


def analysis_rows(workdir, *, num_rows: int | None = None,
                  files: ActivationFiles | None = None) -> RowAnalysisInputs:
    """The held-out rows of the run in ``workdir`` (the first ``num_rows``; None: all), read
    from its activations (``files``: already open), which must be the ones it trained on."""
    run = RunDir(workdir)
    record = run.read_run()
    if files is None:
        files = open_activations(run.activations_path(record))
    recorded = record.extra.get("activations_sha256")
    if recorded is not None and files.fingerprint() != recorded:
        raise RunDirError(f"{run.run_path}: the activations in {files.path} are not the ones "
                          f"the run trained on (fingerprint {recorded[:12]}): they changed "
                          "since")
    cfg = SAETrainConfig.from_dict(run.settings(), where=str(run.settings_path))
    held_out = evaluation_split(files.num_rows, cfg.eval_rows, cfg.seed).held_out
    rows = held_out[:num_rows]
    pooled = files.read(rows)
    if not np.isfinite(pooled).all():
        bad = int(rows[np.flatnonzero(~np.isfinite(pooled).all(axis=1))[0]])
        raise RunDirError(f"{files.path}: {files.where(bad)} holds a non-finite value (NaN or "
                          "Inf): the activations changed since the run trained on them")
    return RowAnalysisInputs(files, rows, pooled)


def row_features(sae, inputs: RowAnalysisInputs, *, top_features: int = 64,
                 timer: StageTimer | None = None) -> dict:
    """The report's document of ``sae`` over ``inputs`` (as
    :func:`apps.analysis.pipeline.analyze_features` makes it for builds, without what
    needs the primary model)."""
    timer = timer or StageTimer()
    pooled, num_features = inputs.pooled, sae.hidden_dim
    with timer("activations"):
        sparse = collect(sae_activations(sae, pooled), num_features, total_rows=len(pooled),
                         desc="SAE activations").sort_by_value()
    with timer("statistics"):
        fs = feature_statistics(sparse, sae.config.encoder.clip_max)
        stats, summary, ranked, hist_max, edges = (fs.stats, fs.summary, fs.ranked,
                                                   fs.hist_max, fs.edges)
        shown = ranked[:top_features]
    with timer("co-activation"):
        coact_counts = analysis.coactivation_counts(sparse, shown)
    positive_activations = sparse.nnz
    del sparse
    live = live_mask(summary.frequency)
    rank_of = {int(f): i + 1 for i, f in enumerate(ranked)}
    top_rows, top_vals = np.asarray(stats.top_rows), np.asarray(stats.top_values)
    pages = []
    for i, f in enumerate(int(f) for f in shown):
        examples = [{"row": int(r), "table_row": int(inputs.rows[r]),
                     "where": inputs.files.where(int(inputs.rows[r])), "activation": float(v)}
                    for r, v in zip(top_rows[f], top_vals[f]) if r >= 0 and v > 0]
        pages.append({
            "id": f, "rank": rank_of.get(f), "score": float(summary.score[f]),
            "frequency": float(summary.frequency[f]),
            "mean_when_active": float(summary.mean_when_active[f]),
            "max_act": float(summary.max_act[f]), "hist": np.asarray(stats.hist[f]).tolist(),
            "top_examples": examples, "promoted": [], "suppressed": [], "steering": [],
            "concept": None, "pairs": [], "on_rows": True,
            "coactive": analysis.coactive_features(coact_counts[i], f, live)})
    return {
        "num_builds": int(len(pooled)), "num_features": int(num_features),
        "d_in": int(sae.config.input_dim), "clip_max": sae.config.encoder.clip_max,
        "hist_max": hist_max, "hist_edges": edges.tolist(),
        "num_ranked": int(len(ranked)), "num_top": int(len(shown)),
        "dead": int(np.sum(dead_mask(summary.frequency))),
        "dense": int(np.sum(dense_mask(summary.frequency))),
        "positive_activations": int(positive_activations),
        "pages": pages, "features": feature_table(summary, ranked), "concepts": None,
        "on_activations": True, "explanations": None,
    }


def analyze_rows(workdir, *, top_features: int = 64, num_rows: int | None = None,
                 inputs: RowAnalysisInputs | None = None) -> dict:
    """Analyze the run on activation files in ``workdir``: writes ``report/`` (``inputs``:
    :func:`analysis_rows`, made once for several runs; None: read here). Returns {} (there
    is no concept summary)."""
    from apps.analysis.report import write_report
    from sae_jax.sae_dir import load_sae

    t0 = time.perf_counter()
    run = RunDir(workdir)
    record = run.read_run()
    if inputs is None:
        inputs = analysis_rows(run.root, num_rows=num_rows)
    sae = load_sae(run.sae_dir)
    if sae.config.input_dim != inputs.files.d_in:
        raise RunDirError(f"{run.sae_dir} takes {sae.config.input_dim}-d inputs but the "
                          f"activations in {inputs.files.path} have {inputs.files.d_in}")
    doc = row_features(sae, inputs, top_features=top_features)
    doc["title"] = f"SAE features of {run.name}"
    doc["run"] = {"activations": record.data_path, "rows": record.extra.get("num_rows"),
                  "seed": record.seed}
    doc["metrics"] = training_metrics(run.root)
    doc["labels"] = labels_to_json(read_labels(run.labels_path, num_features=sae.hidden_dim))
    if run.curves_path.exists():
        doc["curves_png"] = str(run.curves_path)
    doc["index"] = str(write_report(run.report_dir, doc))
    run.seal_analysis()
    print(f"analyzed {doc['num_builds']} held-out rows, {doc['num_features']} features "
          f"({doc['num_ranked']} in the 1%-30% window) in {time.perf_counter() - t0:.1f}s")
    print("absorption: not measured (activation files carry no AP rungs to probe)")
    print(f"feature browser: {doc['index']}")
    return {}

