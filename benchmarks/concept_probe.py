"""Can the primary's pooled vector tell each planted concept at all? A ceiling for concept
recovery.

Concept recovery asks whether one SAE feature detects each concept (F1 >= 0.8). If the
primary did not encode a concept, no SAE could recover it. This script fits one logistic
regression per concept on the pooled vectors of fresh builds from the run's synthetic
world, using all the pooled dimensions, not one feature. It trains on half of the builds,
chooses the threshold on that half, and reports the held-out F1 on the other half. It
also gives the concepts the run's own SAE recovered (its ``concepts.json``), to set beside
the probe, and the F1 of each concept's own requirement as a rule ("every required ability
at its minimum AP"): a labelled build always meets it, but filler can meet it too, so the
world itself caps what any detector of the label can reach. The same rule is scored again as
the tokens show it (AP rounded down to the token thresholds 3, 6, 12, 15, ...): the primary
sees 12 and 13 AP as the same token, so a requirement of 13 reads as 12 to any detector
working from the model. Last, the run's SAE on the same fresh builds: its best single
feature per concept, and the best pair of features firing together
(:mod:`sae_jax.pair_recovery`, as the analysis reports it), which shows a concept the SAE
builds from two features rather than one.

    python -m benchmarks.concept_probe --workdir=runs/demo [--builds=20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.output import log, table, write_results  # noqa: E402
from benchmarks.timing import machine_info  # noqa: E402
from sae_jax.concept_recovery import RECOVERED_F1  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "concept_probe.json"
PROBE_SEED = 12_345  # fresh builds: a stream apart from the runs' own seeds


def probe_f1(x: np.ndarray, y: np.ndarray, steps: int = 1500) -> np.ndarray:
    """``x (n, D)`` float, ``y (n, C)`` bool -> ``(C,)`` held-out F1 of one logistic
    regression per column on the standardised ``x`` (first half fit, threshold chosen
    there; second half scored)."""
    from benchmarks.logistic import logistic_f1

    half = len(x) // 2
    mu, sd = x[:half].mean(0), x[:half].std(0) + 1e-6
    xs = (x - mu) / sd
    return logistic_f1(xs[:half], y[:half], xs[half:], y[half:], steps=steps)[1]


def requirement_scores(builds, concepts, *, visible: bool = False
                       ) -> dict[str, tuple[float, float, float]]:
    """``{concept: (precision, recall, F1)}`` of "the build holds every required ability at
    its minimum AP" as a detector of the concept's label, for every labelled column of
    ``builds`` (concepts matched by name). ``visible``: judge the rule on what the tokens
    show (:func:`primary.vocab.visible_ap` of both the builds and the requirement), as the
    primary sees the build: a requirement between two token thresholds is then read at the
    lower one."""
    from primary.planted_concepts import required_ap_table
    from primary.vocab import visible_ap

    index = {c.name: i for i, c in enumerate(concepts)}
    required = required_ap_table(concepts)  # 0 AP where an ability is not required
    ap = np.asarray(builds.ap)
    if visible:
        ap, required = visible_ap(ap), visible_ap(required)
    meets = (ap[:, None, :] >= required[None]).all(-1)  # (n, C)
    out = {}
    for column, name in enumerate(builds.concept_names):
        label = np.asarray(builds.concepts[:, column], bool)
        rule = meets[:, index[name]]
        hits = int((rule & label).sum())
        precision = hits / max(int(rule.sum()), 1)
        recall = hits / max(int(label.sum()), 1)
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        out[name] = (precision, recall, f1)
    return out


def measure(workdir: Path, num_builds: int) -> dict:
    from apps.runs.setup import run_concepts
    from bridge.causal import feature_activations, pooled_of_builds
    from primary.model_dir import load_primary
    from primary.synthetic import SYNTHETIC_WEAPON_IDS, generate_builds
    from runkit.jsonio import read_json
    from runkit.run_dir import RunDir
    from sae_jax.concept_recovery import dense_best_f1_auroc, load_concepts
    from sae_jax.pair_recovery import best_pairs
    from sae_jax.sae_dir import load_sae

    run = read_json(workdir / "run.json", what="run file")
    if run.get("data_source", "synthetic") != "synthetic":
        raise SystemExit(f"{workdir} was trained on {run['data_source']} data: no planted "
                         "concepts to probe")
    primary, vocab, weapon_vocab = load_primary(RunDir(workdir).primary_dir())
    concepts = run_concepts(workdir)
    known = {int(g) for g in weapon_vocab.game_ids}
    weapons = [g for g in SYNTHETIC_WEAPON_IDS if g in known]
    builds = generate_builds(num_builds, PROBE_SEED, weapons=weapons, concepts=concepts)
    pooled = pooled_of_builds(primary, builds, vocab, weapon_vocab)
    f1 = probe_f1(pooled, np.asarray(builds.concepts, bool))
    sae_f1 = {}
    recovered = load_concepts(workdir / "concepts.json")
    if recovered is not None:
        sae_f1 = {row["concept"]: row["sae_f1"] for row in recovered["rows"]}
    rule = requirement_scores(builds, concepts)
    seen = requirement_scores(builds, concepts, visible=True)
    sae = load_sae(workdir / "sae")
    acts = feature_activations(sae, pooled, np.arange(sae.hidden_dim))
    labels = np.asarray(builds.concepts, bool)
    single = dense_best_f1_auroc(acts, labels)[0]  # (F, C)
    pairs = best_pairs(acts, labels, single)
    rows = [{"concept": name, "requirement_precision": rule[name][0],
             "requirement_f1": rule[name][2], "visible_requirement_precision": seen[name][0],
             "visible_requirement_f1": seen[name][2], "probe_f1": float(f),
             "sae_f1": sae_f1.get(name), "fresh_single_f1": float(single[:, c].max()),
             "fresh_pair_f1": pair and pair["f1"], "fresh_pair": pair and pair["features"]}
            for c, (name, f, pair) in enumerate(zip(builds.concept_names, f1, pairs))]
    return {"workdir": str(workdir), "builds": num_builds, "concepts": rows,
            "probe_recovered": int((f1 >= RECOVERED_F1).sum()),
            "sae_recovered": sum(1 for r in rows if (r["sae_f1"] or 0) >= RECOVERED_F1)
            if sae_f1 else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, type=Path, help="a synthetic SAE run directory")
    p.add_argument("--builds", type=int, default=20_000)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.builds < 100:
        p.error(f"--builds must be at least 100, got {args.builds}")
    if not (args.workdir / "run.json").is_file():
        p.error(f"--workdir: {args.workdir} is not an SAE run directory (no run.json)")
    t0 = time.perf_counter()
    log(f"probing {args.workdir} on {args.builds} fresh builds ...")
    out = {"machine": machine_info(), **measure(args.workdir, args.builds)}
    table("F1 per concept", ["concept", "requirement rule", "the rule as tokens show it",
                             "linear probe (held out)", "best SAE feature (run)",
                             "best SAE feature", "two SAE features both active"],
          [[r["concept"], f"{r['requirement_f1']:.3f}", f"{r['visible_requirement_f1']:.3f}",
            f"{r['probe_f1']:.3f}",
            "-" if r["sae_f1"] is None else f"{r['sae_f1']:.3f}",
            f"{r['fresh_single_f1']:.3f}",
            "-" if r["fresh_pair_f1"] is None else f"{r['fresh_pair_f1']:.3f}"]
           for r in out["concepts"]])
    log(f"recovered at F1 >= {RECOVERED_F1}: probe {out['probe_recovered']}, SAE "
        f"{out['sae_recovered']} of {len(out['concepts'])}")
    out["wall_s"] = time.perf_counter() - t0
    write_results(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
