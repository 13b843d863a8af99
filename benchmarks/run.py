"""Benchmarks: ours vs a PyTorch re-creation of the original, matmul roofline, scaling.

    python benchmarks/run.py --quick                 # under 5 minutes on a 2-core CPU
    python benchmarks/run.py --out benchmarks/results/full.json

Prints tables and writes one JSON with the headline ratios
(``sae_speedup_vs_original``, ``sae_roofline_fraction``,
``harvest_speedup_vs_original``), every raw figure and the machine description.
All timings exclude compilation; each figure is the best of several timed calls
(other processes on a shared machine only ever add time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Run as a script from anywhere: the repository root holds the packages.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from benchmarks import harvest_bench, loop_bench, sae_bench  # noqa: E402
from benchmarks.output import log, table, write_results  # noqa: E402
from benchmarks.timing import (  # noqa: E402
    load_average,
    machine_info,
    summarize,
    time_interleaved,
)

# The headline shapes: the seed's SAE (512 -> 2048) at the original's batch of 1024.
# Harvest and loop: the demo run's training examples; the original's primary batches are
# the demo's 256 rows and the full-size run's 32 (configs/splatnlp.flags).
HEADLINE = dict(d_in=512, d_sae=2048, batch=1024, matmul_n=2048, buffer_capacity=819_200,
                full_size_harvest=True, example_builds=10_000, demo_batch=256, full_batch=32,
                loop_flags="splatnlp.flags")


def _plan(mode: str) -> dict:
    if mode == "quick":
        return dict(HEADLINE, matmul_reps=3, buffer_rows=100_000, sae_rounds=6, torch_k=8,
                    jax_k=16, k_sweep=(), demo_rounds=3, full_rounds=2, demo_rows=2048,
                    full_rows=256, loop_batches=8, loop_rounds=2,
                    d_sae_sweep=(2048, 8192),
                    batch_sweep=(256, 4096), sweep_steps=4, sweep_calls=2,
                    torch_sweep=False)
    if mode == "smoke":  # seconds: exercises every section at toy sizes
        return dict(d_in=32, d_sae=128, batch=64, matmul_n=128, buffer_capacity=4096,
                    full_size_harvest=False, matmul_reps=1,
                    buffer_rows=1000, sae_rounds=2, torch_k=2, jax_k=2, k_sweep=(1,),
                    demo_rounds=1, full_rounds=1, example_builds=300, demo_rows=64,
                    demo_batch=16, full_rows=32, full_batch=16, loop_flags="demo_relu_l1.flags",
                    loop_batches=2, loop_rounds=1,
                    d_sae_sweep=(64, 128), batch_sweep=(32, 64), sweep_steps=2, sweep_calls=1,
                    torch_sweep=True)
    return dict(HEADLINE, matmul_reps=5, buffer_rows=100_000, sae_rounds=15, torch_k=16,
                jax_k=32, k_sweep=(1, 8, 32), demo_rounds=5, full_rounds=3, demo_rows=4096,
                full_rows=512, loop_batches=16, loop_rounds=3,
                d_sae_sweep=(2048, 4096, 8192, 16384, 24576),
                batch_sweep=(256, 512, 1024, 2048, 4096), sweep_steps=4, sweep_calls=3,
                torch_sweep=True)


# The headline contenders, timed interleaved: name -> (label, FLOPs label, matmul rate basis).
SAE_CONTENDERS = {
    "original_torch": ("original loop (torch)", "14BDH", "float32"),
    "ours_fixed": ("ours, fixed", "10BDH", "float32"),
    "ours_original_behaviour": ("ours, original behaviour", "8BDH", "float32"),
    "ours_fixed_bf16": ("ours, fixed, bfloat16 matmuls", "10BDH", "bfloat16"),
    "matmul_chain": ("bare matmul chain", "10BDH", "float32"),
}


def _sae_contenders(plan: dict, data: np.ndarray, have_torch: bool) -> dict:
    """name -> (call, FLOPs per unit, units per call) for the interleaved rounds; a unit is
    one SAE step, or one square matmul."""
    d_in, b, h, k = plan["d_in"], plan["batch"], plan["d_sae"], plan["jax_k"]
    out = {}
    if have_torch:
        call, flops = sae_bench.torch_original_call(d_in, h, b, data,
                                                    steps_per_call=plan["torch_k"])
        out["original_torch"] = (call, flops, plan["torch_k"])
    for name, kwargs in (("ours_fixed", {}),
                         ("ours_original_behaviour", {"original_behaviour": True}),
                         ("ours_fixed_bf16", {"compute_dtype": "bfloat16"})):
        call, flops = sae_bench.jax_sae_call(d_in, h, b, data, steps_per_call=k, **kwargs)
        out[name] = (call, flops, k)
    call, flops = sae_bench.matmul_chain_call(d_in, h, b, steps_per_call=k)
    out["matmul_chain"] = (call, flops, k)
    reps = plan["matmul_reps"]
    for dtype in ("float32", "bfloat16"):
        call, flops = sae_bench.matmul_call(plan["matmul_n"], dtype, reps=reps)
        out[f"matmul_{dtype}"] = (call, flops // reps, reps)
    return out


def run_sae(plan: dict, have_torch: bool) -> dict:
    """Every headline contender and the square-matmul rates, timed in interleaved rounds.

    Ratios are taken per round (both sides under the same load) and summarised by their
    median; best-of-rounds figures are kept as well."""
    d_in, b, h = plan["d_in"], plan["batch"], plan["d_sae"]
    data = sae_bench.random_activations(plan["buffer_rows"], d_in)
    contenders = _sae_contenders(plan, data, have_torch)
    log(f"SAE: {len(contenders)} contenders, {plan['sae_rounds']} interleaved rounds "
         f"({', '.join(contenders)})")
    times = time_interleaved({n: c[0] for n, c in contenders.items()},
                             rounds=plan["sae_rounds"], warmup=1)
    per_unit = {n: np.array(times[n]) / c[2] for n, c in contenders.items()}  # s, per round
    flops = {n: c[1] for n, c in contenders.items()}
    rate = {n: flops[n] / per_unit[n] for n in contenders}  # FLOP/s, per round
    out = {"d_in": d_in, "d_sae": h, "batch": b, "buffer_rows": plan["buffer_rows"],
           "step_source": sae_bench.STEP_SOURCE, "rounds": plan["sae_rounds"],
           "matmul_n": plan["matmul_n"]}
    for dtype in ("float32", "bfloat16"):
        r = rate[f"matmul_{dtype}"]
        out[f"matmul_{dtype}"] = {"gflops_best": float(r.max()) / 1e9,
                                  "gflops_median": float(np.median(r)) / 1e9,
                                  "gflops_all": (r / 1e9).tolist()}
    for name, (_, _, basis) in SAE_CONTENDERS.items():
        if name not in contenders:
            continue
        entry = sae_bench.throughput(summarize(list(per_unit[name])), b, flops[name])
        entry["steps_per_call"] = contenders[name][2]
        # Roofline: this contender's FLOP rate over the square matmul's rate in its dtype,
        # per round; the median of those, and best over best.
        fractions = rate[name] / rate[f"matmul_{basis}"]
        entry["roofline_basis"] = f"XLA {plan['matmul_n']}^3 matmul, {basis}"
        entry["roofline_fraction"] = float(np.median(fractions))
        entry["roofline_fraction_best_over_best"] = float(
            rate[name].max() / rate[f"matmul_{basis}"].max())
        entry["roofline_fraction_all"] = fractions.tolist()
        if "original_torch" in contenders and name != "original_torch":
            speedups = per_unit["original_torch"] / per_unit[name]
            entry["speedup_vs_original"] = float(np.median(speedups))
            entry["speedup_vs_original_best_over_best"] = float(
                per_unit["original_torch"].min() / per_unit[name].min())
            entry["speedup_vs_original_all"] = speedups.tolist()
        out[name] = entry
    out["ours_fixed_k_sweep"] = {}
    xla = out["matmul_float32"]["gflops_best"]
    for k in plan["k_sweep"]:
        log(f"SAE: ours, fixed mode, K={k}")
        r = sae_bench.bench_jax_sae(d_in, h, b, data, steps_per_call=k, calls=max(2, 64 // k))
        r["roofline_fraction"] = r["gflops_per_s"] / xla
        out["ours_fixed_k_sweep"][str(k)] = r
    return out


def run_harvest(plan: dict) -> dict:
    """Harvesting the demo's training examples: ours in length groups (the training loop's
    code) vs the original's forward over its padded batches, demo and full-size primary."""
    examples, vocab, weapon_vocab = harvest_bench.demo_examples(plan["example_builds"])
    demo_cfg, demo_source = harvest_bench.demo_config(
        os.path.join(REPO_ROOT, "primary", "configs", "primary_demo.flags"))
    out = {}
    sizes = [("demo", demo_cfg, plan["demo_rows"], plan["demo_batch"], plan["demo_rounds"])]
    if plan["full_size_harvest"]:
        sizes.append(("full_size", harvest_bench.FULL_SIZE, plan["full_rows"],
                      plan["full_batch"], plan["full_rounds"]))
    for name, cfg, rows, batch, rounds in sizes:
        log(f"harvest: {name} primary, {rows} training examples, original batches of {batch}")
        out[name] = harvest_bench.bench_example_harvest(
            harvest_bench.with_vocab(cfg, vocab, weapon_vocab), examples, rows=rows,
            original_batch=batch, rounds=rounds)
    out["demo"]["config_source"] = demo_source
    return out


