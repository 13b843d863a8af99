"""How fast could any full-size harvest run on this machine? FLOP rates against the matmul peak.

The full-size primary (512 wide, 3 layers, 32 inducing points and seeds) spends most of its
forward on per-set work that no padding removal touches: each layer runs five blocks on
the 32 inducing points or seeds of every set, whatever the set's length. This script
times one group of sets through our jitted forward and through the original's PyTorch
forward (``benchmarks.original_torch``, same weights), both at the same token width, and a
float32 matmul of the same row count (sets x 32 rows, 512 -> 2048: the forward's largest
product), in interleaved rounds. FLOPs are XLA's count for our forward (the same
arithmetic as the original's). If both forwards already run near the matmul's rate, a
harvest ratio over the original is capped at (matmul rate / original's rate) for equal
FLOPs: the padding the original does and we skip is the only other lever.

    python benchmarks/harvest_ceiling.py [--sets=64 --width=8 --rounds=5]
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

RESULTS = Path(__file__).resolve().parent / "results" / "harvest_ceiling.json"


def measure(sets: int, width: int, rounds: int) -> dict:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from benchmarks.harvest_bench import FULL_SIZE, random_builds, torch_model_like
    from primary.model import create_model

    cfg = FULL_SIZE
    model = create_model(cfg, seed=0)
    tokens, weapons, mask = random_builds(cfg, sets, width, seed=1)
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, t, w, m: nnx.merge(graphdef, s).pooled(t, w, m))
    args = (state, jnp.asarray(tokens), jnp.asarray(weapons), jnp.asarray(mask))
    cost = forward.lower(*args).compile().cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])

    torch_model = torch_model_like(model, cfg)
    t_args = (torch.from_numpy(tokens).long(), torch.from_numpy(weapons).long(),
              torch.from_numpy(mask))
    rows = sets * cfg.num_inducing_points
    x, w = jnp.ones((rows, cfg.hidden_dim)), jnp.ones((cfg.hidden_dim, 4 * cfg.hidden_dim))
    matmul = jax.jit(lambda a, b: a @ b)
    xt, wt = torch.ones(rows, cfg.hidden_dim), torch.ones(cfg.hidden_dim, 4 * cfg.hidden_dim)
    matmul_flops = 2.0 * rows * cfg.hidden_dim * 4 * cfg.hidden_dim
    reps = 20  # matmuls per timed call: each takes milliseconds

    def ours():
        forward(*args).block_until_ready()

    def original():
        with torch.inference_mode():
            torch_model.pooled(*t_args)

    def xla_matmul():
        for _ in range(reps):
            out = matmul(x, w)
        out.block_until_ready()

    def torch_matmul():
        for _ in range(reps):
            xt @ wt

    log(f"{sets} sets of width {width}, full-size primary; {rounds} interleaved rounds ...")
    times = time_interleaved({"ours": ours, "original": original, "xla_matmul": xla_matmul,
                              "torch_matmul": torch_matmul}, rounds=rounds, warmup=1)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rate = {"ours": flops / med["ours"], "original": flops / med["original"],
            "xla_matmul": reps * matmul_flops / med["xla_matmul"],
            "torch_matmul": reps * matmul_flops / med["torch_matmul"]}
    peak = max(rate["xla_matmul"], rate["torch_matmul"])
    return {
        "sets": sets, "width": width, "rounds": rounds, "forward_gflop": flops / 1e9,
        "gflop_per_set": flops / sets / 1e9, "seconds_median": med,
        "gflops": {k: v / 1e9 for k, v in rate.items()},
        "ours_fraction_of_matmul_peak": rate["ours"] / peak,
        "original_fraction_of_matmul_peak": rate["original"] / peak,
        "speedup_vs_original": med["original"] / med["ours"],
        "ceiling_at_equal_flops": peak / rate["original"],
        "torch_threads": torch.get_num_threads(),
        "times": times,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", type=int, default=64)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    for name in ("sets", "width", "rounds"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    t0 = time.perf_counter()
    out = {"machine": machine_info()}
    out.update(measure(args.sets, args.width, args.rounds))
    g = out["gflops"]
    table("full-size forward and the matmul peak (medians)", ["", "GFLOP/s"],
          [[k, float(v)] for k, v in g.items()])
    log(f"ours / original: {out['speedup_vs_original']:.2f}x; ours at "
        f"{out['ours_fraction_of_matmul_peak']:.2f} of the matmul peak, the original at "
        f"{out['original_fraction_of_matmul_peak']:.2f}: at equal FLOPs no forward can beat "
        f"the original by more than {out['ceiling_at_equal_flops']:.2f}x here")
    out["machine_end"] = machine_info()
    out["wall_s"] = time.perf_counter() - t0
    write_results(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
