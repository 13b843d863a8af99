"""The primary's training step: batches cut into length parts against whole padded batches.

    python benchmarks/primary_step_bench.py [--flagfile=primary/configs/primary_demo.flags]
        [--batches=16 --rounds=5 --out=benchmarks/results/primary_step.json]

The primary trains on the demo's examples (``--flagfile``: its model, data and batch
size), the same ``--batches`` batches of the first epoch in both forms, from the same
initial state:

- ``parts``: each batch cut by ``primary.examples.split_by_length`` into the run's length
  parts (at most ``primary.training.train_parts``, or ``--parts``; rows and widths from
  ``part_layout`` over every epoch of the run), as ``primary.training`` trains;
- ``whole``: each batch padded to the widest bucket (16 positions), one part: the form
  the step had before.

The two are timed in interleaved rounds (one pass over the batches each per round);
reported: ms per step, the per-round ratio parts / whole, each form's compile time, and
how far apart the two forms' parameters end (float rounding only: both compute the same
loss and gradient, ``tests/primary/test_primary_train.py``; with ``--dropout`` above 0
the forms draw different masks and end further apart).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.output import log, table, write_results  # noqa: E402
from benchmarks.timing import machine_info, time_interleaved  # noqa: E402


def train_config(flagfile: str):
    """The PrimaryTrainConfig a flagfile gives ``python -m primary.train``."""
    from absl import flags

    import primary.train as cli

    flags.FLAGS.unparse_flags()
    flags.FLAGS([sys.argv[0], f"--flagfile={flagfile}"])
    return cli.config_from_flags()


def bench(flagfile: str, batches: int, rounds: int, parts: int | None = None) -> dict:
    from primary import training
    from primary.examples import (
        LENGTH_BUCKETS,
        iterate_batches,
        pad_to_width,
        part_layout,
        split_by_length,
    )

    cfg, concepts = train_config(flagfile).with_concept_set()
    data = training.prepare_data(cfg, concepts)
    pad_id = data.vocab.pad_id
    model_cfg = cfg.model_config(len(data.vocab), len(data.weapon_vocab), pad_id)
    graphdef, params = nnx.split(training.create_model(model_cfg, cfg.seed), nnx.Param)
    tx = training.make_optimizer(cfg.lr, cfg.weight_decay)
    layout = part_layout(data.train, cfg.batch_size, parts or training.train_parts(cfg.batch_size),
                         seed=cfg.seed, epochs=range(cfg.epochs))
    taken = [b for _, b in zip(range(batches), iterate_batches(
        data.train, cfg.batch_size, seed=cfg.seed, epoch=0))]
    forms = {
        "parts": [split_by_length(b, layout, pad_id) for b in taken],
        "whole": [(pad_to_width(b, LENGTH_BUCKETS[-1], pad_id),) for b in taken],
    }
    key = jax.random.key(cfg.seed)
    # Each form gets its own jit (and state): its compile time is its own.
    steps = {name: jax.jit(training.train_step, static_argnames=("graphdef", "tx"),
                           donate_argnums=(0, 1)) for name in forms}
    state = {name: jax.tree.map(np.array, (params, tx.init(params))) for name in forms}
    compile_s = {}
    for name, step in steps.items():
        t0 = time.perf_counter()
        step.lower(*state[name], forms[name][0], key, graphdef=graphdef, tx=tx).compile()
        compile_s[name] = time.perf_counter() - t0

    def one_pass(name):
        def run():
            p, o = state[name]
            for batch in forms[name]:
                p, o, loss = steps[name](p, o, batch, key, graphdef=graphdef, tx=tx)
            jax.block_until_ready(loss)
            state[name] = (p, o)
        return run

    log(f"primary step: {batches} batches of {cfg.batch_size}, parts (rows, width) "
        f"{layout} against whole batches at {LENGTH_BUCKETS[-1]}, {rounds} rounds ...")
    times = time_interleaved({name: one_pass(name) for name in forms}, rounds=rounds, warmup=1)
    t_parts, t_whole = np.asarray(times["parts"]), np.asarray(times["whole"])
    ratio = t_parts / t_whole
    # Both forms took the same steps over the same batches from the same start: their
    # parameters agree up to float rounding, or one form timed other work.
    apart = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(state["parts"][0]),
                                jax.tree.leaves(state["whole"][0])))
    return {
        "flagfile": flagfile, "batch_size": cfg.batch_size, "batches": batches,
        "rounds": rounds, "parts": len(layout), "layout": [list(p) for p in layout],
        "hidden_dim": cfg.hidden_dim, "num_layers": cfg.num_layers,
        "parts_ms_per_step_median": 1e3 * float(np.median(t_parts)) / batches,
        "whole_ms_per_step_median": 1e3 * float(np.median(t_whole)) / batches,
        "parts_over_whole_median": float(np.median(ratio)),
        "parts_over_whole_all": ratio.tolist(),
        "compile_s": compile_s,
        "params_max_abs_difference": apart,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flagfile",
                   default=os.path.join(REPO_ROOT, "primary", "configs", "primary_demo.flags"),
                   help="a primary.train flagfile: the model, data and batch size")
    p.add_argument("--batches", type=int, default=16,
                   help="batches of the first epoch timed per round, in each form")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    p.add_argument("--parts", type=int, default=None,
                   help="length parts per batch (default: as primary.training trains)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result = {"machine": machine_info(),
              "primary_step": bench(args.flagfile, args.batches, args.rounds,
                                          args.parts)}
    result["wall_s"] = time.perf_counter() - t0
    r = result["primary_step"]
    table("primary training step (median over rounds)",
          ["form", "ms per step", "compile s"],
          [["parts " + str(r["layout"]), r["parts_ms_per_step_median"], r["compile_s"]["parts"]],
           ["whole (16)", r["whole_ms_per_step_median"], r["compile_s"]["whole"]]])
    log(f"parts / whole: {r['parts_over_whole_median']:.3f} (per round "
        f"{', '.join(f'{x:.3f}' for x in r['parts_over_whole_all'])}); parameters end "
        f"{r['params_max_abs_difference']:.2g} apart at most")
    if args.out:
        write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
