"""Sweeps: a vmapped stack of SAEs against the same SAEs trained one at a time.

    python benchmarks/sweep_bench.py step [--rounds=5 --steps_per_call=4 --architecture=relu_l1]
                                          [--what_if=two_pass_counts]
    python benchmarks/sweep_bench.py chain [--rounds=5 --steps_per_call=4]
    python benchmarks/sweep_bench.py demo --sweep_dir=W [--one_by_one=per_stack|all]

``step``: 8 members at 512 -> 2048, batch 1024 (relu_l1 unless ``--architecture``
names another; topk-family members keep k=32, the default, and matryoshka's groups
double from prefix to prefix), as one stacked call
(``sae_jax.stack.make_stacked_train_steps``) against eight single-member calls
(``sae_jax.step.make_train_steps``) and a 2048^3 float32 matmul, timed in interleaved
rounds (every contender under the same slice of a shared machine's load). Reported per
round and as medians: stacked time / eight singles' time (target <= 1.15), and the
stack's FLOP rate (8 x 10BDH per step, see ``benchmarks/sae_bench.py``) over the matmul's
(target >= 0.8), the roofline measured as ``benchmarks/run.py`` measures it.

``chain``: the five matmuls of a step alone for the same 8 members: 8 single calls, one
vmapped call (every dot with a batch dimension, as in the stack) and 8 vmapped calls of
one member each (a batch dimension of 1: the singles' work in the stack's form), each as a
fraction of the matmul roofline; it separates what the batched form of the dots costs
from what the rest of the step costs.

``demo``: the wall time of a finished sweep (``W/sweep.json``'s timing: the stacked
training loop plus evaluating and analyzing every member) against ``sae_jax.train`` runs
of its members one by one on the same primary (each: harvest, train, evaluate, analyze).
``--one_by_one=per_stack`` times one member of each stack and counts it for every member
of that stack (said so in the output); ``all`` times every member.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.output import log, table, write_results  # noqa: E402
from benchmarks.profile_sae_step import STEP_VARIANTS  # noqa: E402
from benchmarks.sae_bench import random_activations, sae_step_flops  # noqa: E402
from benchmarks.timing import machine_info, time_interleaved  # noqa: E402
from sae_jax.architectures import ARCHITECTURES, get_architecture  # noqa: E402

D_IN, D_SAE, BATCH, MEMBERS = 512, 2048, 1024, 8


def bench_step(rounds: int, steps_per_call: int, matmul_n: int = 2048, *,
               members: int = MEMBERS, d_in: int = D_IN, d_sae: int = D_SAE,
               batch: int = BATCH, buffer_rows: int = 16_384,
               architecture: str = "relu_l1", what_if: str | None = None) -> dict:
    """``members`` SAEs of ``architecture``, ``d_in -> d_sae`` at ``batch``: one stacked call
    against ``members`` single calls and a ``matmul_n``^3 float32 matmul, interleaved
    rounds. Members differ in their seed and in a dynamic setting: the weight of the
    architecture's sparsity penalty where it has one (relu_l1: the L1 coefficient; jumprelu:
    the L0 coefficient, the learning rate before 2026-12-07), else the learning rate; the
    cost of a step does not depend on either. ``what_if`` names a
    ``benchmarks/profile_sae_step.py`` step variant (relu_l1): the stack built with it
    swapped into ``sae_jax.losses`` is timed in the same rounds."""
    import jax

    from benchmarks.sae_bench import matmul_call
    from sae_jax.buffer import create_buffer, push
    from sae_jax.config import SAETrainConfig
    from sae_jax.model import create_sae
    from sae_jax.stack import make_stacked_train_steps, stack_settings, stack_states
    from sae_jax.step import init_train_state, make_train_steps

    total = 100_000
    arch = get_architecture(architecture)
    settings = dict(expansion_factor=d_sae / d_in, lr=1e-4, sae_batch_size=batch,
                    resample_steps=(), buffer_size=max(buffer_rows, batch),
                    architecture=architecture)
    base = SAETrainConfig(**{**settings, **arch.required_settings(d_sae)})
    varied = arch.penalty_setting or "lr"
    cfgs = [dataclasses.replace(base, seed=i, **{varied: getattr(base, varied) * (1 + i)})
            for i in range(members)]
    buf = push(create_buffer(base.buffer_size, d_in),
               jax.numpy.asarray(random_activations(base.buffer_size, d_in)))
    key = jax.random.key(0)

    def fresh(cfg):
        return init_train_state(create_sae(cfg.sae_config(d_in), seed=cfg.seed), cfg, total)

    holder = {"stack": stack_states([fresh(c) for c in cfgs]),
              "singles": [fresh(c) for c in cfgs]}
    settings = stack_settings(cfgs)
    stacked_fn = make_stacked_train_steps(base, total, steps_per_call)
    contenders = {}
    if what_if is not None:
        from benchmarks.profile_sae_step import swapped_in_losses

        with swapped_in_losses(STEP_VARIANTS[what_if]):
            # A function of its own, compiled (at its first call) with the variant swapped in.
            variant_fn = make_stacked_train_steps(base, total, steps_per_call)
            holder["variant"] = stack_states([fresh(c) for c in cfgs])
            holder["variant"], _ = variant_fn(holder["variant"], settings, buf, key)  # compile

        def variant():
            holder["variant"], m = variant_fn(holder["variant"], settings, buf, key)
            jax.block_until_ready(m)

        contenders[f"stacked_{what_if}"] = variant
    # One compiled single step serves every member: its cost does not depend on the values.
    single_fn = make_train_steps(base, total, steps_per_call)

    def stacked():
        holder["stack"], m = stacked_fn(holder["stack"], settings, buf, key)
        jax.block_until_ready(m)

    def singles():
        out = []
        for i in range(members):
            holder["singles"][i], m = single_fn(holder["singles"][i], buf, key)
            out.append(m)
        jax.block_until_ready(out)

    matmul, matmul_flops = matmul_call(matmul_n, reps=3)
    log(f"step: {members} members {d_in} -> {d_sae}, batch {batch}, {steps_per_call} steps per "
        f"call, {rounds} interleaved rounds (compiling first) ...")
    times = time_interleaved({"stacked": stacked, "singles": singles, "matmul": matmul,
                              **contenders}, rounds=rounds, warmup=1)
    t_stack, t_singles, t_mm = (np.asarray(times[k]) for k in ("stacked", "singles", "matmul"))
    step_flops = members * sae_step_flops(batch, d_in, d_sae) * steps_per_call
    ratio = t_stack / t_singles
    roofline = (step_flops / t_stack) / (matmul_flops / t_mm)
    out = {
        "architecture": architecture, "members": members, "d_in": d_in, "d_sae": d_sae,
        "batch": batch, "steps_per_call": steps_per_call, "rounds": rounds,
        "stacked_ms_per_step_median": 1e3 * float(np.median(t_stack)) / steps_per_call,
        "singles_ms_per_step_median": 1e3 * float(np.median(t_singles)) / steps_per_call,
        "stacked_over_singles_median": float(np.median(ratio)),
        "stacked_over_singles_all": ratio.tolist(),
        "matmul_gflops_median": float(np.median(matmul_flops / t_mm)) / 1e9,
        "stacked_gflops_median": float(np.median(step_flops / t_stack)) / 1e9,
        "roofline_fraction_median": float(np.median(roofline)),
        "roofline_fraction_all": roofline.tolist(),
        "targets": {"stacked_over_singles": 1.15, "roofline_fraction": 0.8},
    }
    for name in contenders:
        t_variant = np.asarray(times[name])
        out[f"{name}_ms_per_step_median"] = 1e3 * float(np.median(t_variant)) / steps_per_call
        out[f"stacked_over_{name}_median"] = float(np.median(t_stack / t_variant))
        out[f"{name}_roofline_fraction_median"] = float(np.median(
            (step_flops / t_variant) / (matmul_flops / t_mm)))
        log(f"stacked / {name}: {out[f'stacked_over_{name}_median']:.3f} (median of per-round "
            f"ratios); {name} roofline fraction {out[f'{name}_roofline_fraction_median']:.3f}")
    table(f"stacked step vs {members} single steps, {architecture} (medians over rounds)",
          ["", f"ms/step ({members} members)", "GFLOP/s"],
          [["stacked", f"{out['stacked_ms_per_step_median']:.1f}",
            f"{out['stacked_gflops_median']:.1f}"],
           [f"{members} singles", f"{out['singles_ms_per_step_median']:.1f}", "-"],
           [f"matmul {matmul_n}^3 f32", "-", f"{out['matmul_gflops_median']:.1f}"]])
    log(f"stacked / singles: {out['stacked_over_singles_median']:.3f} (target <= 1.15); "
        f"roofline fraction: {out['roofline_fraction_median']:.3f} (target >= 0.8)")
    return out


def bench_chain(rounds: int, steps_per_call: int, matmul_n: int = 2048, *,
                members: int = MEMBERS, d_in: int = D_IN, d_sae: int = D_SAE,
                batch: int = BATCH) -> dict:
    """The five matmuls of a learning step alone (``benchmarks/sae_bench.py``'s chain), for
    ``members`` members: as ``members`` single calls, vmapped over all members (the
    stack's form: every dot gets a batch dimension), and vmapped over one member at a time
    (a batch dimension of 1, so the same work as the singles); interleaved rounds, each as
    a fraction of the ``matmul_n``^3 matmul's rate."""
    import jax

    from benchmarks.sae_bench import _matmul_chain, matmul_call

    k_x, k_enc, k_dec = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(k_x, (batch, d_in))
    w_enc = 0.01 * jax.random.normal(k_enc, (members, d_in, d_sae))
    w_dec = 0.01 * jax.random.normal(k_dec, (members, d_sae, d_in))
    one = jax.jit(lambda x, a, b: _matmul_chain(x, a, b, steps_per_call))
    batched = jax.jit(jax.vmap(lambda x, a, b: _matmul_chain(x, a, b, steps_per_call)))
    xs = jax.numpy.broadcast_to(x, (members, *x.shape))
    # Each member's operands sliced once here, so no timed call copies weights.
    per_member = [(w_enc[i], w_dec[i]) for i in range(members)]
    per_member_batched = [(xs[i:i + 1], w_enc[i:i + 1], w_dec[i:i + 1]) for i in range(members)]

    def singles():
        jax.block_until_ready([one(x, *w) for w in per_member])

    def vmapped():
        jax.block_until_ready(batched(xs, w_enc, w_dec))

    def vmapped_one_by_one():
        jax.block_until_ready([batched(*args) for args in per_member_batched])

    matmul, matmul_flops = matmul_call(matmul_n, reps=3)
    log(f"chain: {members} members {d_in} -> {d_sae}, batch {batch}, {steps_per_call} steps "
        f"per call, {rounds} interleaved rounds ...")
    times = time_interleaved({"singles": singles, "vmapped": vmapped,
                              "vmapped_one_by_one": vmapped_one_by_one, "matmul": matmul},
                             rounds=rounds, warmup=1)
    flops = members * sae_step_flops(batch, d_in, d_sae) * steps_per_call
    rate = matmul_flops / np.asarray(times["matmul"])
    out = {"members": members, "d_in": d_in, "d_sae": d_sae, "batch": batch,
           "steps_per_call": steps_per_call, "rounds": rounds,
           "matmul_gflops_median": float(np.median(rate)) / 1e9}
    for name in ("singles", "vmapped", "vmapped_one_by_one"):
        frac = flops / np.asarray(times[name]) / rate
        out[f"{name}_roofline_fraction_median"] = float(np.median(frac))
        out[f"{name}_roofline_fraction_all"] = frac.tolist()
    table("the five matmuls of a step alone, as a fraction of the matmul roofline (medians)",
          ["form", "of matmul"],
          [[n, f"{out[f'{n}_roofline_fraction_median']:.3f}"]
           for n in ("singles", "vmapped", "vmapped_one_by_one")])
    return out


def bench_demo(sweep_dir: Path, mode: str) -> dict:
    from apps.analysis.pipeline import analyze
    from apps.training.single_run import train_sae
    from runkit.jsonio import read_json
    from runkit.run_dir import RunDir
    from sae_jax.config import SAETrainConfig
    from sae_jax.stack import group_into_stacks

    names = sorted(p.name for p in (sweep_dir / "members").iterdir()
                   if (p / "train_config.json").exists())
    cfgs = {n: SAETrainConfig.from_json(sweep_dir / "members" / n / "train_config.json")
            for n in names}
    primary_dir = RunDir(sweep_dir / "members" / names[0]).primary_dir()
    stacks = [[names[i] for i in g] for g in group_into_stacks([cfgs[n] for n in names])]
    chosen = [s[0] for s in stacks] if mode == "per_stack" else names
    weight = {s[0]: len(s) for s in stacks} if mode == "per_stack" else dict.fromkeys(names, 1)
    # The one-by-one runs analyze as many held-out builds as the sweep's members did.
    analyzed = {n: read_json(sweep_dir / "members" / n / "report" / "features.json",
                             what="member feature analysis")["num_builds"] for n in chosen}
    timed = {}
    for n in chosen:
        with tempfile.TemporaryDirectory(prefix="one_by_one_") as tmp:
            log(f"one by one: {n} (analyzed on {analyzed[n]} builds) ...")
            t0 = time.perf_counter()
            train_sae(cfgs[n], tmp, primary_dir=primary_dir, analyze=False)
            analyze(tmp, num_builds=analyzed[n])
            timed[n] = time.perf_counter() - t0
    one_by_one = sum(timed[n] * weight[n] for n in chosen)
    # Read last: the one-by-one runs may go on while the sweep finishes its members.
    doc = read_json(sweep_dir / "sweep.json", what="sweep report")
    timing = doc.get("timing", {})
    if "train_seconds" not in timing:
        raise SystemExit(f"{sweep_dir}/sweep.json records no timing: finish the sweep first")
    sweep_seconds = timing["train_seconds"] + timing["members_seconds"]
    out = {"sweep_dir": str(sweep_dir), "members": len(names), "stacks": len(stacks),
           "sweep_seconds": sweep_seconds, "sweep_timing": timing, "one_by_one_mode": mode,
           "one_by_one_seconds_timed": timed, "analysis_builds": analyzed,
           "one_by_one_seconds": one_by_one,
           "sweep_over_one_by_one": sweep_seconds / one_by_one, "target": 0.5}
    table("demo sweep vs its members one by one (same primary, both with analysis)",
          ["", "seconds"],
          [["sweep (stacked training + every member's evaluation and analysis)",
            f"{sweep_seconds:.0f}"],
           [f"one by one ({mode}{', extrapolated per stack' if mode == 'per_stack' else ''})",
            f"{one_by_one:.0f}"]])
    log(f"sweep / one by one: {out['sweep_over_one_by_one']:.3f} (target <= 0.5)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("step", "chain", "demo"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps_per_call", type=int, default=4)
    p.add_argument("--architecture", default="relu_l1",
                   choices=ARCHITECTURES,
                   help="the members' architecture (step only)")
    p.add_argument("--what_if", default=None, choices=sorted(STEP_VARIANTS),
                   help="also time the stack with this benchmarks/profile_sae_step.py step "
                        "variant swapped in (step, relu_l1), e.g. two_pass_counts")
    p.add_argument("--sweep_dir", type=Path)
    p.add_argument("--one_by_one", choices=("per_stack", "all"), default="per_stack")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    t0 = time.perf_counter()
    results = {"machine": machine_info()}
    if args.what == "step":
        results["step"] = bench_step(args.rounds, args.steps_per_call,
                                     architecture=args.architecture, what_if=args.what_if)
    elif args.what == "chain":
        results["chain"] = bench_chain(args.rounds, args.steps_per_call)
    else:
        if args.sweep_dir is None:
            p.error("demo needs --sweep_dir (a finished sweep)")
        results["demo"] = bench_demo(args.sweep_dir, args.one_by_one)
    results["machine_end"] = machine_info()
    results["wall_s"] = time.perf_counter() - t0
    out = args.out or f"benchmarks/results/sweep_{args.what}.json"
    write_results(results, out)
    print(json.dumps({k: v for k, v in results[args.what].items()
                      if not isinstance(v, (list, dict))}, indent=1))


if __name__ == "__main__":
    main()
