"""Build completion speed: one completion, and many at once.

    python benchmarks/completion.py [--demo_primary=runs/demo/primary_run/model]
        [--beam_size=4] [--batch_builds=1000] [--full_batch_builds=0] [--out=FILE.json]

Measures, on whatever JAX runs on:

- one completion (``primary.completion.complete_build``, beam 4) with the demo primary and
  with a full-size primary (``primary/configs/primary_splatnlp.flags`` sizes, 83 M parameters,
  random initialisation: the work does not depend on the weights); two partial builds
  (a nearly empty one, which needs the most steps, and a half-full one); best and median of
  several calls after one warm-up call (the first call compiles, reported apart);
- batched completion (``complete_builds``) of ``--batch_builds`` held-out synthetic builds
  with 6 of 12 slots hidden, in builds per second (demo primary; the full-size primary too
  when ``--full_batch_builds`` > 0, meant for accelerators).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.output import log  # noqa: E402
from benchmarks.timing import machine_info, time_calls  # noqa: E402
from primary import PRIMARY_CONFIGS
from primary.completion import complete_build, complete_builds  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_DEMO = flags.DEFINE_string("demo_primary", "runs/demo/primary_run/model",
                            "the demo primary model directory")
_BEAM = flags.DEFINE_integer("beam_size", 4, "beam width")
_BATCH = flags.DEFINE_integer("batch_builds", 1000, "builds completed at once (demo primary)")
_FULL_BATCH = flags.DEFINE_integer("full_batch_builds", 0,
                                   "builds completed at once with the full-size primary")
_REPS = flags.DEFINE_integer("reps", 5, "timed calls per single-completion figure")
_OUT = flags.DEFINE_string("out", None, "write the figures to this JSON file")

PARTIAL_BUILDS = {
    "nearly empty": {"ninja_squid": 10},
    "half full": {"ninja_squid": 10, "swim_speed_up": 16, "quick_super_jump": 6,
                  "ink_resistance_up": 3},
}


def full_size_primary(vocab, weapon_vocab):
    from primary.model import count_params, create_model
    from primary.training import PrimaryTrainConfig
    from runkit.flags import config_from_flagfile

    cfg = config_from_flagfile(PrimaryTrainConfig, PRIMARY_CONFIGS / "primary_splatnlp.flags",
                               ignore=("workdir",))
    model = create_model(cfg.model_config(len(vocab), len(weapon_vocab), vocab.pad_id), seed=0)
    return model, count_params(model)


def single(model, vocab, weapon_vocab, beam: int, reps: int) -> dict:
    out = {}
    for name, observed in PARTIAL_BUILDS.items():
        t0 = time.perf_counter()
        complete_build(model, vocab, weapon_vocab, 40, observed, beam_size=beam)
        first = time.perf_counter() - t0
        t = time_calls(lambda obs=observed: complete_build(model, vocab, weapon_vocab, 40, obs,
                                                           beam_size=beam),
                       reps=reps, warmup=1)
        out[name] = {"first_call_s": round(first, 3), "best_s": round(t["best"], 4),
                     "median_s": round(t["median"], 4)}
        log(f"  {name}: best {t['best'] * 1e3:.1f} ms, median {t['median'] * 1e3:.1f} ms "
            f"(first call {first:.2f} s)")
    return out


def held_out(vocab, weapon_vocab, n: int):
    from primary.eval_completion import hide, slot_items
    from primary.sources import load_builds

    builds = load_builds("synthetic", num_builds=n, seed=11, weapon_vocab=weapon_vocab)
    mains, subs = slot_items(builds.ap)
    observed, _ = hide(mains, subs, 6, np.random.default_rng(0))
    return builds.weapons, observed


def batched(model, vocab, weapon_vocab, n: int, beam: int) -> dict:
    weapons, observed = held_out(vocab, weapon_vocab, n)
    complete_builds(model, vocab, weapon_vocab, weapons[:8], observed[:8], beam_size=beam,
                    rows_per_call=min(n * beam, 1024))  # compile outside the timing
    t0 = time.perf_counter()
    out = complete_builds(model, vocab, weapon_vocab, weapons, observed, beam_size=beam)
    seconds = time.perf_counter() - t0
    from primary.eval_completion import legal

    ok = int(legal(out.mains, out.subs, observed).sum())
    log(f"  {n} builds in {seconds:.1f} s: {n / seconds:.0f} builds/s ({ok}/{n} legal)")
    return {"builds": n, "seconds": round(seconds, 2), "builds_per_s": round(n / seconds, 1),
            "legal": ok}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from primary.model_dir import load_primary

    result = {"machine": machine_info(), "beam_size": _BEAM.value}
    demo, vocab, weapon_vocab = load_primary(_DEMO.value)
    log(f"demo primary {_DEMO.value}: one completion")
    result["demo_single"] = single(demo, vocab, weapon_vocab, _BEAM.value, _REPS.value)
    log(f"demo primary: {_BATCH.value} builds at once")
    result["demo_batched"] = batched(demo, vocab, weapon_vocab, _BATCH.value, _BEAM.value)
    full, n_params = full_size_primary(vocab, weapon_vocab)
    log(f"full-size primary ({n_params / 1e6:.1f} M parameters, random init): one completion")
    result["full_params"] = n_params
    result["full_single"] = single(full, vocab, weapon_vocab, _BEAM.value, _REPS.value)
    if _FULL_BATCH.value > 0:
        log(f"full-size primary: {_FULL_BATCH.value} builds at once")
        result["full_batched"] = batched(full, vocab, weapon_vocab, _FULL_BATCH.value,
                                         _BEAM.value)
    print(json.dumps(result, indent=1))
    if _OUT.value:
        Path(_OUT.value).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    app.run(main)
