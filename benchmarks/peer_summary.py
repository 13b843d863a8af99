"""The arithmetic of the SAELens peer benchmark's results (no torch, no SAELens): each
library's mean and spread over seeds per architecture, the headline summary and the
targets.

A run is a dict with ``library`` ("ours" or "saelens"), ``architecture``, ``seed``,
``samples``, ``wall_s`` and the flat scores of :data:`METRICS`. The seed spread of a
metric is the sample standard deviation over the seeds; "no worse beyond the seed spread"
means ours' mean is at least SAELens's minus the larger of the two spreads.
"""

from __future__ import annotations

import numpy as np

LIBRARIES = ("ours", "saelens")
# Flat score name -> what it is (the table's columns come from here).
METRICS = {
    "l0": "SAE L0 on the evaluation rows (SAELens's count: latents != 0)",
    "f1": "SAELens's per-latent F1, averaged over latents",
    "mcc": "SAELens's MCC (decoder rows against the true directions)",
    "explained_variance": "SAELens's explained variance",
    "uniqueness": "SAELens's uniqueness",
    "dead_latents": "latents never active on the evaluation rows",
    "recovered_fraction": "ours: true features whose best latent reaches F1 >= 0.8",
    "mean_best_f1": "ours: mean over true features of the best latent's F1",
    "samples_per_s": "training samples per second, end to end",
}
TARGET_F1_MARGIN = 0.03  # our best architecture's F1 >= SAELens's best + this
TARGET_THROUGHPUT = 3.0  # ours / SAELens, samples per second
TARGET_SWEEP = 2.0  # SAELens's multi-SAE time / our stacked sweep's


def flat_scores(scores: dict, samples: int, wall_s: float) -> dict:
    """The :data:`METRICS` of one SAE from :func:`benchmarks.peer_scoring.score`'s dict
    and its training's samples and wall time."""
    saelens, recovery = scores["saelens"], scores["recovery"]
    return {"l0": saelens["sae_l0"], "f1": saelens["latent_f1_score"], "mcc": saelens["mcc"],
            "explained_variance": saelens["explained_variance"],
            "uniqueness": saelens["uniqueness"], "dead_latents": saelens["dead_latents"],
            "recovered_fraction": recovery["recovered_fraction"],
            "mean_best_f1": recovery["mean_best_f1"], "samples_per_s": samples / wall_s}


def spread(values) -> float:
    """Sample standard deviation (0 for a single value)."""
    values = np.asarray(values, float)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def per_architecture(runs: list[dict]) -> dict:
    """``{architecture: {library: {metric: {"mean", "spread", "all"}, "seeds": [...]}}}``."""
    out: dict = {}
    for run in runs:
        entry = out.setdefault(run["architecture"], {}).setdefault(run["library"], {"seeds": []})
        entry["seeds"].append(run["seed"])
        for metric in METRICS:
            entry.setdefault(metric, {"all": []})["all"].append(float(run[metric]))
    for libraries in out.values():
        for entry in libraries.values():
            for metric in METRICS:
                values = entry[metric]["all"]
                entry[metric].update(mean=float(np.mean(values)), spread=spread(values))
    return out


def no_worse(ours: dict, theirs: dict) -> bool:
    """Ours' mean at least SAELens's minus the larger seed spread (module docstring)."""
    return ours["mean"] >= theirs["mean"] - max(ours["spread"], theirs["spread"])


def library_rate(runs: list[dict], library: str) -> float:
    """A library's training throughput over all its single runs: total samples over total
    wall time."""
    mine = [r for r in runs if r["library"] == library]
    return sum(r["samples"] for r in mine) / sum(r["wall_s"] for r in mine)


def _best(table: dict, library: str, metric: str) -> tuple[str, float]:
    candidates = [(arch, libs[library][metric]["mean"]) for arch, libs in table.items()
                  if library in libs]
    return max(candidates, key=lambda pair: pair[1])


def summarize(runs: list[dict], sweep: dict | None) -> dict:
    """The headline summary and the targets. ``sweep``: ``{"ours_wall_s",
    "saelens_wall_s", ...}`` of the stacked sweep and SAELens's multi-SAE run (None when
    not run)."""
    table = per_architecture(runs)
    summary = {}
    for library in LIBRARIES:
        for metric in ("f1", "mcc"):
            arch, value = _best(table, library, metric)
            summary[f"{library}_best_{metric}"] = value
            summary[f"{library}_best_{metric}_architecture"] = arch
    rates = {lib: library_rate(runs, lib) for lib in LIBRARIES}
    summary["ours_samples_per_s"] = rates["ours"]
    summary["saelens_samples_per_s"] = rates["saelens"]
    summary["throughput_ratio"] = rates["ours"] / rates["saelens"]
    summary["sweep_ratio"] = (sweep["saelens_wall_s"] / sweep["ours_wall_s"]
                              if sweep else None)
    per_arch = {arch: {metric: no_worse(libs["ours"][metric], libs["saelens"][metric])
                       for metric in ("f1", "mcc")}
                for arch, libs in table.items() if set(LIBRARIES) <= set(libs)}
    targets = {
        "per_architecture_no_worse": per_arch,
        "per_architecture_no_worse_met": all(all(v.values()) for v in per_arch.values()),
        "best_f1_margin": {"value": summary["ours_best_f1"] - summary["saelens_best_f1"],
                           "target": TARGET_F1_MARGIN},
        "throughput_ratio": {"value": summary["throughput_ratio"], "target": TARGET_THROUGHPUT},
        "sweep_ratio": {"value": summary["sweep_ratio"], "target": TARGET_SWEEP},
    }
    for name in ("best_f1_margin", "throughput_ratio", "sweep_ratio"):
        t = targets[name]
        t["met"] = t["value"] is not None and t["value"] >= t["target"]
    return {"per_architecture": table, "summary": summary, "targets": targets}
