"""What rung tightening costs and changes: the rule search of a finished run with and without it.

Loads a finished SAE run (its analysis builds, topped up as ``apps.analysis.pipeline`` does),
makes the condition matrix and the activity levels once, then times
``sae_jax.rule_search.explain`` with ``tighten_tolerance`` at its default and off (-1), in
interleaved rounds in this one process (ratios, not absolute times, on a shared machine).
Reports the median times, their ratio, how many rules differ, and both ways the median
held-out F1 over the 1-30% window and, where the run planted concepts, the ground-truth
check of the rules (``apps.analysis.explanations.ground_truth_check``, which reads the rules
only).

    python -m benchmarks.explain_tighten --workdir=runs/demo [--rounds=5] [--num_builds=N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO_ROOT))

RESULTS = REPO_ROOT / "benchmarks" / "results" / "explain_tighten.json"


def _ground_truth(ex, conditions, workdir: Path, concept_set) -> dict | None:
    """The ground-truth check of these rules (``None`` without planted concepts)."""
    from apps.analysis.explanations import ground_truth_check

    path = workdir / "concepts.json"
    if not path.exists():  # no planted concepts
        return None
    names = [c.name for c in conditions]
    doc = {"features": {str(f): {"rule": [[names[c] for c in conj] for conj in ex.rule(f)],
                                 "rule_text": ""} for f in range(len(ex.f1))}}
    gt = ground_truth_check(doc, json.loads(path.read_text()), concept_set)
    return {"matched": gt["matched"], "checked": gt["checked"],
            "misses": [m["concept"] for m in gt["misses"]]}


def measure(workdir: str, rounds: int, num_builds: int | None = None) -> dict:
    import numpy as np

    from apps.analysis.explanations import activity_levels, condition_costs, explanation_builds
    from apps.analysis.pipeline import analysis_inputs
    from primary.conditions import families
    from primary.planted_concepts import CONCEPTS
    from sae_jax.activity import window_mask
    from sae_jax.rule_search import ExplainConfig, explain
    from sae_jax.sae_dir import load_sae

    workdir = Path(workdir).absolute()
    inputs = analysis_inputs(workdir, num_builds=num_builds, explanations=False)
    planted = {} if inputs.concept_set is None else {"concepts": inputs.concept_set}
    # The builds, conditions and split the analysis explains with (no rung curves: only
    # the rule search is measured).
    shared = explanation_builds(inputs.primary, inputs.vocab, inputs.weapon_vocab,
                                inputs.builds, inputs.pooled, curves=False, **planted)
    sae = load_sae(workdir / "sae")
    levels, _ = activity_levels(sae, shared.pooled)
    conditions = shared.conditions
    fam, costs = families(conditions), condition_costs(conditions)
    on = ExplainConfig()
    configs = {"tightened": on, "not tightened": dataclasses.replace(on, tighten_tolerance=-1.0)}
    times = {name: [] for name in configs}
    results = {}
    for _ in range(rounds):
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            results[name] = explain(shared.cond, levels, fit_rows=shared.fit,
                                    heldout_rows=shared.held, families=fam,
                                    costs=costs, config=cfg, progress=False)
            times[name].append(time.perf_counter() - t0)
    window = window_mask(levels[0].columns(0, levels[0].num_features).mean(0))
    concept_set = inputs.concept_set or CONCEPTS
    out = {"workdir": str(workdir), "features": int(levels[0].num_features),
           "rows": int(len(shared.cond)), "conditions": len(conditions), "rounds": rounds,
           "window_features": int(window.sum())}
    for name, ex in results.items():
        out[name] = {"median_seconds": round(float(np.median(times[name])), 3),
                     "seconds": [round(t, 3) for t in times[name]],
                     "median_f1_window": float(np.median(ex.f1[window])) if window.any()
                     else None,
                     "mean_fit_f1": float(ex.fit_f1.mean()),
                     "ground_truth": _ground_truth(ex, conditions, workdir, concept_set)}
    a, b = results["tightened"], results["not tightened"]
    out["rules_changed"] = int((a.conjunctions != b.conjunctions).any((1, 2)).sum())
    out["time_ratio"] = round(out["tightened"]["median_seconds"]
                              / out["not tightened"]["median_seconds"], 3)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="a finished SAE run directory")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds of both searches (default 5)")
    p.add_argument("--num_builds", type=int, default=None,
                   help="analysis builds to start from (default: the run's evaluation builds)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    from benchmarks.output import write_results

    t0 = time.perf_counter()
    out = measure(args.workdir, args.rounds, args.num_builds)
    out["wall_s"] = time.perf_counter() - t0
    for name in ("tightened", "not tightened"):
        r = out[name]
        gt = r["ground_truth"]
        print(f"{name:>14}: {r['median_seconds']:.2f} s median, median window F1 "
              f"{r['median_f1_window']:.3f}" + (f", ground truth {gt['matched']}/"
                                               f"{gt['checked']}" if gt else ""))
    print(f"rules changed: {out['rules_changed']} of {out['features']}; time ratio "
          f"{out['time_ratio']}")
    write_results(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
