"""The analysis at scale: feature statistics, concept recovery and the report of a large SAE.

Times ``apps.analysis.pipeline.analyze_and_write`` (what ``python -m apps.analyze`` runs once
the pooled vectors are made: statistics, top builds, histograms, logit influence, concept
recovery, steering, co-activation, steered builds, explanations and the report) stage by
stage for a 512 -> ``--features`` SAE over ``--builds`` synthetic builds, with and without
the explanations, and reports the peak resident memory of the analysis (the process's
high-water mark reset as each stage starts, so the inputs held in memory count, their
making does not) and the size of the report.

Inputs, made before the clock starts:

- the builds: ``primary.synthetic`` with planted concepts (labels for concept recovery);
- the pooled vectors: the demo-shaped primary (1 layer, 64 wide, random) pools every build,
  and a fixed random projection lifts the 64-d vectors to 512-d plus 10% noise. A 512-wide
  primary forwards ~70 builds/s on this CPU (24 min for 100,000), and the analysis never
  reruns it over the builds, so that forward is not what is measured; the lifted vectors
  keep the builds' structure at the SAE's input width;
- a 512-wide primary (1 layer, random) for what the analysis does run through a primary:
  the output layer (logit influence, steering of the top builds) and the steered builds'
  completions;
- the SAE: random encoder rows, each feature's bias set so that it fires on a fraction of
  builds drawn log-uniformly from ``--min_rate`` to ``--max_rate`` (0.5%-10%: a trained
  SAE's features are sparse like that; the memory of the analysis grows with the number
  of positive activations, which this sets).

    python -m benchmarks.analysis_scale                               # 24,576 x 100,000
    python -m benchmarks.analysis_scale --sizes=2048x10000 --explanations
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.output import feature_build_sizes

RESULTS = Path(__file__).resolve().parent / "results" / "analysis_scale.json"
DEFAULT_SIZES = ("24576x100000",)
D_IN = 512
SMALL_WIDTH = 64  # the primary whose pooled vectors are lifted to D_IN


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark of this process (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_gib() -> float:
    """This process's resident high-water mark (since the last reset), GiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class PeakTimer:
    """A :class:`apps.analysis.feature_summary.StageTimer` that also keeps each stage's peak
    resident memory (the high-water mark reset as the stage starts, so what the stage holds
    from before counts too)."""

    def __init__(self):
        from apps.analysis.feature_summary import StageTimer

        self.timer = StageTimer()
        self.seconds = self.timer.seconds
        self.peak_gib: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        _reset_peak_rss()
        try:
            with self.timer(name):
                yield
        finally:
            self.peak_gib[name] = round(max(self.peak_gib.get(name, 0.0), _peak_rss_gib()), 2)


def make_inputs(features: int, builds: int, *, min_rate: float, max_rate: float,
                seed: int = 0):
    """``(primary, vocab, weapon_vocab, sae, builds, pooled)`` as the module docstring says."""
    import jax
    import numpy as np

    from bridge.causal import pooled_of_builds
    from primary.model import PrimaryConfig, create_model
    from primary.synthetic import generate_builds
    from primary.vocab import Vocab, WeaponVocab
    from sae_jax.model import SAEConfig, create_sae

    b = generate_builds(builds, seed=seed, progress=True)
    vocab = Vocab.canonical()
    weapon_vocab = WeaponVocab.from_game_ids(b.weapons)

    def primary_of(width: int):
        cfg = PrimaryConfig(vocab_size=len(vocab), weapon_vocab_size=len(weapon_vocab),
                            embedding_dim=32, hidden_dim=width, num_layers=1, num_heads=4,
                            num_inducing_points=8, pad_token_id=vocab.pad_id)
        return create_model(cfg, seed=seed)

    small = pooled_of_builds(primary_of(SMALL_WIDTH), b, vocab, weapon_vocab, 1024)
    rng = np.random.default_rng(seed)
    lift = rng.normal(size=(SMALL_WIDTH, D_IN)).astype(np.float32) / np.sqrt(SMALL_WIDTH)
    pooled = small @ lift
    pooled += 0.1 * pooled.std() * rng.normal(size=pooled.shape).astype(np.float32)
    del small

    sae = create_sae(SAEConfig(input_dim=D_IN, expansion_factor=features / D_IN), seed=seed)
    params = sae.params()
    w_enc = np.asarray(params["W_enc"])
    sample = pooled[rng.choice(len(pooled), min(len(pooled), 2000), replace=False)]
    sample = sample - np.asarray(params["b_dec"])
    rate = np.exp(rng.uniform(np.log(min_rate), np.log(max_rate), features))
    bias = np.empty(features, np.float32)
    for f0 in range(0, features, 4096):  # each feature's bias: minus its (1 - rate) quantile
        pre = np.sort(sample @ w_enc[:, f0:f0 + 4096], axis=0)
        pick = ((1 - rate[f0:f0 + 4096]) * (len(pre) - 1)).astype(int)
        bias[f0:f0 + 4096] = -pre[pick, np.arange(pre.shape[1])]
    params["b_enc"] = jax.numpy.asarray(bias)
    sae.set_params(params)
    return primary_of(D_IN), vocab, weapon_vocab, sae, b, pooled


