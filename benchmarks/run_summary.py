"""Finished SAE runs side by side: fidelity, concepts and how well their features are explained.

For each run directory (``sae_jax.train`` or a sweep member, with its ``metrics.json``,
``concepts.json`` and ``explanations.json``): FVE, L0, dead and dense fractions, loss
recovered, concepts recovered, the explanation summary (explained share of the features
that fire and of their activations, median held-out F1 in the 1%-30% window, causal
agreement, ground truth) and how the features spread over firing rates (each feature's
rate on the explanation inputs it is explained on: full or partial builds). Runs given
one label (one recipe, several seeds) are also summarised as mean and standard deviation.

    python -m benchmarks.run_summary --runs usage-0.05=runs/a,usage-0.05=runs/b,usage-0.005=runs/c
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.output import table, write_results  # noqa: E402
from benchmarks.timing import machine_info  # noqa: E402
from sae_jax.activity import MAX_FREQUENCY, MIN_FREQUENCY  # noqa: E402
from sae_jax.concept_recovery import RECOVERED_F1  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "run_summary.json"
# Firing-rate bands of the features (share of explanation builds where active); the third
# is the explanations' window.
BANDS = ((0.0, 0.001), (0.001, MIN_FREQUENCY), (MIN_FREQUENCY, MAX_FREQUENCY),
         (MAX_FREQUENCY, 1.0))
NUMBERS = ("fve", "l0", "dead_fraction", "dense_fraction", "loss_recovered",
           "concepts_recovered", "median_f1_window", "window_features", "causal_agreement",
           "ground_truth_share", "median_f1_above_1pct", "explained_share",
           "explained_activity_share")


def _band_name(lo: float, hi: float) -> str:
    return f"{100 * lo:g}%-{100 * hi:g}%"


def summarise_run(workdir: Path) -> dict:
    """One run's row (see the module doc); a missing file is named."""
    from runkit.jsonio import read_json

    metrics = read_json(workdir / "metrics.json", what="metrics file")
    concepts = read_json(workdir / "concepts.json", what="concept recovery file")
    doc = read_json(workdir / "explanations.json", what="explanations file")
    feats = doc["features"].values()
    rate = np.array([f["frequency_all"] for f in feats], np.float64)
    f1 = np.array([f["f1"] for f in feats], np.float64)
    summary = doc["summary"]
    truth = summary.get("ground_truth") or {}
    above = rate > MIN_FREQUENCY
    bands = {}
    for lo, hi in BANDS:
        inside = (rate > lo) & (rate <= hi) if lo > 0 else rate <= hi
        bands[_band_name(lo, hi)] = int(inside.sum())
    return {
        "workdir": str(workdir),
        **{k: float(metrics[k]) for k in ("fve", "l0", "dead_fraction", "dense_fraction",
                                           "loss_recovered")},
        "concepts_recovered": sum(r["sae_f1"] >= RECOVERED_F1 for r in concepts["rows"]),
        "concepts_total": len(concepts["rows"]),
        "median_f1_window": summary["median_f1_window"],
        "window_features": summary["window_features"],
        "causal_agreement": summary["causal_agreement"],
        "ground_truth_share": truth.get("share"),
        "ground_truth": f"{truth.get('matched')}/{truth.get('checked')}" if truth else None,
        "median_f1_above_1pct": float(np.median(f1[above])) if above.any() else None,
        # None for explanations read on full builds only (no partial builds, no share).
        "explained_share": summary.get("explained_share"),
        "explained_activity_share": summary.get("explained_activity_share"),
        "features_by_rate": bands,
    }


def summarise_groups(rows: list[dict], labels: list[str]) -> dict:
    """Mean and standard deviation of :data:`NUMBERS` over the runs of each label."""
    groups = {}
    for label in dict.fromkeys(labels):
        mine = [r for r, lab in zip(rows, labels) if lab == label]
        out = {"runs": len(mine)}
        for k in NUMBERS:
            vals = np.array([r[k] for r in mine if r[k] is not None], np.float64)
            if len(vals):
                out[k] = {"mean": float(vals.mean()), "std": float(vals.std())}
        groups[label] = out
    return groups


def parse_runs(text: str) -> list[tuple[str, Path]]:
    """``"a=dir1,b=dir2"`` -> ``[("a", Path("dir1")), ...]``; a bare ``dir`` is its own label."""
    runs = []
    for item in filter(None, text.split(",")):
        label, _, path = item.rpartition("=")
        runs.append((label or path, Path(path)))
    if not runs:
        raise ValueError(f"--runs: no run directories in {text!r}")
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="LABEL=DIR,... (runs sharing a label are "
                   "summarised together)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        runs = parse_runs(args.runs)
    except ValueError as e:
        p.error(str(e))
    rows = [summarise_run(path) for _, path in runs]
    labels = [label for label, _ in runs]
    for row, label in zip(rows, labels):
        row["label"] = label
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    table("runs", ["label", "fve", "L0", "dense", "concepts", "explained", "activity",
                   "median F1 (window)", "causal", "ground truth",
                   "features <0.1% / 0.1-1% / 1-30% / >30%"],
          [[r["label"], f"{r['fve']:.4f}", f"{r['l0']:.1f}", f"{r['dense_fraction']:.3f}",
            f"{r['concepts_recovered']}/{r['concepts_total']}", pct(r["explained_share"]),
            pct(r["explained_activity_share"]),
            f"{r['median_f1_window']:.3f} ({r['window_features']})",
            f"{r['causal_agreement']:.3f}", str(r["ground_truth"]),
            " / ".join(str(v) for v in r["features_by_rate"].values())] for r in rows])
    groups = summarise_groups(rows, labels)
    table("by label (mean ± std)", ["label", "runs", "fve", "explained", "median F1 (window)",
                                    "causal", "ground truth"],
          [[label, str(g["runs"])] + [
              f"{g[k]['mean']:.3f} ± {g[k]['std']:.3f}" if k in g else "-"
              for k in ("fve", "explained_share", "median_f1_window", "causal_agreement",
                        "ground_truth_share")]
           for label, g in groups.items()])
    out = {"machine": machine_info(), "runs": rows, "groups": groups,
           "wall_s": time.perf_counter() - t0}
    write_results(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