def run_loop(plan: dict, have_torch: bool) -> dict:
    """The whole loop (harvest + buffer + SAE steps + host work) at the original's full-size
    settings (configs/splatnlp.flags), ours vs the original's, a short run."""
    examples, vocab, weapon_vocab = harvest_bench.demo_examples(plan["example_builds"])
    cfg = loop_bench.full_size_settings(os.path.join(REPO_ROOT, "configs", plan["loop_flags"]))
    primary = harvest_bench.FULL_SIZE if plan["full_size_harvest"] else \
        harvest_bench.demo_config(
            os.path.join(REPO_ROOT, "primary", "configs", "primary_demo.flags"))[0]
    log(f"loop: {plan['loop_batches']} primary batches of {cfg.primary_batch_size}, "
        f"{cfg.sae_steps_per_primary_step} SAE steps each, {plan['loop_rounds']} rounds")
    out = loop_bench.bench_loop(harvest_bench.with_vocab(primary, vocab, weapon_vocab), cfg,
                                examples, num_batches=plan["loop_batches"],
                                rounds=plan["loop_rounds"], with_torch=have_torch)
    out["settings"] = plan["loop_flags"]
    return out


def run_scaling(plan: dict, xla_gflops: float, have_torch: bool) -> dict:
    d_in, batch = plan["d_in"], plan["batch"]
    data = sae_bench.random_activations(plan["buffer_rows"], d_in)
    by_d_sae, by_batch = {}, {}
    for h in plan["d_sae_sweep"]:
        log(f"scaling: d_sae {h}")
        r = sae_bench.bench_jax_sae(d_in, h, batch, data,
                                    steps_per_call=plan["sweep_steps"], calls=plan["sweep_calls"])
        r["roofline_fraction"] = r["gflops_per_s"] / xla_gflops
        if have_torch and plan["torch_sweep"]:
            t = sae_bench.bench_torch_original(d_in, h, batch, data, steps=3, warmup=1)
            r["original_torch_activations_per_s"] = t["activations_per_s"]
            r["speedup_vs_original"] = r["activations_per_s"] / t["activations_per_s"]
        by_d_sae[str(h)] = r
    for b in plan["batch_sweep"]:
        log(f"scaling: batch {b}")
        r = sae_bench.bench_jax_sae(d_in, plan["d_sae"], b, data,
                                    steps_per_call=plan["sweep_steps"], calls=plan["sweep_calls"])
        r["roofline_fraction"] = r["gflops_per_s"] / xla_gflops
        by_batch[str(b)] = r
    return {"by_d_sae": by_d_sae, "by_batch": by_batch,
            "buffer_memory": buffer_memory(plan["buffer_capacity"], d_in)}


