"""Our SAEs against SAELens's on a world made by SAELens's own synthetic generator.

    pip install -r benchmarks/requirements.txt      # torch (CPU) and sae-lens
    python -m benchmarks.peer_saelens [--seed=0] [--out=benchmarks/results/peer_saelens.json]
    python -m benchmarks.peer_saelens --quick --out=/tmp/peer.json   # smoke run, < 1 min

1. The world (:mod:`benchmarks.peer_world`): 512 true features in 64 dimensions, Zipfian
   firing, a hierarchy, low-rank correlation (true L0 about 6.4); 1,000,000 training rows
   and 40,000 evaluation rows drawn once and saved (``--data_dir``, default a temporary
   folder); both libraries get the same arrays.
2. Per architecture (relu_l1 / SAELens ``standard``, TopK, BatchTopK, JumpReLU, Matryoshka
   BatchTopK) and seed (``--seed`` and the next two), one SAE of 512 latents per library on
   3,072,000 samples in batches of 1,024, k = 6 where the architecture takes k, each
   library's recommended optimiser and schedule (:mod:`benchmarks.peer_recipes`), trained
   one after the other, ours then SAELens's, each timed end to end.
3. Every SAE scored as a SAELens inference SAE with SAELens's synthetic evaluation and our
   concept-recovery scoring (:mod:`benchmarks.peer_scoring`).
4. The sweep of all members: ours as one vmapped stack per architecture against SAELens's
   ``MultiSAETrainer`` (:mod:`benchmarks.peer_theirs`), both on ``--sweep_samples``
   samples per member (the time ratio of the same work; the members' scores are not kept).
5. ``--out`` (JSON: every run, the per-architecture means and spreads, the ``summary``, the
   targets, the machine) and the plot beside it (F1 and MCC against L0).

Threads: torch gets ``torch.set_num_threads(2)``; XLA's CPU client uses every core (2 on
the benchmark machine, both recorded). ``OMP_WAIT_POLICY=PASSIVE`` is set before torch is
imported: on a shared, busy machine torch's spinning OpenMP threads made SAELens's steps
several times slower (measured: 200-600 ms against 40 ms per step at a load average of 10).
"""

from __future__ import annotations

import os

# Before torch is imported anywhere (module docstring); tqdm bars off (SAELens's trainers).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.output import REPO_ROOT, log, table, write_results  # noqa: E402
from benchmarks.peer_summary import LIBRARIES, flat_scores, summarize  # noqa: E402
from benchmarks.timing import load_average, machine_info  # noqa: E402

TORCH_THREADS = 2
ENCODE_CHECK_ROWS = 256
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "peer_saelens.json")
FULL = {"samples": 3_072_000, "train_rows": 1_000_000, "eval_rows": 40_000,
        "sweep_samples": 409_600, "seeds": 3, "width": 512, "k": 6, "batch": 1024}
# The smoke run: a small world, two architectures, short runs (minutes of work -> seconds).
QUICK = {"samples": 20_480, "train_rows": 20_000, "eval_rows": 4_000,
         "sweep_samples": 10_240, "seeds": 2, "width": 128, "k": 4, "batch": 1024,
         "architectures": "relu_l1,topk"}
QUICK_WORLD = {"num_features": 128, "hidden_dim": 32, "hierarchy_roots": 8}


def parse_args(argv=None):
    from benchmarks.peer_recipes import RECIPES
    from sae_jax.architectures import ARCHITECTURES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0,
                   help="the world's seed and the first trainer seed (the others follow it)")
    p.add_argument("--out", default=DEFAULT_OUT, help="the results JSON; the plot goes beside "
                   "it (same name, .png)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a small world, two architectures, short runs (< 1 min)")
    p.add_argument("--architectures", default=None,
                   help=f"comma list (default all: {','.join(ARCHITECTURES)})")
    p.add_argument("--recipes", default="recommended", choices=sorted(RECIPES),
                   help="recommended: each library's own learning rate; same_lr: both at "
                        "ours (benchmarks/peer_recipes.py)")
    p.add_argument("--data_dir", default=None,
                   help="where the world's generator and arrays are saved (default: a "
                        "temporary folder, removed at the end)")
    for name in ("samples", "train_rows", "eval_rows", "sweep_samples", "seeds"):
        p.add_argument(f"--{name}", type=int, default=None,
                       help=f"override the run's {name.replace('_', ' ')} (full run: "
                            f"{FULL[name]:,})")
    args = p.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for name in ("samples", "train_rows", "eval_rows", "sweep_samples", "seeds"):
        value = getattr(args, name)
        if value is not None:
            if value <= 0:
                p.error(f"--{name} must be positive, got {value}")
            sizes[name] = value
    if sizes["batch"] > min(sizes["samples"], sizes["train_rows"], sizes["sweep_samples"]):
        p.error(f"--samples, --train_rows and --sweep_samples must each be at least one batch "
                f"({sizes['batch']} rows)")
    from benchmarks.peer_recipes import check_architectures

    names = args.architectures or sizes.get("architectures") or ",".join(ARCHITECTURES)
    try:
        sizes["architectures"] = check_architectures(n for n in names.split(",") if n)
    except ValueError as e:
        p.error(str(e))
    return args, sizes


