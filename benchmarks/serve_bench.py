"""Workbench speed: startup, the feature list of a big SAE, build-lab latency.

    python benchmarks/serve_bench.py [--demo_run=runs/demo] [--scratch=/tmp/serve_bench]
        [--reps=6] [--parts=demo,wide,full] [--out=FILE.json]

Measures, on the CPU (JAX_PLATFORMS=cpu is set):

- startup of ``python -m apps.serve`` on a copy of the demo run: seconds from launch
  until ``/api/run`` answers, and until ``/api/status`` says ready (the server builds the
  index and compiles in the background first, :mod:`apps.workbench.warmup`); then the
  feature list's first page; the same after a restart (the saved index and the
  compilation cache are read);
- the list's first page with a 24,576-feature SAE (random, 64 -> 24,576 on the demo
  primary; the Ultra SAE's width): building its index once, then the first page of a
  freshly started server, hot pages, a search, and the server's resident memory;
- build-lab latency (``POST /api/complete``, HTTP round trip) with the demo primary, plain
  and with one feature set to 0, after the first calls (which compile) are reported apart;
- the same with a full-size primary (``primary/configs/primary_splatnlp.flags`` sizes, 83 M
  parameters, random initialisation) and a random 512 -> 24,576 SAE, called in process
  (``apps.workbench.lab.complete_lab``).

Targets: startup <= 10 s, list first page <= 2 s at 24,576 features, interaction <= 300 ms
with the demo primary and <= 1.5 s full-size.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags, logging  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.output import log  # noqa: E402
from benchmarks.timing import machine_info, summarize  # noqa: E402
from benchmarks.workbench_server import Server  # noqa: E402

_DEMO = flags.DEFINE_string("demo_run", "runs/demo", "the demo SAE run (read only)")
_SCRATCH = flags.DEFINE_string("scratch", "/tmp/serve_bench", "where copies and synthetic "
                               "runs are made (replaced)")
_REPS = flags.DEFINE_integer("reps", 6, "timed calls per latency figure (at most 10)")
_PARTS = flags.DEFINE_list("parts", ["demo", "wide", "full"], "what to measure: demo (startup, "
                           "lab), wide (24,576-feature list), full (full-size lab)")
_OUT = flags.DEFINE_string("out", None, "write the figures to this JSON file")

WIDE = 24_576
# Partial builds of the lab figures: the first compiles, each later one is new to the server
# (plain completions are cached, so a repeated body would time only the cache).
LAB_ABILITIES = [{},  # the first: from empty, its search passes through every length bucket
                 {"swim_speed_up": 10, "ink_saver_main": 6}, {"ninja_squid": 10},
                 {"quick_respawn": 13, "comeback": 10}, {"run_speed_up": 19},
                 {"special_charge_up": 10, "special_saver": 3}, {"ink_resistance_up": 6},
                 {"sub_power_up": 10, "ink_saver_sub": 3}, {"stealth_jump": 10},
                 {"intensify_action": 12}, {"quick_super_jump": 3, "thermal_ink": 10}]


def _latency(call, reps: int) -> dict:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    s = summarize(times)
    return {"best_ms": round(1e3 * s["best"], 1), "median_ms": round(1e3 * s["median"], 1)}


def _lab_figures(complete, feature: int, reps: int) -> dict:
    """A plain completion of a partial build the server has not seen, then the same build
    with one feature set to 0 (what a user does: type a build, then set a feature); the
    first pair (compiling) is reported apart."""
    if reps + 1 > len(LAB_ABILITIES):
        raise ValueError(f"--reps at most {len(LAB_ABILITIES) - 1}")
    plain, steered, active = [], [], []
    for abilities in LAB_ABILITIES[:reps + 1]:
        body = {"weapon": "Splattershot", "abilities": abilities}
        t0 = time.perf_counter()
        out = complete(body)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        complete(dict(body, edits=[{"feature": feature, "value": 0.0}]))
        steered.append(time.perf_counter() - t0)
        active.append(len(out["active_features"]))
    first, first_edit = plain.pop(0), steered.pop(0)
    p, s = summarize(plain), summarize(steered)
    figures = {"first_call_s": round(first, 2), "first_steered_call_s": round(first_edit, 2),
               "plain": {"best_ms": round(1e3 * p["best"], 1),
                         "median_ms": round(1e3 * p["median"], 1)},
               "steered": {"best_ms": round(1e3 * s["best"], 1),
                           "median_ms": round(1e3 * s["median"], 1)},
               "active_features": active}
    log(f"  new build: best {figures['plain']['best_ms']} ms, median "
        f"{figures['plain']['median_ms']} ms (first call {first:.2f} s); then one feature "
        f"set: best {figures['steered']['best_ms']} ms, median "
        f"{figures['steered']['median_ms']} ms (first call {first_edit:.2f} s)")
    return figures


def demo_figures(scratch: Path, reps: int) -> dict:
    run = scratch / "demo_run"
    shutil.copytree(_DEMO.value, run, ignore=shutil.ignore_patterns("checkpoints", "workbench"))
    result = {}
    server = Server(run)
    log(f"demo run: startup {server.startup_s:.2f} s, ready (index built, programs compiled) "
        f"{server.ready_s:.2f} s")
    result["startup_s"] = round(server.startup_s, 2)
    result["ready_s"] = round(server.ready_s, 2)
    seconds, page = server.timed(server.get, "/api/features?scope=all&sort=score&limit=50")
    log(f"  first list page: {seconds * 1e3:.0f} ms")
    result["first_page_s"] = round(seconds, 3)
    feature = page["features"][0]["id"]
    result["lab"] = _lab_figures(lambda b: server.post("/api/complete", b), feature, reps)
    server.stop()
    server = Server(run)
    seconds, _ = server.timed(server.get, "/api/features?limit=50")
    log(f"  after a restart: startup {server.startup_s:.2f} s, ready {server.ready_s:.2f} s, "
        f"first page {seconds * 1e3:.0f} ms")
    result["restart_startup_s"] = round(server.startup_s, 2)
    result["restart_ready_s"] = round(server.ready_s, 2)
    result["restart_first_page_s"] = round(seconds, 3)
    server.stop()
    return result


def _make_wide_run(scratch: Path, name: str, primary_dir: Path, d_in: int, num_builds: int):
    from sae_jax.model import SAEConfig, create_sae
    from sae_jax.sae_dir import save_sae

    run = scratch / name
    run.mkdir(parents=True)
    save_sae(run / "sae", create_sae(SAEConfig(input_dim=d_in, expansion_factor=WIDE / d_in),
                                     seed=0))
    (run / "run.json").write_text(json.dumps({
        "primary_model_dir": str(primary_dir), "data_source": "synthetic", "data_path": "",
        "num_builds": num_builds, "seed": 0}))
    return run


def wide_figures(scratch: Path, reps: int) -> dict:
    from apps.workbench.run_state import RunData
    from runkit.run_dir import RunDir

    primary_dir = RunDir(_DEMO.value).primary_dir()
    run = _make_wide_run(scratch, "wide_run", primary_dir, 64, 10_000)
    t0 = time.perf_counter()
    data = RunData(run)
    data.index()
    build = time.perf_counter() - t0
    n = int(data.index()["num_builds"])
    log(f"{WIDE}-feature SAE: index over {n} analysis builds built in {build:.1f} s (once)")
    del data
    server = Server(run)
    every = "/api/features?scope=all&sort=score&limit=50"  # a random SAE: few in the window
    first, page = server.timed(server.get, every)
    hot = _latency(lambda: server.get(every + "&offset=100"), reps)
    search = _latency(lambda: server.get(every + "&q=swim"), reps)
    rss = server.rss_mb()
    log(f"  fresh server: startup {server.startup_s:.2f} s, first page {first * 1e3:.0f} ms; "
        f"hot page best {hot['best_ms']} ms; search best {search['best_ms']} ms; "
        f"server RSS {rss:.0f} MB")
    assert page["total"] == WIDE
    server.stop()
    return {"features": WIDE, "analysis_builds": n, "index_build_s": round(build, 1),
            "startup_s": round(server.startup_s, 2), "first_page_s": round(first, 3),
            "hot_page": hot, "search": search, "server_rss_mb": round(rss)}


def full_figures(scratch: Path, reps: int) -> dict:
    from apps.workbench.lab import complete_lab, lab_request
    from apps.workbench.run_state import RunData
    from primary import PRIMARY_CONFIGS
    from primary.model import count_params, create_model
    from primary.model_dir import load_primary, save_primary
    from primary.training import PrimaryTrainConfig
    from runkit.flags import config_from_flagfile
    from runkit.run_dir import RunDir

    demo_dir = RunDir(_DEMO.value).primary_dir()
    _, vocab, weapon_vocab = load_primary(demo_dir)
    cfg = config_from_flagfile(PrimaryTrainConfig, PRIMARY_CONFIGS / "primary_splatnlp.flags",
                               ignore=("workdir",))
    model = create_model(cfg.model_config(len(vocab), len(weapon_vocab), vocab.pad_id), seed=0)
    n_params = count_params(model)
    save_primary(scratch / "full_primary", model, vocab, weapon_vocab)
    del model
    run = _make_wide_run(scratch, "full_run", scratch / "full_primary", 512, 10_000)
    data = RunData(run)
    log(f"full-size primary ({n_params / 1e6:.1f} M parameters) + 512 -> {WIDE} SAE, "
        "in process")
    figures = _lab_figures(lambda b: complete_lab(data, lab_request(b, data)), 0, reps)
    return dict(figures, primary_params=n_params)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    scratch = Path(_SCRATCH.value)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    result = {"machine": machine_info()}
    unknown = set(_PARTS.value) - {"demo", "wide", "full"}
    if unknown:
        raise app.UsageError(f"--parts: unknown {sorted(unknown)}; parts: demo, wide, full")
    if "demo" in _PARTS.value:
        result["demo"] = demo_figures(scratch, _REPS.value)
    if "wide" in _PARTS.value:
        result["wide_sae"] = wide_figures(scratch, _REPS.value)
    if "full" in _PARTS.value:
        result["full_size"] = full_figures(scratch, _REPS.value)
    print(json.dumps(result, indent=1))
    if _OUT.value:
        Path(_OUT.value).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    app.run(main)
