"""Synthetic build world at scale: speed, legality, honest labels, concept frequencies.

Generates ``--num_builds`` builds (default 1,000,000) in chunks, checks every
build against the game's rules and every concept label against its
requirement, and writes ``benchmarks/results/synthetic_world.json``.
Run: ``python -m benchmarks.synthetic_world`` (about 10-30 s on 2 CPU cores).

Rates are reported both per wall-clock second and per CPU second of this
process: on a shared machine the wall-clock figure drops with the load.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np
from absl import app, flags

from primary.examples import make_examples
from primary.planted_concepts import CONCEPT_NAMES, concept_holds
from primary.sources import default_vocabs
from primary.synthetic import generate_builds

NUM_FLAG = flags.DEFINE_integer("num_builds", 1_000_000, "builds to generate")
CHUNK_FLAG = flags.DEFINE_integer("chunk", 200_000, "builds per generate_builds call")
SEED_FLAG = flags.DEFINE_integer("seed", 0, "base seed (chunk i uses seed + i)")
OUT_FLAG = flags.DEFINE_string(
    "out", os.path.join(os.path.dirname(__file__), "results", "synthetic_world.json"),
    "where to write the results")


def run(num_builds: int, chunk: int, seed: int) -> dict:
    gen_wall = gen_cpu = 0.0
    legal = honest = total = 0
    label_counts = np.zeros(len(CONCEPT_NAMES), np.int64)
    per_build = np.zeros(4, np.int64)
    for i, start in enumerate(range(0, num_builds, chunk)):
        n = min(chunk, num_builds - start)
        w0, c0 = time.perf_counter(), time.process_time()
        builds = generate_builds(n, seed + i)
        gen_wall += time.perf_counter() - w0
        gen_cpu += time.process_time() - c0
        legal += int(builds.check_legal().sum())
        honest += int((concept_holds(builds.ap) | ~builds.concepts).all(1).sum())
        label_counts += builds.concepts.sum(0)
        per_build += np.bincount(builds.concepts.sum(1), minlength=4)[:4]
        total += n
        print(f"chunk {i}: {total} builds, {total / gen_wall:,.0f} builds/s (wall)")
    # Example making on the last chunk, for scale.
    vocab, weapon_vocab = default_vocabs()
    w0, c0 = time.perf_counter(), time.process_time()
    ex = make_examples(builds, vocab, weapon_vocab, seed=seed)
    ex_wall, ex_cpu = time.perf_counter() - w0, time.process_time() - c0
    return {
        "num_builds": total,
        "builds_per_s_wall": total / gen_wall,
        "builds_per_s_cpu": total / gen_cpu,
        "generate_wall_s": gen_wall,
        "generate_cpu_s": gen_cpu,
        "legal_fraction": legal / total,
        "honest_label_fraction": honest / total,
        "concepts_per_build": {str(k): int(v) for k, v in enumerate(per_build)},
        "concept_frequency": {n: float(c) / total for n, c in zip(CONCEPT_NAMES, label_counts)},
        "make_examples": {"builds": len(builds), "examples": len(ex), "wall_s": ex_wall,
                          "cpu_s": ex_cpu},
        "machine": {"cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                    "python": platform.python_version(), "numpy": np.__version__},
    }


def main(argv):
    del argv
    result = run(NUM_FLAG.value, CHUNK_FLAG.value, SEED_FLAG.value)
    print(json.dumps(result, indent=2))
    if result["legal_fraction"] != 1.0 or result["honest_label_fraction"] != 1.0:
        raise SystemExit("illegal builds or dishonest labels: see above")
    os.makedirs(os.path.dirname(OUT_FLAG.value), exist_ok=True)
    with open(OUT_FLAG.value, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {OUT_FLAG.value}")


if __name__ == "__main__":
    app.run(main)