def run_one(features: int, builds: int, *, explanations: bool, min_rate: float,
            max_rate: float, seed: int = 0) -> dict:
    """One size, in this process: stage times (s), peak memory (GiB), report size (MB)."""
    from apps.analysis.pipeline import analyze_and_write

    t0 = time.perf_counter()
    primary, vocab, weapon_vocab, sae, b, pooled = make_inputs(
        features, builds, min_rate=min_rate, max_rate=max_rate, seed=seed)
    t_inputs = time.perf_counter() - t0
    reset = _reset_peak_rss()
    timer = PeakTimer()
    with tempfile.TemporaryDirectory() as workdir:
        t1 = time.perf_counter()
        doc = analyze_and_write(workdir, primary, vocab, weapon_vocab, sae, b, pooled,
                                explanations=explanations, timer=timer)
        seconds = time.perf_counter() - t1
        report = Path(workdir) / "report"
        sizes = {p.name: round(p.stat().st_size / 1e6, 2) for p in sorted(report.iterdir())}
    peaks = timer.peak_gib
    stages = {k: round(v, 1) for k, v in timer.seconds.items()}
    return {"features": features, "builds": builds, "d_in": D_IN,
            "explanations": explanations, "seconds": round(seconds, 1),
            "seconds_without_explanations": round(seconds - timer.seconds.get(
                "explanations", 0.0), 1),
            "stages": stages, "peak_gib": max(peaks.values()),
            "peak_gib_without_explanations": max(v for k, v in peaks.items()
                                                 if k != "explanations"),
            "stage_peak_gib": peaks, "peak_is_analysis_only": reset,
            "input_seconds": round(t_inputs, 1), "report_mb": sizes,
            "positive_activations": doc["positive_activations"],
            "rate_range": [min_rate, max_rate], "ranked": doc["num_ranked"],
            "shown": len(doc["pages"]),
            "load_average_end": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                   help="comma-separated FEATURESxBUILDS")
    p.add_argument("--explanations", action="store_true",
                   help="also time the explanation stage (apps.analysis.explanations)")
    p.add_argument("--min_rate", type=float, default=0.005)
    p.add_argument("--max_rate", type=float, default=0.10)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process's size
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if not 0 < args.min_rate <= args.max_rate < 1:
        p.error(f"--min_rate {args.min_rate} and --max_rate {args.max_rate}: need "
                "0 < min <= max < 1")
    if args.one:
        f, n = (int(x) for x in args.one.split("x"))
        print(json.dumps(run_one(f, n, explanations=args.explanations,
                                 min_rate=args.min_rate, max_rate=args.max_rate)))
        return 0
    rows = []
    try:
        sizes = feature_build_sizes(args.sizes)
    except ValueError as e:
        p.error(str(e))
    for f, n in sizes:
        load = os.getloadavg()
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        cmd = [sys.executable, "-m", "benchmarks.analysis_scale", f"--one={f}x{n}",
               f"--min_rate={args.min_rate}", f"--max_rate={args.max_rate}"]
        out = subprocess.run(cmd + (["--explanations"] if args.explanations else []),
                             env=env, stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            return out.returncode
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["load_average_start"] = [round(x, 2) for x in load]
        rows.append(row)
        print(f"{f:>6} features x {n:>7} builds: {row['seconds']:.1f} s "
              f"({row['seconds_without_explanations']:.1f} s without explanations), peak "
              f"{row['peak_gib']:.2f} GiB ({row['peak_gib_without_explanations']:.2f} GiB "
              f"without), report {row['report_mb']} MB; stages "
              f"{row['stages']}; inputs {row['input_seconds']} s (not timed)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "cpus": os.cpu_count(),
                                          "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                time.gmtime())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
