"""Accelerator benchmark: matmul roofline, SAE step in float32 and bfloat16, bfloat16's
accuracy cost, harvesting 819,200 activations from the full-size primary, the whole
training loop (harvest + SAE steps) swept over the primary batch size, a sweep's stacked
step against its members one at a time, the analysis of a 24,576-feature SAE over
100,000 builds (statistics, concept recovery, steering, report; the explanations, which
run on the host, are ``benchmarks/analysis_scale.py --explanations``), and the synthetic
yardstick: our BatchTopK and Matryoshka on a SynthSAEBench-16k-shaped world
(``benchmarks/synth_yardstick.py``), scored against its true features beside the
published figures.

    python benchmarks/accelerator.py                  # on a GPU: every target, several minutes
    python benchmarks/accelerator.py --harvest_rows 8192   # on a CPU: a short default run
    python benchmarks/accelerator.py --smoke --out /tmp/a.json   # toy sizes, a minute or two

The sizes follow the backend (``jax.default_backend()``): a GPU or TPU gets the full
plan (8192^3 matmuls, batch-4096 SAE steps at 512 -> 2048 and 512 -> 24,576, a few
thousand training steps for the accuracy check, a real 819,200-row harvest); a CPU gets
the same shapes where they take seconds and smaller ones where they would take hours.

Precision variants. ``float32_default``: float32 operands at XLA's default matmul
precision (on NVIDIA GPUs this may run on TF32 tensor cores); ``float32_highest``: the
same under ``jax.default_matmul_precision("highest")`` (true float32 products);
``bfloat16``: bfloat16 operands, float32 accumulation (for the SAE step,
``SAETrainConfig.compute_dtype="bfloat16"``). Every SAE roofline fraction is the step's
matmul FLOPs per second over the matmul rate of the same variant.

Writes one JSON (``--out``): the machine, the plan, every raw figure and a ``targets``
block (``met`` is null where the figure was not measured at the target's conditions),
rewritten after every section (``complete`` is false until the last has run), so a run
cut short keeps what it measured. ``--skip`` leaves sections out. All timings exclude
compilation and block on the device's results.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from functools import partial

# Run as a script from anywhere: the repository root holds the packages.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks import harvest_bench, sae_bench, sae_fix_quality, synth_yardstick  # noqa: E402
from benchmarks.output import log, table, write_results  # noqa: E402
from benchmarks.timing import load_average, machine_info, time_calls  # noqa: E402
from bridge.harvest import make_harvest_fn  # noqa: E402
from primary.examples import LENGTH_BUCKETS  # noqa: E402
from primary.model import PrimaryConfig, count_params, create_model  # noqa: E402
from sae_jax.buffer import create_buffer  # noqa: E402
from sae_jax.config import SAETrainConfig  # noqa: E402

HARVEST_TARGET_ROWS = 819_200
HARVEST_TARGET_SECONDS = 30.0
ROOFLINE_TARGET = 0.5
ROOFLINE_BATCH = 4096
ROOFLINE_SHAPE = (512, 2048)
# Our threshold for "accuracy holds": bfloat16 training moves held-out FVE by at most
# one point (0.01) against true-float32 training on the same data, steps and seed.
FVE_CHANGE_TARGET = 0.01

# variant -> (SAE compute dtype, matmul precision context); matmul rates use the same names.
VARIANTS = {
    "float32_default": ("float32", None),
    "float32_highest": ("float32", "highest"),
    "bfloat16": ("bfloat16", None),
}
REFERENCE_VARIANT = "float32_highest"  # true float32: what the FVE change is measured from

# A few-thousand-parameter primary for --smoke (the full-size one is 83M parameters).
TOY_PRIMARY = PrimaryConfig(vocab_size=140, weapon_vocab_size=130, embedding_dim=8,
                            hidden_dim=32, num_layers=1, num_heads=2, num_inducing_points=4,
                            use_layer_norm=True)


# The accuracy check's data and schedule: benchmarks/sae_fix_quality.py's sparse
# dictionary (64 dims, 256 atoms, 4 active per row) and its settings that learn it
# (lr 3e-3, L1 3e-3, usage 0.15 with floor 0.005); 6,000 steps of 256 rows converge in
# seconds on a CPU. (At d = 512 with 1,024 atoms, 1,000-2,000 CPU-sized steps left FVE
# at 0.2-0.8 with hundreds of dead or dense features, too unsettled to compare.)
QUALITY_PLAN = dict(quality_d=64, quality_atoms=256, quality_k=4, quality_expansion=4.0,
                    quality_train_rows=50_000, quality_test_rows=5_000, quality_batch=256,
                    quality_steps=6000, quality_chunk=500, quality_lr=3e-3, quality_l1=3e-3,
                    quality_usage=0.15, quality_usage_floor=0.005)


# The whole loop at toy sizes: the demo's settings with a small buffer and SAE batch.
LOOP_SMOKE = dict(loop_full_size=False, loop_builds=300, loop_batch_sweep=(16, 32), loop_rows=64,
                  loop_rounds=1)


# The synthetic yardstick (benchmarks/synth_yardstick.py). On a GPU: SynthSAEBench's 16k
# world (16,384 true features in 768 dimensions, 128 x 128 mutually exclusive hierarchy,
# L0 25), our BatchTopK and Matryoshka at width 4,096 and k = 25, 200 M samples each (the
# published sweep's budget), fresh samples drawn 2 M at a time. A CPU gets a small world.
SYNTH_FULL = dict(synth_world=dataclasses.asdict(synth_yardstick.SYNTH_16K), synth_width=4096,
                  synth_k=25, synth_samples=200_000_000, synth_batch=4096,
                  synth_fill_rows=2_097_152, synth_steps_per_call=64, synth_lr=3e-4,
                  synth_eval_rows=100_000, synth_archs=("batchtopk", "matryoshka"))
SYNTH_CPU = dict(SYNTH_FULL, synth_world=dataclasses.asdict(synth_yardstick.World(
    num_features=1024, d_in=128, roots=32, target_l0=8)), synth_width=512, synth_k=8,
    synth_samples=1_000_000, synth_batch=1024, synth_fill_rows=131_072,
    synth_steps_per_call=32, synth_lr=1e-3, synth_eval_rows=20_000)
SYNTH_SMOKE = dict(SYNTH_CPU, synth_world=dataclasses.asdict(synth_yardstick.World(
    num_features=128, d_in=32, roots=8, target_l0=4)), synth_width=64, synth_k=4,
    synth_samples=20_000, synth_batch=256, synth_fill_rows=8192, synth_steps_per_call=8,
    synth_eval_rows=2048)
# SynthSAEBench's published figures at L0 25 on its 16k world: a table of records, one
# per architecture (its SAELens recipe's row).
SYNTH_PUBLISHED = (
    {"architecture": "matryoshka", "f1": 0.88, "mcc": 0.79},
    {"architecture": "batchtopk", "f1": 0.73, "mcc": 0.76},
    {"architecture": "jumprelu", "f1": 0.73, "mcc": 0.75},
    {"architecture": "relu_l1", "f1": 0.56, "mcc": 0.60},
)


def _plan(backend: str, smoke: bool) -> dict:
    """Sizes for this backend; ``harvest_rows``/``harvest_batch`` may be overridden by flags."""
    if smoke:
        return dict(mode="smoke", matmul_n=128, matmul_reps=2,
                    sae_shapes=((32, 128),), sae_batch=64, sae_buffer_rows=512,
                    sae_steps_per_call=2, sae_calls=2, sae_variants=tuple(VARIANTS),
                    quality_d=32, quality_atoms=64, quality_k=3, quality_expansion=4.0,
                    quality_train_rows=2000, quality_test_rows=500, quality_batch=64,
                    quality_steps=200, quality_chunk=100, quality_lr=3e-3, quality_l1=3e-3,
                    quality_usage=0.15, quality_usage_floor=0.005,
                    quality_variants=(REFERENCE_VARIANT, "bfloat16"),
                    harvest_full_size=False, harvest_rows=256, harvest_batch=64,
                    harvest_fills=1, **LOOP_SMOKE, sweep_members=4, sweep_shape=(32, 128),
                    sweep_batch=64, sweep_steps_per_call=2, sweep_rounds=2,
                    analysis_sizes=((64, 400),), analysis_explanations=False,
                    **SYNTH_SMOKE)
    if backend == "cpu":
        # On a CPU float32 "default" and "highest" are the same product: measure it once.
        return dict(mode="cpu", matmul_n=2048, matmul_reps=5,
                    sae_shapes=(ROOFLINE_SHAPE,), sae_batch=ROOFLINE_BATCH,
                    sae_buffer_rows=16_384, sae_steps_per_call=2, sae_calls=2,
                    sae_variants=("float32_default", "bfloat16"),
                    **QUALITY_PLAN, quality_variants=(REFERENCE_VARIANT, "bfloat16"),
                    # The full-size primary does ~30 builds/s on 2 CPU cores: a short sample.
                    harvest_full_size=True, harvest_rows=1024, harvest_batch=256,
                    harvest_fills=1, loop_full_size=True, loop_builds=2000,
                    loop_batch_sweep=(32,), loop_rows=64, loop_rounds=1,
                    sweep_members=8, sweep_shape=ROOFLINE_SHAPE, sweep_batch=1024,
                    sweep_steps_per_call=2, sweep_rounds=3,
                    analysis_sizes=((2048, 10_000),), analysis_explanations=False,
                    **SYNTH_CPU)
    return dict(mode="accelerator", matmul_n=8192, matmul_reps=10,
                sae_shapes=(ROOFLINE_SHAPE, (512, 24_576)), sae_batch=ROOFLINE_BATCH,
                sae_buffer_rows=262_144, sae_steps_per_call=32, sae_calls=5,
                sae_variants=tuple(VARIANTS),
                **QUALITY_PLAN, quality_variants=tuple(VARIANTS),
                harvest_full_size=True, harvest_rows=HARVEST_TARGET_ROWS, harvest_batch=4096,
                harvest_fills=2, loop_full_size=True, loop_builds=10_000,
                loop_batch_sweep=(32, 256, 1024), loop_rows=16_384, loop_rounds=3,
                sweep_members=8, sweep_shape=ROOFLINE_SHAPE, sweep_batch=1024,
                sweep_steps_per_call=16, sweep_rounds=5,
                analysis_sizes=((24_576, 100_000),), analysis_explanations=False,
                **SYNTH_FULL)


def _precision(variant: str):
    """The matmul-precision context of a variant (jit traces again under a new one)."""
    precision = VARIANTS[variant][1]
    return jax.default_matmul_precision(precision) if precision else contextlib.nullcontext()


# --- 1. matmul roofline ------------------------------------------------------------------


@jax.jit
def _matmul_f32_sums(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _blocking_matmul(a: jax.Array, b: jax.Array) -> None:
    _matmul_f32_sums(a, b).block_until_ready()


def bench_matmul_variants(n: int, reps: int) -> dict:
    """Best FLOP/s of an ``n^3`` matmul per variant: ``{variant: {seconds_best, flops_per_s,
    ...}}``; bfloat16 takes bfloat16 operands and accumulates in float32."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    flops = 2 * n**3
    out = {"n": n, "flops": flops}
    for variant, (dtype, _) in VARIANTS.items():
        call = partial(_blocking_matmul, a.astype(dtype), b.astype(dtype))
        with _precision(variant):
            timing = time_calls(call, reps=reps, warmup=2)
        out[variant] = {"seconds_best": timing["best"], "seconds_median": timing["median"],
                        "flops_per_s": flops / timing["best"],
                        "flops_per_s_median": flops / timing["median"]}
    return out


