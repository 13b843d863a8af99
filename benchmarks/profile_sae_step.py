"""Where the time of one SAE training step goes, by timing its pieces.

    python benchmarks/profile_sae_step.py [--d_sae 2048] [--batch 1024] [--reps 12]

Every piece is timed interleaved with the others (one call of each per round,
best of ``--reps`` rounds), so a busy machine disturbs them alike. Pieces:
the whole step through ``sae_jax.step.make_train_steps`` in both modes, with
bfloat16 matmuls, and with candidate (or earlier) forms of the loss's parts
(``STEP_VARIANTS``);
the loss's value-and-gradient in both modes; a bare MSE + L1 loss; the soft
usage estimate (``sae_jax.losses.soft_usage_logit``) alone on all rows, on the
256 rows the step uses, and in a candidate form; the optimiser update; the
batch draw; the five matmuls alone.

The variants are what-if measurements only: they are swapped into
``sae_jax.losses`` while one step function is traced and put back afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import sae_jax.losses as losses  # noqa: E402
from benchmarks.sae_bench import _matmul_chain, random_activations  # noqa: E402
from sae_jax.activity import is_active  # noqa: E402
from sae_jax.buffer import ActivationBuffer, sample  # noqa: E402
from sae_jax.config import SAETrainConfig  # noqa: E402
from sae_jax.model import SAEConfig, create_sae, decode, encode  # noqa: E402
from sae_jax.step import init_train_state, make_train_steps  # noqa: E402
from sae_jax.transforms import make_optimizer  # noqa: E402


def soft_usage_logit_shared(pre, temperature=losses.USAGE_TEMPERATURE):
    """Same value as ``soft_usage_logit``: ``log_sigmoid(-z) = log_sigmoid(z) - z``, so one
    log-sigmoid per element serves both sums."""
    spread = jax.lax.stop_gradient(jnp.std(pre, axis=0))
    z = pre / (temperature * jnp.maximum(spread, 1e-6))
    ls = jax.nn.log_sigmoid(z)
    return jax.nn.logsumexp(ls, axis=0) - jax.nn.logsumexp(ls - z, axis=0)


def firing_counts_two_passes(h):
    """Same counts as ``firing_counts``, as two column sums (the step's earlier form)."""
    return (jnp.sum(h > 0, axis=0, dtype=jnp.uint32),
            jnp.sum(is_active(h), axis=0, dtype=jnp.uint32))


_ORIGINAL_SOFT_USAGE = losses.soft_usage_logit
SOFT_USAGE_VARIANTS = {"shared_log_sigmoid": soft_usage_logit_shared}
# What-if replacements of names inside sae_jax.losses, for whole-step timings.
STEP_VARIANTS = {"shared_log_sigmoid": {"soft_usage_logit": soft_usage_logit_shared},
                 "two_pass_counts": {"firing_counts": firing_counts_two_passes}}


@contextlib.contextmanager
def swapped_in_losses(replacements: dict):
    saved = {name: getattr(losses, name) for name in replacements}
    for name, fn in replacements.items():
        setattr(losses, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(losses, name, fn)


def build_pieces(d_in: int, d_sae: int, batch: int, k: int) -> dict:
    """name -> (callable returning something to block on, steps it covers)."""
    data = random_activations(max(4 * batch, 20_000), d_in)
    buf = ActivationBuffer(jnp.asarray(data), jnp.zeros((), jnp.int32),
                           jnp.asarray(data.shape[0], jnp.int32))
    sae = create_sae(SAEConfig(d_in, d_sae / d_in))
    params = sae.params()
    x = jnp.asarray(data[:batch])
    ema = jnp.full((d_sae,), 0.05)
    key = jax.random.key(0)
    pieces = {}

    def whole_step(name, original_behaviour, total_steps, variant=None,
                   compute_dtype="float32"):
        # A distinct total_steps gives each variant its own compiled function.
        cfg = SAETrainConfig(expansion_factor=d_sae / d_in, sae_batch_size=batch,
                             original_behaviour=original_behaviour, resample_steps=(),
                             compute_dtype=compute_dtype)
        with swapped_in_losses(variant or {}):
            run = make_train_steps(cfg, total_steps, k)
            holder = {"s": init_train_state(sae, cfg, total_steps)}
            holder["s"], _ = run(holder["s"], buf, key)  # compile under the variant

        def call():
            holder["s"], m = run(holder["s"], buf, key)
            return holder["s"], m

        pieces[name] = (call, k)

    whole_step("step_fixed", False, 100_000)
    whole_step("step_original_behaviour", True, 100_000)
    whole_step("step_fixed_bfloat16", False, 100_001, compute_dtype="bfloat16")
    for i, (vname, replacements) in enumerate(STEP_VARIANTS.items()):
        whole_step(f"step_fixed_with_{vname}", False, 100_002 + i, replacements)

    for mode, ob in (("fixed", False), ("original_behaviour", True)):
        cfg = SAETrainConfig(original_behaviour=ob, resample_steps=())
        f = jax.jit(jax.value_and_grad(
            lambda p, x, cfg=cfg: losses.sae_loss(p, x, ema, 100, cfg)[0]))
        pieces[f"loss_grad_{mode}"] = (lambda f=f: f(params, x), 1)

    def bare(p, x):
        _, h = encode(p, x, 6.0)
        return jnp.mean((decode(p, h) - x) ** 2) + 1e-6 * jnp.mean(jnp.sum(jnp.abs(h), -1))

    f_bare = jax.jit(jax.value_and_grad(bare))
    pieces["loss_grad_bare_mse_l1"] = (lambda: f_bare(params, x), 1)

    pre = encode(params, x, 6.0)[0]
    weights = jnp.linspace(-1.0, 1.0, d_sae)
    rows = SAETrainConfig().usage_estimate_rows
    for vname, fn, p in (("all_rows", _ORIGINAL_SOFT_USAGE, pre),
                         (f"{rows}_rows", _ORIGINAL_SOFT_USAGE, pre[:rows]),
                         *((f"{n}_all_rows", f, pre) for n, f in SOFT_USAGE_VARIANTS.items())):
        g = jax.jit(jax.value_and_grad(lambda p, fn=fn: jnp.sum(fn(p) * weights)))
        pieces[f"soft_usage_{vname}"] = (lambda g=g, p=p: g(p), 1)

    opt = make_optimizer(SAETrainConfig(resample_steps=()), 100_000)
    opt_state = opt.init(params)
    upd = jax.jit(lambda g, s, p: optax.apply_updates(p, opt.update(g, s, p)[0]))
    pieces["optimizer_update"] = (lambda: upd(params, opt_state, params), 1)
    draw = jax.jit(lambda b, key: sample(b, key, batch))
    pieces["batch_draw"] = (lambda: draw(buf, key), 1)

    chain = {"w": (jnp.array(params["W_enc"]), jnp.array(params["W_dec"]))}

    def chain_call():
        chain["w"] = _matmul_chain(x, *chain["w"], steps=k)
        return chain["w"]

    pieces["matmul_chain_10BDH"] = (chain_call, k)
    return pieces


def xla_costs(d_in: int, d_sae: int, batch: int) -> dict:
    """Load-independent work of the loss's value-and-gradient per variant, from XLA's cost
    analysis of the lowered program: FLOPs in units of BDH, transcendentals per (B, H)."""
    params = create_sae(SAEConfig(d_in, d_sae / d_in)).params()
    x = jax.random.normal(jax.random.key(0), (batch, d_in))
    ema = jnp.zeros((d_sae,))
    out = {}
    for mode, ob in (("fixed", False), ("original_behaviour", True)):
        cfg = SAETrainConfig(original_behaviour=ob, resample_steps=())
        for vname, replacements in (("current", {}), *STEP_VARIANTS.items()):
            with swapped_in_losses(replacements):
                cost = jax.jit(jax.value_and_grad(
                    lambda p, cfg=cfg: losses.sae_loss(p, x, ema, 100, cfg)[0])
                ).lower(params).cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            out[f"{mode}/{vname}"] = {
                "flops_in_bdh": cost["flops"] / (batch * d_in * d_sae),
                "transcendentals_per_bh": cost.get("transcendentals", 0.0) / (batch * d_sae)}
    return out


def profile(d_in=512, d_sae=2048, batch=1024, k=8, reps=12) -> dict:
    pieces = build_pieces(d_in, d_sae, batch, k)
    for fn, _ in pieces.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in pieces}
    for _ in range(reps):
        for name, (fn, steps) in pieces.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append((time.perf_counter() - t0) / steps)
    return {name: {"ms_best": 1e3 * min(t), "ms_median": 1e3 * float(np.median(t))}
            for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d_in", type=int, default=512)
    parser.add_argument("--d_sae", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps_per_call", type=int, default=8)
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    result = profile(args.d_in, args.d_sae, args.batch, args.steps_per_call, args.reps)
    bdh = args.batch * args.d_in * args.d_sae
    print(f"SAE step pieces, {args.d_in}->{args.d_sae}, batch {args.batch} "
          f"(per step; best / median of {args.reps} interleaved rounds; load {os.getloadavg()})")
    for name, r in result.items():
        print(f"  {name:44s} {r['ms_best']:8.2f} ms  {r['ms_median']:8.2f} ms")
    print(f"  (one BDH matmul = {2 * bdh / 1e9:.2f} GFLOP)")
    costs = xla_costs(args.d_in, args.d_sae, args.batch)
    print("loss value-and-gradient work (XLA cost analysis, independent of load)")
    for name, c in costs.items():
        print(f"  {name:52s} {c['flops_in_bdh']:6.2f} BDH FLOPs  "
              f"{c['transcendentals_per_bh']:5.2f} transcendentals per (B, H)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"shape": vars(args), "load_average": os.getloadavg(),
                       "pieces": result, "xla_costs": costs}, f, indent=2)
    return result


if __name__ == "__main__":
    main()
