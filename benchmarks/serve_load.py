"""Workbench throughput under concurrent build-lab requests, with batching off and on.

    python benchmarks/serve_load.py [--demo_run=runs/demo] [--scratch=/tmp/serve_load]
        [--requests=500] [--clients=8] [--cold=64] [--alone=20] [--window_ms=5]
        [--baseline_checkout=DIR] [--out=benchmarks/results/serve_load.json]

Starts ``python -m apps.serve`` on a copy of the demo run twice in one run, on the CPU:
with ``--batch_window_ms=0`` (each lab request completed alone, one at a time: the server
as it was before batching) and with ``--batch_window_ms=--window_ms``. Each server gets a
compilation cache of its own, empty at its start, so its warm-up compiles everything it
compiles. Against each, once it says ready, ``POST /api/complete``:

- cold: the first ``--cold`` requests, from ``--clients`` concurrent clients, right after
  "ready" (what a program the warm-up missed would cost under load);
- warm: the next ``--requests`` from ``--clients`` concurrent clients: latency p50, p90, p99,
  requests per second, errors, and the batches the server reports (mean requests per batch);
- alone: ``--alone`` more from one client, one after another (what one person waits).

``--baseline_checkout``: also the server of another checkout of this project (e.g. one
before batching; started without ``--batch_window_ms``, with ``PYTHONPATH`` set to it),
measured the same way first, as ``baseline``.

Both servers get the same seeded requests: the demo model's weapons, partial builds of 0-3
abilities, a third of them with one or two of the most frequent features set (to 0 or to
1-4). Targets with batching, warm, 8 clients: p50 <= 300 ms and >= 25 requests/s, and a
cold p99 that the warm-up bounds. The ratios are on / off.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.output import log, table, write_results  # noqa: E402
from benchmarks.timing import machine_info  # noqa: E402
from benchmarks.workbench_server import Server  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"

TARGET_P50_MS = 300.0
TARGET_RPS = 25.0
AP_LEVELS = (3, 6, 10, 13)
EDITED_SHARE = 1 / 3


def request_mix(n: int, weapons: list[int], features: list[int], seed: int) -> list[dict]:
    """``n`` lab requests: a weapon, 0-3 abilities at legal AP, and for about a third one or
    two of ``features`` set."""
    from primary.allocator import fits
    from primary.vocab import ABILITIES, MAIN_ONLY_ABILITIES, STANDARD_ABILITIES

    rng = np.random.default_rng(seed)
    bodies = []
    while len(bodies) < n:
        abilities = {}
        for _ in range(rng.integers(0, 4)):
            if rng.random() < 0.2:
                abilities[str(rng.choice(MAIN_ONLY_ABILITIES))] = 10
            else:
                abilities[str(rng.choice(STANDARD_ABILITIES))] = int(rng.choice(AP_LEVELS))
        row = np.array([[abilities.get(a, 0) for a in ABILITIES]])
        if not fits(row)[0]:
            continue
        body = {"weapon": int(rng.choice(weapons)), "abilities": abilities}
        if rng.random() < EDITED_SHARE:
            chosen = rng.choice(features, size=int(rng.integers(1, 3)), replace=False)
            body["edits"] = [{"feature": int(f),
                              "value": 0.0 if rng.random() < 0.5 else float(rng.integers(1, 5))}
                             for f in chosen]
        bodies.append(body)
    return bodies


def fire(port: int, bodies: list[dict], clients: int) -> dict:
    """Send ``bodies`` from ``clients`` threads (each a kept-alive connection, taking the next
    body as soon as its last answer is in); latency figures, requests/s, errors."""
    results: list[tuple[float, int | None, str]] = [None] * len(bodies)  # type: ignore
    turn = iter(range(len(bodies)))
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                i = next(turn, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/complete", body=json.dumps(bodies[i]),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                text = response.read().decode()
                status = response.status
            except (OSError, http.client.HTTPException) as e:
                status, text = None, f"{type(e).__name__}: {e}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            results[i] = (time.perf_counter() - t0, status, "" if status == 200 else text[:300])
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array([r[0] for r in results]) * 1e3
    errors = [r for r in results if r[1] != 200]
    out = {"requests": len(bodies), "clients": clients, "wall_s": round(wall, 2),
           "requests_per_s": round(len(bodies) / wall, 2),
           "p50_ms": round(float(np.percentile(ms, 50)), 1),
           "p90_ms": round(float(np.percentile(ms, 90)), 1),
           "p99_ms": round(float(np.percentile(ms, 99)), 1),
           "max_ms": round(float(ms.max()), 1), "errors": len(errors)}
    if errors:
        out["first_error"] = f"{errors[0][1]}: {errors[0][2]}"
    return out


def _batches(server: Server) -> dict:
    return server.get("/api/status").get("completion_batches", {"batches": 0, "requests": 0})


def measure(name: str, run: Path, window_ms: float | None, bodies: list[dict], args,
            root: Path | None = None) -> dict:
    """One server (its own empty compilation cache): ready time, cold, warm and alone.
    ``root``: another checkout's server (``window_ms`` None: no batching flag)."""
    scratch = Path(args.scratch)
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(scratch / f"cache_{name}"), JAX_PLATFORMS="cpu")
    flags = [] if window_ms is None else [f"--batch_window_ms={window_ms:g}"]
    if root is not None:
        env["PYTHONPATH"] = str(root)
    server = Server(run, args=flags, env=env, **({"root": root} if root else {}))
    log(f"{name} ({' '.join(flags) or root}): ready in {server.ready_s:.1f} s")
    cold_n, warm_n = args.cold, args.requests
    try:
        cold = fire(server.port, bodies[:cold_n], args.clients)
        before = _batches(server)
        warm = fire(server.port, bodies[cold_n:cold_n + warm_n], args.clients)
        after = _batches(server)
        alone = fire(server.port, bodies[cold_n + warm_n:], 1)
    finally:
        server.stop()
    batches = after["batches"] - before["batches"]
    if batches:
        warm["mean_batch"] = round((after["requests"] - before["requests"]) / batches, 2)
    for phase, figures in (("cold", cold), ("warm", warm), ("alone", alone)):
        log(f"  {phase}: p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms, "
            f"{figures['requests_per_s']:.1f} requests/s, {figures['errors']} errors"
            + (f", {figures['mean_batch']} requests per batch" if "mean_batch" in figures
               else ""))
    return {"batch_window_ms": window_ms, "ready_s": round(server.ready_s, 1), "cold": cold,
            "warm": warm, "alone": alone}


