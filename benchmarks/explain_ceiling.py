"""How well could any rule over the build conditions predict a run's features? A ceiling
for the explanation F1.

For the analyzed builds of a run (topped up with fresh synthetic builds as the analysis
does) and the same fit / held-out split, per feature and activity level:

- ``rules``: held-out F1 of the explanation rule (``sae_jax.rule_search``, the analysis's
  settings: a conjunction of up to 3 conditions, optionally OR a second);
- ``linear``: held-out F1 of a logistic regression over all the same conditions, trained on
  the fit rows, its threshold chosen on the fit rows (a weighted sum of every condition:
  what no short rule can say);

and the medians over the features in the 1%-30% window, each feature at its best level by
fit-row F1 (``linear``) or at the level the explanation chose (``rules``).

    python -m benchmarks.explain_ceiling --workdir=runs/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "explain_ceiling.json"


def measure(workdir: str) -> dict:
    from apps.analysis.explanations import (
        MIN_EXPLAIN_BUILDS,
        activity_levels,
        condition_costs,
        fresh_builds,
    )
    from apps.analysis.pipeline import evaluation_builds, known_builds
    from apps.runs.setup import run_concepts
    from benchmarks.logistic import logistic_f1
    from bridge.causal import pooled_of_builds
    from primary.builds import BuildSet
    from primary.conditions import CATALOGUE, condition_matrix, families, occurring
    from primary.model_dir import load_primary
    from runkit.run_dir import RunDir
    from sae_jax.activity import window_mask
    from sae_jax.rule_search import ExplainConfig, explain, split_rows
    from sae_jax.sae_dir import load_sae

    workdir = Path(workdir)
    primary, vocab, weapon_vocab = load_primary(RunDir(workdir).primary_dir())
    sae = load_sae(workdir / "sae")
    builds = known_builds(evaluation_builds(workdir, vocab, weapon_vocab), vocab, weapon_vocab)
    fresh = fresh_builds(builds, run_concepts(workdir), weapon_vocab,
                         MIN_EXPLAIN_BUILDS - len(builds))
    builds = BuildSet.concat([builds, fresh]) if len(fresh) else builds
    pooled = pooled_of_builds(primary, builds, vocab, weapon_vocab)
    cond_all = condition_matrix(builds, CATALOGUE)
    keep = occurring(cond_all)
    conditions = [CATALOGUE[k] for k in keep]
    cond = cond_all[:, keep]
    levels, _ = activity_levels(sae, pooled)
    fit, held = split_rows(len(builds))
    ex = explain(cond, levels, fit_rows=fit, heldout_rows=held, families=families(conditions),
                 costs=condition_costs(conditions), config=ExplainConfig(), progress=False)
    num_f = sae.hidden_dim
    dense = [lv.columns(0, num_f) for lv in levels]
    frequency = dense[0].mean(0)
    window = window_mask(frequency)
    feats = np.flatnonzero(window)
    # Logistic regressions of every window feature at every level, on the fit rows.
    y = np.concatenate([d[:, feats] for d in dense], 1)
    fit_f1, held_f1 = (a.reshape(len(levels), -1)
                       for a in logistic_f1(cond[fit], y[fit], cond[held], y[held]))
    # Each feature at the level whose regression fits best on the fit rows (as the rules
    # choose theirs), scored on the held-out rows.
    linear = held_f1[np.argmax(fit_f1, axis=0), np.arange(len(feats))]
    rows = {}
    for name, lo, hi in (("1-5%", 0.01, 0.05), ("5-10%", 0.05, 0.10), ("10-30%", 0.10, 0.30),
                         ("window", 0.01, 0.30)):
        m = (frequency[feats] > lo) & (frequency[feats] < hi)
        rows[name] = {"features": int(m.sum()),
                      "rules": float(np.median(ex.f1[feats][m])) if m.any() else None,
                      "linear": float(np.median(linear[m])) if m.any() else None}
    return {"workdir": str(workdir), "builds": len(builds), "fresh_builds": len(fresh),
            "fit_rows": len(fit), "heldout_rows": len(held), "conditions": len(conditions),
            "median_heldout_f1": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="an SAE run directory (analyzed)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    result = measure(args.workdir)
    for name, row in result["median_heldout_f1"].items():
        print(f"{name:>7}: {row['features']:>3} features, median held-out F1 rules "
              f"{row['rules']:.3f}, logistic regression {row['linear']:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