def buffer_memory(capacity: int, dim: int) -> dict:
    """Bytes of the activation buffer in float32 and bfloat16, allocated where it fits."""
    from sae_jax.buffer import create_buffer

    out = {"capacity": capacity, "dim": dim}
    for dtype, width in (("float32", 4), ("bfloat16", 2)):
        entry = {"bytes_computed": capacity * dim * width}
        try:
            buf = create_buffer(capacity, dim, dtype)
            buf.data.block_until_ready()
            entry["bytes_allocated"] = int(buf.data.nbytes)
            del buf
        except Exception as e:  # out of memory on a small device: report, do not fail
            entry["allocation_error"] = f"{type(e).__name__}: {e}"[:200]
        out[dtype] = entry
    return out


def _sae_headline(sae: dict) -> dict:
    ours = sae["ours_fixed"]
    head = {"sae_roofline_fraction": ours["roofline_fraction"],
            "sae_fraction_of_matmul_chain": float(np.median(
                np.array(ours["roofline_fraction_all"])
                / np.array(sae["matmul_chain"]["roofline_fraction_all"]))),
            "sae_bf16_roofline_fraction": sae["ours_fixed_bf16"]["roofline_fraction"],
            "sae_step_source": sae["step_source"]}
    if "speedup_vs_original" in ours:
        head["sae_speedup_vs_original"] = ours["speedup_vs_original"]
        head["sae_original_behaviour_speedup_vs_original"] = (
            sae["ours_original_behaviour"]["speedup_vs_original"])
        head["sae_bf16_speedup_vs_original"] = sae["ours_fixed_bf16"]["speedup_vs_original"]
    return head


