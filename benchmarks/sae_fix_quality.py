"""Does fixing the original's two SAE defects pay off? A by-hand check on known sparse data.

Data: ``x = offset + codes @ atoms`` with ``n_atoms`` random unit atoms in ``d`` dims and
``k`` active atoms per row (magnitudes uniform in [0.5, 1.5]). Trains the SAE four ways on
the same data, steps and optimiser, over a few L1 coefficients: ``fixed`` (learned decoder,
usage penalty with gradient; the original's usage coefficient 1.5 and a tenth of it,
``fixed_usage_0.15``), ``decoder_fix_only`` (learned decoder, usage coefficient 0)
and ``original`` (frozen random decoder, gradient-free usage term). Reports held-out FVE,
L0, dead features (never fire on held-out rows), features firing on more than half the
rows, and how many true atoms the learned dictionary recovers (max cosine > 0.9).

    python -m benchmarks.sae_fix_quality   # about 15 minutes on 2 busy CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from sae_jax.buffer import ActivationBuffer
from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEConfig, create_sae, decode, encode, unit_rows
from sae_jax.step import init_train_state, make_train_steps


def sparse_dataset(rows: int, d: int, n_atoms: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    offset = rng.standard_normal(d) * 0.5
    active = np.argsort(rng.random((rows, n_atoms)), axis=1)[:, :k]
    codes = np.zeros((rows, n_atoms))
    np.put_along_axis(codes, active, rng.uniform(0.5, 1.5, (rows, k)), axis=1)
    return (offset + codes @ atoms).astype(np.float32), atoms


def evaluate(params, x: np.ndarray, clip_max: float, true_atoms: np.ndarray) -> dict:
    _, h = encode(params, jnp.asarray(x), clip_max)
    recon = np.asarray(decode(params, h))
    h = np.asarray(h)
    fve = 1 - np.sum((recon - x) ** 2) / np.sum((x - x.mean(0)) ** 2)
    cos = np.asarray(unit_rows(params["W_dec"])) @ true_atoms.T
    fired = (h > 0).mean(0)
    return {
        "fve": float(fve),
        "l0": float((h > 0).sum(1).mean()),
        "dead": int((fired == 0).sum()),
        "overused_gt_50pct": int((fired > 0.5).sum()),
        "atoms_recovered": int((cos.max(0) > 0.9).sum()),
    }


def train(cfg: SAETrainConfig, data: np.ndarray, steps: int, chunk: int, seed: int):
    d = data.shape[1]
    sae = create_sae(SAEConfig(d, cfg.expansion_factor, cfg.clip_max), seed=seed)
    state = init_train_state(sae, cfg, steps)
    buf = ActivationBuffer(jnp.asarray(data), jnp.zeros((), jnp.int32),
                           jnp.asarray(data.shape[0], jnp.int32))
    run = make_train_steps(cfg, steps, chunk)
    key = jax.random.key(seed)
    for _ in range(steps // chunk):
        state, metrics = run(state, buf, key)
    assert bool(metrics["finite"]), "training diverged"
    return state


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--n_atoms", type=int, default=256)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--l1", type=float, nargs="+", default=[3e-3, 1e-2])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    data, atoms = sparse_dataset(55_000, args.d, args.n_atoms, args.k, args.seed)
    train_x, test_x = data[:50_000], data[50_000:]
    base = SAETrainConfig(
        expansion_factor=args.n_atoms / args.d, lr=args.lr, sae_batch_size=256,
        buffer_size=train_x.shape[0], min_buffer=256, l1_warmup_steps=args.steps // 8,
        usage_warmup_steps=args.steps // 8, usage_period=args.steps * 2,
        resample_steps=(args.steps // 4, args.steps // 2), dead_threshold=1e-5,
    )
    results = []
    for l1 in args.l1:
        modes = {
            "fixed": dict(original_behaviour=False),
            "fixed_usage_0.15": dict(original_behaviour=False, usage_coeff=0.15,
                                     usage_floor=0.005),
            "decoder_fix_only": dict(original_behaviour=False, usage_coeff=0.0, usage_floor=0.0),
            "original": dict(original_behaviour=True),
        }
        for mode, settings in modes.items():
            cfg = dataclasses.replace(base, l1_coeff=l1, **settings)
            state = train(cfg, train_x, args.steps, 500, args.seed)
            row = {"mode": mode, "l1_coeff": l1,
                   **evaluate(state.params, test_x, cfg.clip_max, atoms)}
            results.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
