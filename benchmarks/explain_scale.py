"""Explanations at scale: rules, held-out scores, causal checks and rung curves for a large SAE.

Times ``apps.analysis.explanations.compute_explanations`` (everything ``explanations.json``
holds) for an SAE of ``--features`` features over ``--builds`` synthetic builds, and
reports its wall time and the process's peak resident memory. Each size runs in a fresh
process, so the peak is that size's own.

The primary model is the demo's shape (one layer, 64 wide) at random initialisation, so
the SAE reads 64-d pooled vectors (the SAE's input is the primary's width): a
512-wide primary forwards ~70 builds/s on this shared CPU, and the full-size one ~36, so
the primary's forward is not what is measured here. It enters twice: the pooled vectors of
the builds (computed before the clock starts, reported apart) and the causal check's
edited builds (inside the clock, capped by ``CausalConfig.max_builds``, 32,768). The SAE's
encoder is random with each feature's bias set so that it fires on a fraction of builds
drawn log-uniformly from 0.5% to 10% (a trained SAE's features are sparse like that); its
rules are noise, the work is the same.

    python -m benchmarks.explain_scale                        # 3 sizes up to 24,576 x 100,000
    python -m benchmarks.explain_scale --sizes=2048x10000     # one size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.output import feature_build_sizes

RESULTS = Path(__file__).resolve().parent / "results" / "explain_scale.json"
DEFAULT_SIZES = ("2048x10000", "8192x30000", "24576x100000")


def run_one(features: int, builds: int, seed: int = 0) -> dict:
    """One size, in this process: returns times (s) and peak memory (GiB)."""
    import jax
    import numpy as np

    from apps.analysis.explanations import compute_explanations
    from bridge.causal import pooled_of_builds
    from primary.model import PrimaryConfig, create_model
    from primary.synthetic import generate_builds
    from primary.vocab import Vocab, WeaponVocab
    from sae_jax.model import SAEConfig, create_sae

    t0 = time.perf_counter()
    b = generate_builds(builds, seed=seed)
    vocab = Vocab.canonical()
    weapon_vocab = WeaponVocab.from_game_ids(b.weapons)
    cfg = PrimaryConfig(vocab_size=len(vocab), weapon_vocab_size=len(weapon_vocab),
                        embedding_dim=32, hidden_dim=64, num_layers=1, num_heads=4,
                        num_inducing_points=8, pad_token_id=vocab.pad_id)
    primary = create_model(cfg, seed=seed)
    pooled = pooled_of_builds(primary, b, vocab, weapon_vocab, 1024)
    t_pooled = time.perf_counter() - t0

    sae = create_sae(SAEConfig(input_dim=64, expansion_factor=features / 64), seed=seed)
    params = sae.params()
    rng = np.random.default_rng(seed)
    sample = pooled[rng.choice(len(pooled), min(len(pooled), 5000), replace=False)]
    pre = sample @ np.asarray(params["W_enc"]) - np.asarray(params["b_dec"] @ params["W_enc"])
    rate = np.exp(rng.uniform(np.log(0.005), np.log(0.10), features))
    pre.sort(axis=0)  # each feature's bias: minus its (1 - rate) quantile
    params["b_enc"] = jax.numpy.asarray(
        -pre[((1 - rate) * (len(pre) - 1)).astype(int), np.arange(features)])
    sae.set_params(params)
    del pre

    t1 = time.perf_counter()
    doc = compute_explanations(primary, vocab, weapon_vocab, sae, b, pooled,
                               curve_features=range(64), min_builds=0)  # these builds only
    t_explain = time.perf_counter() - t1
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    s = doc["summary"]
    return {"features": features, "builds": builds, "seconds": round(t_explain, 1),
            "stages": s["seconds"], "pooled_seconds": round(t_pooled, 1),
            "peak_gib": round(peak_gib, 2), "num_conditions": doc["num_conditions"],
            "search_rows": doc["search_rows"], "explained": s["explained"],
            "causal_checked": s["causal_checked"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                   help="comma-separated FEATURESxBUILDS")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process's size
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.one:
        f, n = (int(x) for x in args.one.split("x"))
        print(json.dumps(run_one(f, n)))
        return 0
    rows = []
    try:
        sizes = feature_build_sizes(args.sizes)
    except ValueError as e:
        p.error(str(e))
    for f, n in sizes:
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        out = subprocess.run([sys.executable, "-m", "benchmarks.explain_scale",
                              f"--one={f}x{n}"], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{f:>6} features x {n:>7} builds: {row['seconds']:>7.1f} s "
              f"(rules {row['stages']['rules']} s, causal {row['stages']['causal']} s), "
              f"peak {row['peak_gib']:.2f} GiB; pooled vectors {row['pooled_seconds']} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "cpus": os.cpu_count(),
                                          "load_average": os.getloadavg(),
                                          "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                time.gmtime())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