def _ratios(on: dict, other: dict) -> dict:
    """On / other, for the figures the targets name."""
    return {"warm_p50": round(on["warm"]["p50_ms"] / other["warm"]["p50_ms"], 3),
            "warm_p99": round(on["warm"]["p99_ms"] / other["warm"]["p99_ms"], 3),
            "warm_requests_per_s": round(on["warm"]["requests_per_s"]
                                         / other["warm"]["requests_per_s"], 2),
            "cold_p99": round(on["cold"]["p99_ms"] / other["cold"]["p99_ms"], 3),
            "alone_p50": round(on["alone"]["p50_ms"] / other["alone"]["p50_ms"], 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo_run", default="runs/demo", help="the demo SAE run (read only)")
    p.add_argument("--scratch", default="/tmp/serve_load",
                   help="where the run copies and the servers' compilation caches go (replaced)")
    p.add_argument("--requests", type=int, default=500, help="warm requests per server")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients")
    p.add_argument("--cold", type=int, default=64,
                   help="requests right after ready, reported apart")
    p.add_argument("--alone", type=int, default=20, help="requests from one client at the end")
    p.add_argument("--window_ms", type=float, default=5.0,
                   help="the batching server's --batch_window_ms")
    p.add_argument("--seed", type=int, default=0, help="seed of the request mix")
    p.add_argument("--baseline_checkout", default=None,
                   help="another checkout of this project whose server is measured too")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    for name in ("clients", "requests", "cold", "alone"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.window_ms > 0:
        p.error(f"--window_ms must be positive, got {args.window_ms}")
    if not (Path(args.demo_run) / "run.json").is_file():
        p.error(f"--demo_run {args.demo_run} is not a run directory (no run.json)")
    t0 = time.perf_counter()
    result = compare(args)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    write_results(result, args.out)
    return 0


def compare(args) -> dict:
    """Both servers (and the baseline checkout's) on the same requests; the figures."""
    from apps.workbench.run_state import RunData

    scratch = Path(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    names = ("baseline", "off", "on") if args.baseline_checkout else ("off", "on")
    runs = {}
    for name in names:
        runs[name] = scratch / f"run_{name}"
        shutil.copytree(args.demo_run, runs[name],
                        ignore=shutil.ignore_patterns("checkpoints", "workbench"))
    data = RunData(runs["off"])
    _, _, weapon_vocab, _ = data.models()
    freq = data.index()["frequency"]  # saved in the copy: the servers read it back
    features = [int(f) for f in np.argsort(-freq, kind="stable")[:32]]
    for name in names:
        if name != "off":
            shutil.copytree(runs["off"] / "workbench", runs[name] / "workbench")
    del data
    total = args.cold + args.requests + args.alone
    bodies = request_mix(total, [int(g) for g in weapon_vocab.game_ids], features, args.seed)
    edited = sum("edits" in b for b in bodies)
    log(f"{total} requests ({edited} with features set), {args.clients} clients")
    result = {"machine": machine_info(),
              "settings": {"demo_run": args.demo_run, "requests": args.requests,
                           "clients": args.clients, "cold": args.cold, "alone": args.alone,
                           "seed": args.seed, "with_edits": edited}}
    if args.baseline_checkout:
        result["settings"]["baseline_checkout"] = args.baseline_checkout
        result["baseline"] = measure("baseline", runs["baseline"], None, bodies, args,
                                     Path(args.baseline_checkout).resolve())
    result["off"] = measure("off", runs["off"], 0.0, bodies, args)
    result["on"] = measure("on", runs["on"], args.window_ms, bodies, args)
    on = result["on"]
    for other in [n for n in names if n != "on"]:
        result[f"ratios_on_{other}"] = _ratios(on, result[other])
    result["targets"] = {"warm_p50_ms": TARGET_P50_MS, "warm_requests_per_s": TARGET_RPS,
                         "met": on["warm"]["p50_ms"] <= TARGET_P50_MS
                         and on["warm"]["requests_per_s"] >= TARGET_RPS}
    rows = [(f"{phase} {figure}", phase, key) for phase, figure, key in (
        ("warm", "p50 ms", "p50_ms"), ("warm", "p90 ms", "p90_ms"), ("warm", "p99 ms", "p99_ms"),
        ("warm", "requests/s", "requests_per_s"), ("cold", "p99 ms", "p99_ms"),
        ("alone", "p50 ms", "p50_ms"))]
    table("POST /api/complete, demo run", ["", *names, "on/off"],
          [[label, *(result[n][phase][key] for n in names),
            f"{on[phase][key] / result['off'][phase][key]:.2f}"] for label, phase, key in rows]
          + [["errors", *(sum(result[n][p]["errors"] for p in ("cold", "warm", "alone"))
                          for n in names), ""]])
    return result


if __name__ == "__main__":
    sys.exit(main())