# --- 2. SAE step speed -------------------------------------------------------------------


def bench_sae_step(d_in: int, d_sae: int, batch: int, data: np.ndarray, *, compute_dtype: str,
                   steps_per_call: int, calls: int) -> dict:
    """ms/step of ``make_train_steps`` (fixed mode, ``steps_per_call`` steps in one jitted
    scan, batches drawn from a device buffer of ``data``); the warm-up call compiles."""
    call, flops = sae_bench.jax_sae_call(d_in, d_sae, batch, data,
                                         steps_per_call=steps_per_call,
                                         compute_dtype=compute_dtype)
    finite = []

    def timed():
        finite.append(bool(call()["finite"]))

    timing = time_calls(timed, reps=calls, warmup=1)
    step_s = timing["best"] / steps_per_call
    return {"d_in": d_in, "d_sae": d_sae, "batch": batch, "compute_dtype": compute_dtype,
            "steps_per_call": steps_per_call, "calls": calls,
            "step_s_best": step_s, "step_s_median": timing["median"] / steps_per_call,
            "step_ms_best": 1e3 * step_s, "activations_per_s": batch / step_s,
            "flops_per_step": flops, "flops_per_s": flops / step_s,
            "all_losses_finite": all(finite)}


def run_sae(plan: dict, matmul: dict) -> dict:
    out = {}
    d_values = sorted({d for d, _ in plan["sae_shapes"]})
    data = {d: sae_bench.random_activations(plan["sae_buffer_rows"], d) for d in d_values}
    for d_in, d_sae in plan["sae_shapes"]:
        entry = {}
        for variant in plan["sae_variants"]:
            log(f"SAE step {d_in}->{d_sae}, batch {plan['sae_batch']}, {variant}")
            with _precision(variant):
                r = bench_sae_step(d_in, d_sae, plan["sae_batch"], data[d_in],
                                   compute_dtype=VARIANTS[variant][0],
                                   steps_per_call=plan["sae_steps_per_call"],
                                   calls=plan["sae_calls"])
            r["precision"] = VARIANTS[variant][1] or "default"
            r["matmul_rate_variant"] = variant
            r["matmul_flops_per_s"] = matmul[variant]["flops_per_s"]
            r["roofline_fraction"] = r["flops_per_s"] / r["matmul_flops_per_s"]
            entry[variant] = r
        out[f"{d_in}x{d_sae}"] = entry
    return out