def _require_saelens():
    try:
        import sae_lens  # noqa: F401
        import torch
    except ImportError as e:
        raise SystemExit(f"error: this benchmark needs torch and SAELens ({e.name} is not "
                         "installed): pip install -r benchmarks/requirements.txt") from None
    torch.set_num_threads(TORCH_THREADS)


def _run_entry(library, arch, seed, trained_wall, samples, scores, **extra) -> dict:
    return {"library": library, "architecture": arch, "seed": seed, "samples": samples,
            "wall_s": trained_wall, **flat_scores(scores, samples, trained_wall),
            "scores": scores, **extra}


def train_and_score(world, plan, architectures, seeds, world_config, recipes) -> list[dict]:
    """Step 2 and 3 of the module docstring: every (architecture, seed), ours then
    SAELens's, each scored right after it trained."""
    from benchmarks import peer_ours, peer_recipes, peer_scoring, peer_theirs

    buffer = peer_ours.array_buffer(world.train)
    check_rows = world.eval_hidden[:ENCODE_CHECK_ROWS]
    runs = []
    for arch in architectures:
        for seed in seeds:
            cfg = peer_recipes.ours_config(arch, plan, seed, recipes=recipes)
            ours = peer_ours.train_single(cfg, plan.steps, buffer)
            loaded = peer_scoring.inference_from_ours(ours)
            runs.append(_run_entry(
                "ours", arch, seed, ours.wall_s, ours.steps * plan.batch,
                peer_scoring.score(loaded, world, len(world.eval_hidden)),
                first_call_s=ours.first_call_s,
                encoding_check=peer_scoring.encoding_gap(ours, loaded, check_rows),
                clipped_fraction=peer_scoring.clipped_fraction(ours, check_rows)))
            sae_config = peer_recipes.saelens_sae_config(arch, plan, recipes=recipes)
            trainer_config = peer_recipes.saelens_trainer_config(sae_config, world_config, plan,
                                                                 recipes)
            theirs = peer_theirs.train_single(sae_config, trainer_config, world.train, seed)
            runs.append(_run_entry(
                "saelens", arch, seed, theirs.wall_s, theirs.steps * plan.batch,
                peer_scoring.score(peer_scoring.inference_from_theirs(theirs.sae), world,
                                   len(world.eval_hidden))))
            for run in runs[-2:]:
                log(f"{run['library']:>7} {arch:<10} seed {seed}: {run['wall_s']:6.1f} s "
                    f"({run['samples_per_s']:,.0f} samples/s), L0 {run['l0']:.2f}, "
                    f"F1 {run['f1']:.3f}, MCC {run['mcc']:.3f}, EV "
                    f"{run['explained_variance']:.3f}, recovered "
                    f"{run['recovered_fraction']:.3f}")
    return runs


def time_sweep(world, plan, architectures, seeds, world_config, sweep_samples,
               recipes) -> dict:
    """Step 4: every member (architecture x seed) on ``sweep_samples`` samples each, ours
    as one stack per architecture, SAELens's in one ``MultiSAETrainer``."""
    from benchmarks import peer_ours, peer_recipes, peer_theirs

    buffer = peer_ours.array_buffer(world.train)
    steps = sweep_samples // plan.batch
    stacks = [[peer_recipes.ours_config(a, plan, s, recipes=recipes) for s in seeds]
              for a in architectures]
    log(f"sweep: {len(stacks) * len(seeds)} members, {steps * plan.batch:,} samples each: "
        f"ours as {len(stacks)} stacks ...")
    _, ours_wall = peer_ours.train_sweep(stacks, plan.steps, buffer, key_seed=seeds[0],
                                         steps=steps)
    short = dataclasses.replace(plan, samples=steps * plan.batch)
    members = [(f"{a}.seed-{s}", peer_recipes.saelens_sae_config(a, short, recipes=recipes),
                s) for a in architectures for s in seeds]
    trainer_config = peer_recipes.saelens_trainer_config(members[0][1], world_config, short,
                                                         recipes)
    log("sweep: SAELens's MultiSAETrainer ...")
    _, theirs_wall = peer_theirs.train_multi(members, trainer_config, world.train, seeds[0])
    out = {"members": len(members), "samples_per_member": steps * plan.batch,
           "ours_wall_s": ours_wall, "saelens_wall_s": theirs_wall,
           "ours_stacks": len(stacks), "saelens_runner": "sae_lens.training.multi_sae_trainer."
           "MultiSAETrainer (MultiSAETrainingRunner wants a language model; it drives this "
           "coordinator)"}
    log(f"sweep: ours {ours_wall:.1f} s, SAELens {theirs_wall:.1f} s "
        f"(ratio {theirs_wall / ours_wall:.2f})")
    return out