def headline(results: dict) -> dict:
    """The issue's ratios: medians over interleaved rounds of per-round ratios."""
    head = {}
    if "sae" in results:
        head.update(_sae_headline(results["sae"]))
    harvest = results.get("harvest", {})
    for basis in ("full_size", "demo"):
        if "speedup" in harvest.get(basis, {}):
            head["harvest_speedup_vs_original"] = harvest[basis]["speedup"]
            head["harvest_speedup_basis"] = basis
            break
    for basis in ("full_size", "demo"):
        if "speedup" in harvest.get(basis, {}):
            head[f"harvest_speedup_{basis}"] = harvest[basis]["speedup"]
    loop = results.get("loop", {})
    if "speedup" in loop:
        head["loop_speedup_vs_original"] = loop["speedup"]
        head["loop_sae_steps_per_s"] = loop["ours_sae_steps_per_s"]
        head["loop_original_sae_steps_per_s"] = loop["original_sae_steps_per_s"]
    return head


def print_tables(results: dict) -> None:
    if "sae" in results:
        _print_sae_tables(results["matmul"], results["sae"])
    _print_other_tables(results)


def _print_sae_tables(mm: dict, sae: dict) -> None:
    table(f"matmul {mm['n']}^3 (GFLOP/s; XLA rows: best / median of the interleaved rounds)",
           ["", "best", "median"],
           [["XLA float32", sae["matmul_float32"]["gflops_best"],
             sae["matmul_float32"]["gflops_median"]],
            ["XLA bfloat16 operands, float32 sums", sae["matmul_bfloat16"]["gflops_best"],
             sae["matmul_bfloat16"]["gflops_median"]]]
           + ([["torch float32 (timed alone)", mm["torch_gflops"], mm["torch_gflops_median"]]]
              if "torch_gflops" in mm else []))
    rows = []
    for name, (label, work, basis) in SAE_CONTENDERS.items():
        if name in sae:
            r = sae[name]
            rows.append([f"{label} ({work})", r["step_ms_best"], r["step_ms_median"],
                         r["activations_per_s"], f"{100 * r['roofline_fraction']:.0f}% {basis}",
                         f"{r['speedup_vs_original']:.2f}x" if "speedup_vs_original" in r
                         else "-"])
    for k, r in sae.get("ours_fixed_k_sweep", {}).items():
        rows.append([f"ours fixed, K={k} (timed alone)", r["step_ms_best"], r["step_ms_median"],
                     r["activations_per_s"], f"{100 * r['roofline_fraction']:.0f}% float32",
                     "-"])
    table(f"SAE training {sae['d_in']}->{sae['d_sae']}, batch {sae['batch']}, "
           f"{sae['rounds']} interleaved rounds (step: {sae['step_source']}; fractions and "
           "speedups: medians of per-round ratios)",
           ["", "ms/step best", "median", "activations/s", "of matmul", "vs original"], rows)