# --- 3. accuracy of bfloat16 training ------------------------------------------------------


def quality_config(plan: dict) -> SAETrainConfig:
    """The SAE-fix quality check's schedule (benchmarks/sae_fix_quality.py) with the plan's
    coefficients (``QUALITY_PLAN``)."""
    steps = plan["quality_steps"]
    return SAETrainConfig(
        expansion_factor=plan["quality_expansion"], lr=plan["quality_lr"],
        l1_coeff=plan["quality_l1"], usage_coeff=plan["quality_usage"],
        usage_floor=plan["quality_usage_floor"],
        sae_batch_size=plan["quality_batch"], buffer_size=plan["quality_train_rows"],
        min_buffer=plan["quality_batch"], l1_warmup_steps=steps // 8,
        usage_warmup_steps=steps // 8, usage_period=steps * 2,
        resample_steps=(steps // 4, steps // 2), dead_threshold=1e-5)


def run_quality(plan: dict, seed: int = 0) -> dict:
    """Train on the same known-sparse data, steps and seed per variant; held-out FVE and L0
    from the float32 encode/decode at "highest" precision (so evaluation adds no rounding)."""
    steps, chunk = plan["quality_steps"], plan["quality_chunk"]
    if steps % chunk:
        raise ValueError(f"quality_steps {steps} must be a multiple of quality_chunk {chunk}")
    n_train, n_test = plan["quality_train_rows"], plan["quality_test_rows"]
    data, atoms = sae_fix_quality.sparse_dataset(n_train + n_test, plan["quality_d"],
                                                 plan["quality_atoms"], plan["quality_k"], seed)
    train_x, test_x = data[:n_train], data[n_train:]
    base = quality_config(plan)
    out = {"d": plan["quality_d"], "true_atoms": plan["quality_atoms"], "k": plan["quality_k"],
           "d_sae": int(plan["quality_d"] * plan["quality_expansion"]), "steps": steps,
           "batch": plan["quality_batch"], "train_rows": n_train, "test_rows": n_test,
           "seed": seed, "reference": REFERENCE_VARIANT, "variants": {}}
    for variant in plan["quality_variants"]:
        log(f"accuracy: {steps} SAE steps, {variant}")
        cfg = dataclasses.replace(base, compute_dtype=VARIANTS[variant][0])
        t0 = time.perf_counter()
        with _precision(variant):
            state = sae_fix_quality.train(cfg, train_x, steps, chunk, seed)
            jax.block_until_ready(state)
        train_s = time.perf_counter() - t0
        with jax.default_matmul_precision("highest"):
            scores = sae_fix_quality.evaluate(state.params, test_x, cfg.clip_max, atoms)
        out["variants"][variant] = {**scores, "train_s_incl_compile": train_s}
    ref = out["variants"].get(REFERENCE_VARIANT)
    if ref is not None:
        # The noise floor for the change: the reference trained again from another seed
        # (another init and batch order, same data) moves FVE by this much on its own.
        log(f"accuracy: {steps} SAE steps, {REFERENCE_VARIANT}, seed {seed + 1}")
        cfg = dataclasses.replace(base, compute_dtype=VARIANTS[REFERENCE_VARIANT][0])
        with _precision(REFERENCE_VARIANT):
            state = sae_fix_quality.train(cfg, train_x, steps, chunk, seed + 1)
            scores = sae_fix_quality.evaluate(state.params, test_x, cfg.clip_max, atoms)
        out["reference_other_seed"] = {**scores, "seed": seed + 1,
                                       "fve_change_vs_reference": scores["fve"] - ref["fve"]}
    for variant, scores in out["variants"].items():
        if ref is not None and variant != REFERENCE_VARIANT:
            scores["fve_change_vs_reference"] = scores["fve"] - ref["fve"]
            scores["l0_change_vs_reference"] = scores["l0"] - ref["l0"]
    return out


# --- 4. harvest ----------------------------------------------------------------------------


def host_batches(cfg: PrimaryConfig, rows: int, batch: int, length: int) -> list[dict]:
    """``rows // batch`` host (numpy) batches of random builds, seeded by batch index."""
    if batch <= 0 or rows <= 0 or rows % batch:
        raise ValueError(f"harvest rows {rows} must be a positive multiple of the harvest "
                         f"batch {batch}")
    out = []
    for i in tqdm(range(rows // batch), desc="generating builds", leave=False):
        tokens, weapons, mask = harvest_bench.random_builds(cfg, batch, length, seed=i)
        out.append({"tokens": tokens, "weapons": weapons, "key_padding_mask": mask,
                    "weight": np.ones((batch,), np.float32)})
    return out


def _xla_flops(jitted, *args) -> float | None:
    """XLA's FLOP count of one call, from the lowered program (no compile); None where
    a backend's cost analysis gives none (the FLOP figures are extras, not the timing)."""
    try:
        cost = jitted.lower(*args).cost_analysis()
    except Exception as e:  # noqa: BLE001 - any backend failure here only loses an extra
        log(f"harvest: no XLA cost analysis ({type(e).__name__}: {e})")
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def run_harvest(plan: dict) -> dict:
    cfg = harvest_bench.FULL_SIZE if plan["harvest_full_size"] else TOY_PRIMARY
    rows, batch = plan["harvest_rows"], plan["harvest_batch"]
    length = LENGTH_BUCKETS[-1]  # the widest padded batch the training harvest feeds
    model = create_model(cfg, seed=0)
    graphdef, state = nnx.split(model)
    harvest = make_harvest_fn(graphdef)
    log(f"harvest: generating {rows:,} random builds on the host")
    t0 = time.perf_counter()
    batches = host_batches(cfg, rows, batch, length)
    gen_s = time.perf_counter() - t0
    # The buffer holds the target's 819,200 rows where the run is the real one, else
    # exactly the rows harvested (the donated push costs the same either way).
    capacity = HARVEST_TARGET_ROWS if rows == HARVEST_TARGET_ROWS else rows

    log("harvest: compiling (one call into a throwaway buffer of the same shape)")
    scratch, finite = harvest(state, create_buffer(capacity, cfg.hidden_dim), batches[0])
    jax.block_until_ready((scratch, finite))
    del scratch
    buf = create_buffer(capacity, cfg.hidden_dim)
    jax.block_until_ready(buf)

    fills, all_finite = [], True
    for fill in range(plan["harvest_fills"]):
        flags = []
        t0 = time.perf_counter()
        for b in tqdm(batches, desc=f"harvest fill {fill + 1}", leave=False):
            buf, f = harvest(state, buf, b)
            flags.append(f)
        jax.block_until_ready((buf, flags))
        fills.append(time.perf_counter() - t0)
        all_finite &= bool(np.all([bool(f) for f in flags]))
    seconds = min(fills)
    builds_per_s = rows / seconds
    flops_per_call = _xla_flops(harvest, state, buf, batches[0])
    flops_per_build = flops_per_call / batch if flops_per_call else None
    full = plan["harvest_full_size"]
    out = {"primary": "full_size" if full else "toy",
           "config": {k: getattr(cfg, k) for k in ("embedding_dim", "hidden_dim", "num_layers",
                                                   "num_heads", "num_inducing_points")},
           "params": count_params(model), "seed": 0, "rows": rows, "batch": batch,
           "tokens_per_build": length, "buffer_capacity": capacity,
           "buffer_rows_filled": int(buf.fill), "all_finite": all_finite,
           "host_batches_pregenerated": True, "host_generation_s": gen_s,
           "timing_includes": "host-to-device copy of each pre-generated batch, primary "
                              "forward, buffer push",
           "fills": len(fills), "seconds_all_fills": fills, "seconds": seconds,
           "builds_per_s": builds_per_s,
           "xla_flops_per_build": flops_per_build,
           "flops_per_s": flops_per_build * builds_per_s if flops_per_build else None,
           # The sustained rate the 819,200-row target asks of the primary's forward.
           "flops_per_s_needed_for_target": flops_per_build * HARVEST_TARGET_ROWS
           / HARVEST_TARGET_SECONDS if flops_per_build else None,
           "buffer_bytes_float32_819200x512": HARVEST_TARGET_ROWS * 512 * 4,
           "buffer_bytes_allocated": int(buf.data.nbytes)}
    if full and rows == HARVEST_TARGET_ROWS:
        out["seconds_819200_measured"] = seconds
    else:
        out["seconds_819200_extrapolated"] = HARVEST_TARGET_ROWS / builds_per_s
    return out


# --- 5. the whole training loop ------------------------------------------------------------


def run_loop(plan: dict) -> dict:
    """The training loop's own code (length-grouped harvest, chunked push + SAE steps) on the
    demo's training examples, at the original's full-size settings (``configs/splatnlp.flags``;
    toy sizes with --smoke), swept over the primary batch size: SAE steps/s and builds/s
    including harvesting and the host's work, ``loop_rows`` rows per sweep point."""
    from benchmarks import loop_bench

    examples, vocab, weapon_vocab = harvest_bench.demo_examples(plan["loop_builds"])
    full = plan["loop_full_size"]
    flags = os.path.join(REPO_ROOT, "configs", "splatnlp.flags" if full else "demo_relu_l1.flags")
    cfg = loop_bench.full_size_settings(flags)
    primary = harvest_bench.FULL_SIZE if full else TOY_PRIMARY
    if not full:
        cfg = dataclasses.replace(cfg, buffer_size=4096, min_buffer=1024, sae_batch_size=64)
    primary = harvest_bench.with_vocab(primary, vocab, weapon_vocab)
    out = {"settings": os.path.basename(flags), "primary": "full_size" if full else "toy",
           "rows": plan["loop_rows"], "by_primary_batch": {}}
    for batch in plan["loop_batch_sweep"]:
        if plan["loop_rows"] % batch:
            raise ValueError(f"loop_rows {plan['loop_rows']} is not a multiple of the primary "
                             f"batch {batch}")
        log(f"loop: {plan['loop_rows']:,} rows in primary batches of {batch}")
        r = loop_bench.bench_loop(primary, dataclasses.replace(cfg, primary_batch_size=batch),
                                  examples, num_batches=plan["loop_rows"] // batch,
                                  rounds=plan["loop_rounds"], with_torch=False)
        out["by_primary_batch"][str(batch)] = r
    return out


# --- 6. sweeps: a vmapped stack against its members one at a time ------------------------


def run_sweep(plan: dict) -> dict:
    """``sweep_members`` SAEs of ``sweep_shape`` at ``sweep_batch`` as one stacked call against
    as many single calls and the ``matmul_n``^3 float32 matmul (``benchmarks/sweep_bench.py
    step``): on an accelerator a small SAE's step leaves the device mostly idle, and the
    stack is what fills it."""
    from benchmarks import sweep_bench

    d_in, d_sae = plan["sweep_shape"]
    return sweep_bench.bench_step(
        plan["sweep_rounds"], plan["sweep_steps_per_call"], plan["matmul_n"],
        members=plan["sweep_members"], d_in=d_in, d_sae=d_sae, batch=plan["sweep_batch"],
        buffer_rows=max(plan["sae_buffer_rows"], plan["sweep_batch"]))


# --- 7. the analysis at scale ---------------------------------------------------------------


def _device_peak_gib() -> float | None:
    """The first device's peak memory in use so far (GiB), where the backend reports it."""
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def run_analysis(plan: dict) -> dict:
    """Feature statistics, concept recovery, explanations and the report of a 512 ->
    FEATURES SAE over BUILDS synthetic builds, stage by stage
    (``benchmarks/analysis_scale.py``; host peak memory per stage, and the device's peak)."""
    from benchmarks import analysis_scale

    out = {}
    for features, builds in plan["analysis_sizes"]:
        log(f"analysis: {features:,} features x {builds:,} builds"
            f"{' with explanations' if plan['analysis_explanations'] else ''}")
        row = analysis_scale.run_one(features, builds,
                                     explanations=plan["analysis_explanations"],
                                     min_rate=0.005, max_rate=0.10)
        row["device_peak_gib_so_far"] = _device_peak_gib()
        out[f"{features}x{builds}"] = row
    return out


# --- 8. the synthetic yardstick -------------------------------------------------------------


def run_synth(plan: dict) -> dict:
    """Our BatchTopK and Matryoshka on a SynthSAEBench-style world, scored against its true
    features (``benchmarks/synth_yardstick.py``), beside the published figures."""
    world = synth_yardstick.World(**plan["synth_world"])
    out = synth_yardstick.run_yardstick(
        world, archs=plan["synth_archs"], width=plan["synth_width"], k=plan["synth_k"],
        samples=plan["synth_samples"], batch=plan["synth_batch"],
        fill_rows=plan["synth_fill_rows"], steps_per_call=plan["synth_steps_per_call"],
        lr=plan["synth_lr"], eval_rows=plan["synth_eval_rows"], log=log)
    out["published_at_16k"] = {row["architecture"]: {"f1": row["f1"], "mcc": row["mcc"]}
                               for row in SYNTH_PUBLISHED}
    out["full_size"] = plan["synth_world"] == dataclasses.asdict(synth_yardstick.SYNTH_16K)
    return out


# --- 9. targets, tables, entry point -------------------------------------------------------


def targets(results: dict) -> dict:
    accelerator = results["machine"]["jax_backend"] != "cpu" and results["mode"] != "smoke"
    out = {}
    shape = f"{ROOFLINE_SHAPE[0]}x{ROOFLINE_SHAPE[1]}"
    bf16 = results.get("sae", {}).get(shape, {}).get("bfloat16")
    value = bf16["roofline_fraction"] if bf16 else None
    at_target = bool(bf16) and accelerator and bf16["batch"] == ROOFLINE_BATCH
    out["sae_bf16_roofline_fraction_batch4096"] = {
        "value": value, "target": f">= {ROOFLINE_TARGET}",
        "met": (value >= ROOFLINE_TARGET) if at_target else None,
        "conditions": f"{shape}, batch {ROOFLINE_BATCH}, bfloat16 step over the bfloat16 "
                      "matmul rate, on a GPU/TPU"}
    harvest = results.get("harvest", {})
    measured = harvest.get("seconds_819200_measured")
    out["harvest_819200_seconds"] = {
        "value": measured, "target": f"< {HARVEST_TARGET_SECONDS}",
        "met": (measured < HARVEST_TARGET_SECONDS) if measured is not None else None,
        "extrapolated_not_measured": harvest.get("seconds_819200_extrapolated"),
        "conditions": "819,200 rows from the full-size primary, measured (not extrapolated)"}
    quality = results.get("quality", {}).get("variants", {})
    change = quality.get("bfloat16", {}).get("fve_change_vs_reference")
    other_seed = results.get("quality", {}).get("reference_other_seed", {})
    out["bf16_fve_change"] = {
        "value": change, "target": f"abs <= {FVE_CHANGE_TARGET}",
        "seed_to_seed_fve_change": other_seed.get("fve_change_vs_reference"),
        "met": (abs(change) <= FVE_CHANGE_TARGET) if change is not None
        and results["mode"] != "smoke" else None,
        "conditions": f"held-out FVE, bfloat16 minus {REFERENCE_VARIANT} training; toy "
                      "sizes (--smoke) do not count"}
    return out


def print_tables(results: dict) -> None:
    gpu = results["machine"]["jax_backend"] != "cpu"
    scale, unit = (1e12, "TFLOP/s") if gpu else (1e9, "GFLOP/s")
    mm = results["matmul"]
    table(f"matmul {mm['n']}^3 ({unit}, best of {results['plan']['matmul_reps']})",
           ["variant", unit, "ms"],
           [[v, mm[v]["flops_per_s"] / scale, 1e3 * mm[v]["seconds_best"]] for v in VARIANTS])
    rows = []
    for shape, entry in results.get("sae", {}).items():
        for variant, r in entry.items():
            rows.append([shape, variant, r["step_ms_best"], r["activations_per_s"],
                         r["flops_per_s"] / scale, f"{100 * r['roofline_fraction']:.1f}%"])
    if rows:
        table(f"SAE training step, batch {results['plan']['sae_batch']} (fixed mode, 10BDH; "
               "roofline = FLOP/s over the same variant's matmul rate)",
               ["shape", "variant", "ms/step", "activations/s", unit, "of roofline"], rows)
    if "quality" in results:
        q = results["quality"]
        rows = [[v, f"{s['fve']:.4f}", f"{s['fve_change_vs_reference']:+.4f}"
                 if "fve_change_vs_reference" in s else "reference",
                 f"{s['l0']:.2f}", s["dead"], s["atoms_recovered"]]
                for v, s in q["variants"].items()]
        if "reference_other_seed" in q:
            s = q["reference_other_seed"]
            rows.append([f"{q['reference']}, seed {s['seed']}", f"{s['fve']:.4f}",
                         f"{s['fve_change_vs_reference']:+.4f}", f"{s['l0']:.2f}", s["dead"],
                         s["atoms_recovered"]])
        table(f"bfloat16 accuracy: {q['steps']} steps, d {q['d']} -> {q['d_sae']}, batch "
               f"{q['batch']}, held-out {q['test_rows']:,} rows (float32 evaluation)",
               ["trained as", "FVE", "change", "L0", "dead", "atoms found"], rows)
    if "harvest" in results:
        h = results["harvest"]
        if "seconds_819200_measured" in h:
            note = f"{h['seconds_819200_measured']:.2f} s measured"
        else:
            note = f"{h['seconds_819200_extrapolated']:.1f} s EXTRAPOLATED"
        table(f"harvest ({h['primary']} primary, {h['params'] / 1e6:.1f}M params, batch "
               f"{h['batch']}, {h['tokens_per_build']} tokens; host batches pre-generated)",
               ["rows", "seconds", "builds/s", unit, f"{unit} for < 30 s", "819,200 rows"],
               [[f"{h['rows']:,}", f"{h['seconds']:.3f}", h["builds_per_s"],
                 *(h[k] / scale if h[k] else "-" for k in ("flops_per_s",
                                                          "flops_per_s_needed_for_target")),
                 note]])
    loop = results.get("loop")
    if loop:
        table(f"whole training loop ({loop['settings']}, {loop['primary']} primary, "
              f"{loop['rows']:,} rows per point; harvest, pushes, SAE steps and host work)",
              ["primary batch", "SAE steps", "seconds", "SAE steps/s", "builds/s"],
              [[b, r["sae_steps"], r["ours_s_best"], r["ours_sae_steps_per_s"],
                r["ours_builds_per_s"]] for b, r in loop["by_primary_batch"].items()])
    sweep = results.get("sweep")
    if sweep:
        table(f"stacked sweep step: {sweep['members']} SAEs {sweep['d_in']} -> {sweep['d_sae']}, "
              f"batch {sweep['batch']} (medians over {sweep['rounds']} rounds)",
              ["stacked ms/step", "singles ms/step", "stacked / singles", f"stacked {unit}",
               "of float32 matmul"],
              [[sweep["stacked_ms_per_step_median"], sweep["singles_ms_per_step_median"],
                sweep["stacked_over_singles_median"],
                sweep["stacked_gflops_median"] * 1e9 / scale,
                f"{100 * sweep['roofline_fraction_median']:.1f}%"]])
    analysis = results.get("analysis")
    if analysis:
        table("analysis at scale (statistics, concept recovery, steering, report"
              f"{', explanations' if results['plan']['analysis_explanations'] else ''})",
              ["size", "seconds", "without explanations", "host peak GiB", "device peak GiB"],
              [[size, r["seconds"], r["seconds_without_explanations"], r["peak_gib"],
                r["device_peak_gib_so_far"] if r["device_peak_gib_so_far"] is not None
                else "-"] for size, r in analysis.items()])
    synth = results.get("synth")
    if synth:
        world = synth["world"]
        published = synth["published_at_16k"] if synth["full_size"] else {}
        table(f"synthetic yardstick: {world['num_features']:,} true features in "
              f"{world['d_in']} dims, width {synth['width']:,}, k {synth['k']}, "
              f"{synth['samples']:,} samples (published: SynthSAEBench at 16k)",
              ["architecture", "F1", "MCC", "FVE", "L0", "recovered", "samples/s",
               "published F1 / MCC"],
              [[arch, a["mean"]["f1"], a["mean"]["mcc"], a["mean"]["explained_variance"],
                a["mean"]["l0"], a["mean"]["features_recovered"],
                a["runs"][0]["samples_per_s"],
                "{:.2f} / {:.2f}".format(*published[arch].values()) if arch in published
                else "-"] for arch, a in synth["architectures"].items()])
    print("\ntargets")
    for name, t in results["targets"].items():
        value = t["value"]
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {name}: {shown} (target {t['target']}, met {t['met']})")


SECTIONS = ("sae", "quality", "harvest", "loop", "sweep", "analysis", "synth")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="toy sizes, a minute or two: checks the harness, not the machine")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results",
                                                      "accelerator.json"),
                        help="the results JSON (rewritten after every section)")
    parser.add_argument("--harvest_rows", type=int, default=None,
                        help="rows to harvest (default 819,200 on a GPU/TPU, 1,024 on a CPU)")
    parser.add_argument("--harvest_batch", type=int, default=None,
                        help="builds per harvest call (default 4096 on a GPU/TPU, 256 on a CPU)")
    parser.add_argument("--skip", default="", help=f"comma list of: {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(SECTIONS):
        parser.error(f"--skip: unknown section(s) {sorted(skip - set(SECTIONS))}; "
                     f"choose from {SECTIONS}")
    for name in ("harvest_rows", "harvest_batch"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive, got {value}")

    t_start = time.perf_counter()
    machine = machine_info()
    machine["device_kind"] = jax.devices()[0].device_kind
    machine["device_count"] = jax.device_count()
    plan = _plan(machine["jax_backend"], args.smoke)
    if args.harvest_rows is not None:
        plan["harvest_rows"] = args.harvest_rows
    if args.harvest_batch is not None:
        plan["harvest_batch"] = args.harvest_batch
    plan["skipped"] = sorted(skip)
    results = {"mode": plan["mode"], "machine": machine,
               "plan": json.loads(json.dumps(plan)), "variants": {
                   v: {"compute_dtype": d, "matmul_precision": p or "default"}
                   for v, (d, p) in VARIANTS.items()}}
    log(f"matmul roofline, n={plan['matmul_n']}, on {machine['device_kind']}")
    results["matmul"] = bench_matmul_variants(plan["matmul_n"], plan["matmul_reps"])
    runners = {"sae": partial(run_sae, plan, results["matmul"]),
               **{name: partial(fn, plan) for name, fn in (
                   ("quality", run_quality), ("harvest", run_harvest), ("loop", run_loop),
                   ("sweep", run_sweep), ("analysis", run_analysis), ("synth", run_synth))}}
    for section in (s for s in SECTIONS if s not in skip):
        results[section] = runners[section]()
        # Written after every section: a run cut short (a device lent for minutes) keeps
        # what it measured; "complete" says whether every section ran.
        _check_finite(results)
        write_results({**results, "complete": False,
                       "wall_s": time.perf_counter() - t_start}, args.out)
    results["complete"] = True
    results["targets"] = targets(results)
    results["wall_s"] = time.perf_counter() - t_start
    results["machine"]["load_average_at_end"] = load_average()
    print_tables(results)
    _check_finite(results)
    write_results(results, args.out)
    return results


def _check_finite(results: dict) -> None:
    """A NaN or infinite timing means a broken measurement: say where rather than write it."""
    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"benchmark produced a non-finite figure at {path}: {node}")

    walk(results, "results")


if __name__ == "__main__":
    main()
