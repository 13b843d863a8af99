"""TopK selection: the bisection k-th largest against XLA's sorting ``lax.top_k``.

    python benchmarks/topk_bench.py [--rounds=5] [--out=benchmarks/results/topk_select.json]

For a batch of 1024 pre-activations at 256 and 2048 features, k = 22: the per-row k-th
largest (TopK's mask) and the k x batch-th largest over the batch (BatchTopK's), each as
``sae_jax.kth_largest`` finds it and as ``lax.top_k`` does, timed in interleaved rounds.
Both must agree exactly before anything is timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.output import log, table, write_results  # noqa: E402
from benchmarks.timing import machine_info, time_interleaved  # noqa: E402

BATCH, K, WIDTHS = 1024, 22, (256, 2048)


def contenders(x, k: int) -> dict:
    import jax

    from sae_jax.kth_largest import kth_largest, kth_largest_per_row

    flat_n = k * x.shape[0]
    fns = {
        "row bisection": jax.jit(lambda x: kth_largest_per_row(x, k)),
        "row top_k": jax.jit(lambda x: jax.lax.top_k(x, k)[0][..., -1]),
        "batch bisection": jax.jit(lambda x: kth_largest(jax.nn.relu(x), flat_n)),
        "batch top_k": jax.jit(lambda x: jax.lax.top_k(jax.nn.relu(x).reshape(-1), flat_n)[0][-1]),
    }
    for kind in ("row", "batch"):
        a, b = (np.asarray(fns[f"{kind} {m}"](x)) for m in ("bisection", "top_k"))
        if not np.array_equal(a, b):
            raise SystemExit(f"{kind}: bisection and top_k disagree")
    return {name: (lambda f=f: f(x).block_until_ready()) for name, f in fns.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/topk_select.json")
    args = p.parse_args(argv)
    import jax

    t0 = time.perf_counter()
    results = {"machine": machine_info(), "batch": BATCH, "k": K, "widths": {}}
    rows = []
    for width in WIDTHS:
        x = jax.random.normal(jax.random.key(width), (BATCH, width))
        log(f"{BATCH} x {width}, k={K}: {args.rounds} interleaved rounds")
        times = time_interleaved(contenders(x, K), rounds=args.rounds)
        med = {name: float(np.median(t)) for name, t in times.items()}
        speedup = {kind: med[f"{kind} top_k"] / med[f"{kind} bisection"]
                   for kind in ("row", "batch")}
        results["widths"][str(width)] = {"median_ms": {n: 1e3 * v for n, v in med.items()},
                                         "top_k_over_bisection": speedup}
        rows += [[f"{width} {kind}", 1e3 * med[f"{kind} top_k"], 1e3 * med[f"{kind} bisection"],
                  f"{speedup[kind]:.1f}x"] for kind in ("row", "batch")]
    table("k-th largest, median ms", ["features / selection", "top_k", "bisection", "speed-up"],
          rows)
    results["wall_s"] = time.perf_counter() - t0
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