def _print_other_tables(results: dict) -> None:
    sae = results.get("sae", results["plan"])  # the plan has the same batch and d_sae
    if "harvest" in results:
        rows = []
        for basis, r in results["harvest"].items():
            pad = r["padding"]
            rows.append([f"{basis} ({r['params'] / 1e6:.1f}M params)", r["original_batch"],
                         r["ours_builds_per_s"], r.get("torch_builds_per_s", "-"),
                         f"{r['speedup']:.2f}x" if "speedup" in r else "-",
                         f"{pad['ours_token_positions']:,} / {pad['original_token_positions']:,}"
                         f" / {pad['real_tokens']:,}",
                         f"{r['pooled_max_abs_diff']:.1e}" if "pooled_max_abs_diff" in r else "-"])
        table("harvest of training examples (builds/s, best of interleaved rounds; speedup: "
              "median of per-round ratios; tokens: ours / original / real)",
              ["primary", "orig. batch", "ours", "original", "speedup", "token positions",
               "pooled diff"], rows)
    if "loop" in results:
        r = results["loop"]
        rows = [["ours", r["ours_s_best"], r["ours_sae_steps_per_s"], r["ours_builds_per_s"],
                 f"{r['speedup']:.2f}x" if "speedup" in r else "-"]]
        if "original_s_best" in r:
            rows.append(["original", r["original_s_best"], r["original_sae_steps_per_s"],
                         r["num_batches"] * r["primary_batch"] / r["original_s_best"], "-"])
        table(f"whole loop ({r['settings']}: {r['num_batches']} primary batches of "
              f"{r['primary_batch']}, {r['sae_steps']} SAE steps of {r['sae_batch']}, "
              f"{r['d_sae']} features; best of {r['rounds']} rounds)",
              ["", "seconds", "SAE steps/s", "builds/s", "vs original"], rows)
    if "scaling" in results:
        sc = results["scaling"]
        rows = [[h, r["step_ms_best"], r["activations_per_s"],
                 f"{100 * r['roofline_fraction']:.0f}%",
                 f"{r['speedup_vs_original']:.2f}x" if "speedup_vs_original" in r else "-"]
                for h, r in sc["by_d_sae"].items()]
        table(f"scaling: dictionary size (batch {sae['batch']}, fixed mode)",
               ["features", "ms/step", "activations/s", "of XLA matmul", "vs original"], rows)
        rows = [[b, r["step_ms_best"], r["activations_per_s"],
                 f"{100 * r['roofline_fraction']:.0f}%"] for b, r in sc["by_batch"].items()]
        table(f"scaling: batch size ({sae['d_sae']} features, fixed mode)",
               ["batch", "ms/step", "activations/s", "of XLA matmul"], rows)
        mem = sc["buffer_memory"]
        rows = [[dt, f"{mem[dt]['bytes_computed'] / 1e9:.2f} GB",
                 f"{mem[dt]['bytes_allocated'] / 1e9:.2f} GB" if "bytes_allocated" in mem[dt]
                 else mem[dt].get("allocation_error", "-")] for dt in ("float32", "bfloat16")]
        table(f"activation buffer {mem['capacity']:,} x {mem['dim']}",
               ["dtype", "computed", "allocated"], rows)
    head = results["headline"]
    print("\nheadline")
    for k, v in head.items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sweeps, under 5 minutes")
    parser.add_argument("--smoke", action="store_true",
                        help="toy sizes, seconds: checks the harness, not the machine")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results",
                                                      "latest.json"))
    parser.add_argument("--torch_threads", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma list of: sae, harvest, loop, scaling")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    unknown = skip - {"sae", "harvest", "loop", "scaling"}
    if unknown:
        parser.error(f"--skip: unknown section(s) {sorted(unknown)}; choose sae, harvest, "
                     "loop, scaling")

    try:
        import torch

        torch.set_num_threads(args.torch_threads)
        have_torch = True
    except ImportError:
        have_torch = False
        print("torch not installed (pip install -r benchmarks/requirements.txt): "
              "measuring ours only", file=sys.stderr)
    t_start = time.perf_counter()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    plan = _plan(mode)
    results = {"mode": mode, "machine": machine_info(),
               "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()}}
    if have_torch:
        from benchmarks.fidelity import check_against_original

        log("checking the torch re-creation against the original's fixture outputs")
        results["torch_recreation_check"] = check_against_original()
    log("matmul: XLA and torch")
    results["matmul"] = sae_bench.bench_matmul(plan["matmul_n"], reps=plan["matmul_reps"])
    if "sae" not in skip:
        results["sae"] = run_sae(plan, have_torch)
    # The scaling sweep's fractions are of the best float32 matmul rate seen in this run.
    xla = max(results["matmul"]["xla_gflops"], results.get("sae", {}).get(
        "matmul_float32", {}).get("gflops_best", 0.0))
    if "harvest" not in skip:
        results["harvest"] = run_harvest(plan)
    if "loop" not in skip:
        results["loop"] = run_loop(plan, have_torch)
    if "scaling" not in skip:
        results["scaling"] = run_scaling(plan, xla, have_torch)
    results["headline"] = headline(results)
    results["wall_s"] = time.perf_counter() - t_start
    results["machine"]["load_average_at_end"] = load_average()
    print_tables(results)
    write_results(results, args.out)
    return results


if __name__ == "__main__":
    main()