def print_table(result: dict) -> None:
    rows = []
    for arch, libs in result["per_architecture"].items():
        for library in LIBRARIES:
            if library not in libs:
                continue
            e = libs[library]
            rows.append([arch, library] + [
                f"{e[m]['mean']:.3f} ± {e[m]['spread']:.3f}" for m in
                ("l0", "f1", "mcc", "explained_variance", "recovered_fraction")]
                + [f"{e['samples_per_s']['mean']:,.0f}"])
    table("per architecture, mean ± seed spread (sample std)",
          ["architecture", "library", "L0", "F1", "MCC", "EV", "recovered", "samples/s"], rows)
    s = result["summary"]
    print(f"\nthroughput ours / SAELens: {s['throughput_ratio']:.2f} (target 3); sweep "
          f"SAELens / ours: {s['sweep_ratio']:.2f} (target 2); best F1 ours "
          f"{s['ours_best_f1']:.3f} ({s['ours_best_f1_architecture']}) vs SAELens "
          f"{s['saelens_best_f1']:.3f} ({s['saelens_best_f1_architecture']})")


def run(args, sizes) -> dict:
    import torch

    from benchmarks import peer_recipes, peer_world
    from benchmarks.peer_plot import plot_peer

    t0 = time.perf_counter()
    spec = peer_world.WorldSpec(**(QUICK_WORLD if args.quick else {}))
    seeds = [args.seed + i for i in range(sizes["seeds"])]
    with tempfile.TemporaryDirectory(prefix="peer_world_") as tmp:
        data_dir = Path(args.data_dir or tmp)
        log(f"world: {spec.num_features} true features in {spec.hidden_dim} dimensions, "
            f"{sizes['train_rows']:,} training and {sizes['eval_rows']:,} evaluation rows ...")
        world = peer_world.make_world(spec, args.seed, sizes["train_rows"], sizes["eval_rows"],
                                      data_dir)
        true_l0 = peer_world.true_l0(world)
        plan = peer_recipes.Plan(spec.hidden_dim, sizes["width"], sizes["k"], sizes["batch"],
                                 sizes["samples"], sizes["train_rows"])
        log(f"true L0 {true_l0:.2f}; {len(sizes['architectures'])} architectures x "
            f"{len(seeds)} seeds x 2 libraries, {plan.steps:,} steps of {plan.batch} each")
        world_config = peer_world.synthetic_model_config(spec, args.seed)
        recipes = peer_recipes.RECIPES[args.recipes]
        runs = train_and_score(world, plan, sizes["architectures"], seeds, world_config,
                               recipes)
        sweep = time_sweep(world, plan, sizes["architectures"], seeds, world_config,
                           sizes["sweep_samples"], recipes)
    result = summarize(runs, sweep)
    result.update({
        "command": f"python -m benchmarks.peer_saelens --seed={args.seed}"
                   + (" --quick" if args.quick else "")
                   + (f" --recipes={args.recipes}" if args.recipes != "recommended" else ""),
        "mode": "quick" if args.quick else "full", "seed": args.seed, "seeds": seeds,
        "world": {**spec.to_dict(), "true_l0": true_l0, "train_rows": sizes["train_rows"],
                  "eval_rows": sizes["eval_rows"], "generator": "sae_lens.synthetic."
                  "SyntheticModel", "data_dir": str(args.data_dir) if args.data_dir else None},
        "plan": plan.to_dict(),
        "recipes": {**recipes.to_dict(plan.d_in),
                    "ours": {**peer_recipes.OURS_OPTIMISER, **peer_recipes.OURS_RECIPE,
                             "schedule": "cosine to ours_lr_final_fraction x lr",
                             "penalty_encoder_init_scale":
                                 peer_recipes.PENALTY_ENCODER_INIT_SCALE},
                    "saelens": {"schedule": "constant", "optimizer": "Adam(0.9, 0.999)"}},
        "sweep": sweep, "runs": runs,
        "threads": {"torch": torch.get_num_threads(), "xla_cpu_cores": os.cpu_count(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "machine": machine_info(), "load_average_at_end": load_average(),
    })
    import sae_lens

    result["machine"]["sae_lens"] = sae_lens.__version__
    result["wall_s"] = time.perf_counter() - t0
    print_table(result)
    out = Path(args.out)
    result["plot"] = str(plot_peer(runs, true_l0, out.with_suffix(".png")))
    write_results(result, str(out))
    return result


def main(argv=None) -> dict:
    args, sizes = parse_args(argv)
    _require_saelens()
    return run(args, sizes)


if __name__ == "__main__":
    main()
