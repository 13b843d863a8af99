"""Does transforming the SAE's input change which planted concepts it recovers?

MSE weighs each direction of the pooled vector by its variance; the demo primary's 64-d
pooled vector has most of its variance in about 12 directions. This script trains the
demo's BatchTopK recipe (k=11, 4x features, 6,000 steps of 1,024) on the pooled vectors
of a run's primary, as they are (``raw``), standardised per dimension (``standardise``)
or PCA-whitened (``whiten``), each rescaled to the raw vectors' mean norm, and scores
concept recovery on 2,000 fresh full builds (the same concept_recovery the runs use).

    python -m benchmarks.input_transform --workdir=runs/demo [--data=partial|whole]
        [--transforms=raw,standardise,whiten] [--seeds=0,1,2]

``--data=partial``: the training examples of 10,000 fresh builds (partial builds, as the
SAE run harvests them); ``whole``: 60,000 fresh full builds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.output import log, table, write_results  # noqa: E402
from benchmarks.timing import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "input_transform.json"
TRAIN_SEED, ANALYSIS_SEED = 1001, 2002  # fresh builds, apart from the runs' own seeds
STEPS, STEPS_PER_CALL = 6000, 100


def transforms(x: np.ndarray) -> dict:
    """name -> function of pooled vectors, fitted on ``x`` (the training vectors)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    ev, vecs = np.linalg.eigh(np.cov((x - mu).T))
    return {"raw": lambda z: z,
            "standardise": lambda z: (z - mu) / sd,
            "whiten": lambda z: ((z - mu) @ vecs) / np.sqrt(ev + 1e-3 * ev.max())}


def train_and_score(xt: np.ndarray, at: np.ndarray, pooled_a: np.ndarray, labels, names,
                    seed: int) -> dict:
    import jax
    import jax.numpy as jnp

    from sae_jax.buffer import create_buffer, push
    from sae_jax.concept_recovery import concept_recovery
    from sae_jax.config import SAETrainConfig
    from sae_jax.model import create_sae, sae_from_params
    from sae_jax.step import init_train_state, make_train_steps

    cfg = SAETrainConfig(architecture="batchtopk", k=11, expansion_factor=4, lr=1e-3,
                         weight_decay=0.01, grad_clip=1.0, lr_final_fraction=0.1,
                         resample_steps=(), dead_after_rows=262144, threshold_decay=0.99,
                         sae_batch_size=1024, buffer_size=len(xt), seed=seed)
    d = xt.shape[1]
    buf = push(create_buffer(len(xt), d), jnp.asarray(xt))
    state = init_train_state(create_sae(cfg.sae_config(d), seed=seed), cfg, STEPS)
    run = make_train_steps(cfg, STEPS, STEPS_PER_CALL)
    key = jax.random.key(seed)
    for _ in range(STEPS // STEPS_PER_CALL):
        state, _ = run(state, buf, key)
    params, ema = jax.device_get((state.params, state.usage_ema))
    sae = sae_from_params(cfg.sae_config(d), params, ema)
    _, post = sae.encode(jnp.asarray(at))
    recon = np.asarray(sae.decode(post))
    post = np.asarray(post)
    fve = 1.0 - float(((recon - at) ** 2).sum() / ((at - at.mean(0)) ** 2).sum())
    # Concepts are scored on the features; the raw-neuron baseline reads the raw vectors.
    res = concept_recovery(post, pooled_a, labels, names)
    return {"seed": seed, "recovered": res["summary"]["recovered"], "fve": fve,
            "l0": float((post > 0).sum(1).mean()),
            "missed": {r["concept"]: r["sae_f1"] for r in res["rows"] if r["sae_f1"] < 0.8}}


def measure(workdir: Path, data: str, names: list[str], seeds: list[int]) -> dict:
    from apps.runs.setup import run_concepts
    from bridge.causal import pooled_of_builds
    from bridge.harvest import harvest_array
    from primary.examples import make_examples
    from primary.model_dir import load_primary
    from primary.synthetic import SYNTHETIC_WEAPON_IDS, generate_builds
    from runkit.run_dir import RunDir

    primary, vocab, weapon_vocab = load_primary(RunDir(workdir).primary_dir())
    concepts = run_concepts(workdir)
    known = {int(g) for g in weapon_vocab.game_ids}
    weapons = [g for g in SYNTHETIC_WEAPON_IDS if g in known]
    if data == "partial":
        train = generate_builds(10_000, TRAIN_SEED, weapons=weapons, concepts=concepts)
        examples = make_examples(train, vocab, weapon_vocab, seed=0)
        x = harvest_array(primary, examples, 512)
    else:
        train = generate_builds(60_000, TRAIN_SEED, weapons=weapons, concepts=concepts)
        x = pooled_of_builds(primary, train, vocab, weapon_vocab)
    analysis = generate_builds(2_000, ANALYSIS_SEED, weapons=weapons, concepts=concepts)
    pooled_a = pooled_of_builds(primary, analysis, vocab, weapon_vocab)
    x, pooled_a = np.asarray(x, np.float32), np.asarray(pooled_a, np.float32)
    labels = np.asarray(analysis.concepts, bool)
    fns = transforms(x)
    raw_norm = np.sqrt((x ** 2).sum(1).mean())
    out = {}
    for name in names:
        xt, at = fns[name](x), fns[name](pooled_a)
        scale = raw_norm / np.sqrt((xt ** 2).sum(1).mean())
        xt, at = (xt * scale).astype(np.float32), (at * scale).astype(np.float32)
        out[name] = []
        for seed in seeds:
            log(f"{name}, seed {seed} ...")
            out[name].append(train_and_score(xt, at, pooled_a, labels,
                                             analysis.concept_names, seed))
    return {"workdir": str(workdir), "data": data, "training_rows": len(x),
            "analysis_builds": len(analysis), "steps": STEPS, "transforms": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, type=Path, help="a synthetic SAE run directory")
    p.add_argument("--data", choices=("partial", "whole"), default="partial")
    p.add_argument("--transforms", default="raw,standardise,whiten")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    names = [t for t in args.transforms.split(",") if t]
    unknown = sorted(set(names) - {"raw", "standardise", "whiten"})
    if unknown or not names:
        p.error(f"--transforms: unknown {unknown or 'none given'}; "
                "choose from raw, standardise, whiten")
    if not (args.workdir / "run.json").is_file():
        p.error(f"--workdir: {args.workdir} is not an SAE run directory (no run.json)")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    t0 = time.perf_counter()
    out = {"machine": machine_info(), **measure(args.workdir, args.data, names, seeds)}
    table(f"concepts recovered ({args.data} builds for training)",
          ["input", "per seed", "mean", "FVE (mean)"],
          [[n, ", ".join(str(r["recovered"]) for r in rs),
            f"{np.mean([r['recovered'] for r in rs]):.1f}",
            f"{np.mean([r['fve'] for r in rs]):.4f}"]
           for n, rs in out["transforms"].items()])
    out["wall_s"] = time.perf_counter() - t0
    write_results(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
