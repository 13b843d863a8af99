"""SAE training throughput: the original's torch loop, ours, and the matmul bound.

FLOP count of one SAE step (B = batch, D = input dim, H = features; a matmul of
(m, k) x (k, n) is 2mkn), the matmuls each implementation performs:
- forward: encoder 2BDH + decoder 2BHD = 4BDH;
- backward: dL/dh = dL/drecon @ atoms^T (2BDH); dL/dW_enc = x^T dL/dpre (2BDH);
  dL/dW_dec = h^T dL/drecon (2BDH, only when the decoder learns). The original
  also forms dL/dx_c = dL/dpre @ W_enc^T (2BDH) in full, only to sum it over rows
  into the decoder-bias gradient (x_c = x - b_dec); our encoder is written
  x @ W_enc + (b_enc - b_dec @ W_enc), so that gradient is a vector-matrix product;
- the original loop adds a second forward (4BDH) to log L0;
- elementwise work and the optimiser are O(DH + BH) and not counted.
So: ours fixed mode 10BDH, ours original-behaviour mode 8BDH, the original's loop
14BDH. 10BDH is the least work a step that learns the decoder needs, which the
matmul chain below performs.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import time_calls
from sae_jax.buffer import ActivationBuffer
from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEConfig, create_sae
from sae_jax.step import init_train_state, make_train_steps

STEP_SOURCE = "sae_jax.step.make_train_steps"


def sae_step_flops(batch: int, d_in: int, d_sae: int, *, learn_decoder: bool = True,
                   bias_grad_matmul: bool = False, second_forward: bool = False) -> int:
    """Matmul FLOPs of one step (module docstring); ``bias_grad_matmul``: the decoder-bias
    gradient is formed through a full (B, D) dL/dx_c."""
    bdh = batch * d_in * d_sae
    backward = 4 + (2 if learn_decoder else 0) + (2 if bias_grad_matmul else 0)
    return (4 + backward + (4 if second_forward else 0)) * bdh


def random_activations(rows: int, d_in: int, seed: int = 0) -> np.ndarray:
    """``(rows, d_in)`` float32 stand-ins for pooled vectors (dense math does not care)."""
    return np.random.default_rng(seed).standard_normal((rows, d_in), dtype=np.float32)


def _per_step(timing: dict, steps_per_call: int) -> dict:
    return {k: (v / steps_per_call if k != "all" else [t / steps_per_call for t in v])
            for k, v in timing.items()}


def throughput(per_step: dict, batch: int, flops: int) -> dict:
    """ms/step, activations/s and GFLOP/s from per-step timings ``{best, median, ...}``."""
    best = per_step["best"]
    return {
        "step_ms_best": 1e3 * best,
        "step_ms_median": 1e3 * per_step["median"],
        "activations_per_s": batch / best,
        "activations_per_s_median": batch / per_step["median"],
        "flops_per_step": flops,
        "gflops_per_s": flops / best / 1e9,
    }


def matmul_call(n: int, compute_dtype: str = "float32", *, reps: int = 1):
    """``(call, flops_per_call)``: ``reps`` jitted ``n^3`` matmuls through XLA, float32 or
    bfloat16 operands (float32 sums), the rate that step in that dtype is measured against."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    dtype = jnp.dtype(compute_dtype)
    a = jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype)
    dot = jax.jit(partial(jnp.matmul, preferred_element_type=jnp.float32))

    def call():
        for _ in range(reps):
            dot(a, b).block_until_ready()

    return call, 2 * n**3 * reps


def bench_matmul(n: int = 2048, reps: int = 5) -> dict:
    """GFLOP/s of an ``n^3`` float32 matmul through XLA (jitted jnp.dot) and torch."""
    call, flops = matmul_call(n)
    xla = time_calls(call, reps=reps, warmup=2)
    out = {"n": n, "xla_gflops": flops / xla["best"] / 1e9,
           "xla_gflops_median": flops / xla["median"] / 1e9}
    try:
        import torch
    except ImportError:
        return out
    rng = np.random.default_rng(0)
    ta = torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32))
    tb = torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32))
    tt = time_calls(lambda: torch.mm(ta, tb), reps=reps, warmup=2)
    out.update(torch_gflops=flops / tt["best"] / 1e9,
               torch_gflops_median=flops / tt["median"] / 1e9)
    return out


def torch_original_call(d_in: int, d_sae: int, batch: int, buffer: np.ndarray, *,
                        steps_per_call: int = 1):
    """``(call, flops_per_step)``: ``steps_per_call`` steps of the original's loop (randperm
    batch, step, second forward for L0, ``.item()`` on every logged scalar)."""
    import torch

    from benchmarks.original_torch import SAETrainer, SparseAutoencoder

    torch.manual_seed(0)
    trainer = SAETrainer(SparseAutoencoder(d_in, d_sae / d_in), batch_size=batch)
    data = torch.from_numpy(buffer)

    def call():
        for _ in range(steps_per_call):
            trainer.step(data)

    flops = sae_step_flops(batch, d_in, d_sae, learn_decoder=False, bias_grad_matmul=True,
                           second_forward=True)
    return call, flops


def bench_torch_original(d_in: int, d_sae: int, batch: int, buffer: np.ndarray, *,
                         steps: int, warmup: int = 2) -> dict:
    """The original's per-step loop, each step timed on its own."""
    call, flops = torch_original_call(d_in, d_sae, batch, buffer)
    return throughput(time_calls(call, reps=steps, warmup=warmup), batch, flops)


def jax_sae_call(d_in: int, d_sae: int, batch: int, buffer: np.ndarray, *, steps_per_call: int,
                 original_behaviour: bool = False, buffer_dtype: str = "float32",
                 compute_dtype: str = "float32"):
    """``(call, flops_per_step)``: ``steps_per_call`` of our SAE steps in one jitted scan,
    the state carried (and donated) from call to call; ``call()`` returns the step's metrics.
    The first call compiles."""
    cfg = SAETrainConfig(expansion_factor=d_sae / d_in, sae_batch_size=batch,
                         original_behaviour=original_behaviour, buffer_dtype=buffer_dtype,
                         compute_dtype=compute_dtype, buffer_size=buffer.shape[0],
                         min_buffer=min(batch, buffer.shape[0]), resample_steps=())
    total = 100_000
    sae = create_sae(SAEConfig(d_in, d_sae / d_in, cfg.clip_max), seed=0)
    rows = buffer.shape[0]
    buf = ActivationBuffer(jnp.asarray(buffer, dtype=buffer_dtype),
                           jnp.zeros((), jnp.int32), jnp.asarray(rows, jnp.int32))
    run = make_train_steps(cfg, total, steps_per_call)
    key = jax.random.key(0)
    holder = {"state": init_train_state(sae, cfg, total)}

    def call():
        holder["state"], metrics = run(holder["state"], buf, key)
        jax.block_until_ready((holder["state"], metrics))
        return metrics

    return call, sae_step_flops(batch, d_in, d_sae, learn_decoder=not original_behaviour)


def bench_jax_sae(d_in: int, d_sae: int, batch: int, buffer: np.ndarray, *,
                  steps_per_call: int, calls: int, original_behaviour: bool = False,
                  buffer_dtype: str = "float32", compute_dtype: str = "float32") -> dict:
    """Our SAE training: ``steps_per_call`` steps in one jitted scan; compile excluded."""
    call, flops = jax_sae_call(d_in, d_sae, batch, buffer, steps_per_call=steps_per_call,
                               original_behaviour=original_behaviour, buffer_dtype=buffer_dtype,
                               compute_dtype=compute_dtype)
    timing = time_calls(call, reps=calls, warmup=1)  # the warmup call compiles
    out = throughput(_per_step(timing, steps_per_call), batch, flops)
    out.update(steps_per_call=steps_per_call, step_source=STEP_SOURCE,
               compute_dtype=compute_dtype)
    return out


@partial(jax.jit, static_argnames="steps", donate_argnums=(1, 2))
def _matmul_chain(x, w_enc, w_dec, steps):
    """The five matmuls of a learning SAE step, ``steps`` times, with minimal other work."""

    def step(carry, _):
        we, wd = carry
        h = jax.nn.relu(x @ we)
        r = h @ wd - x
        dh = (r @ wd.T) * (h > 0)
        return (we - 1e-6 * (x.T @ dh), wd - 1e-6 * (h.T @ r)), None

    (w_enc, w_dec), _ = jax.lax.scan(step, (w_enc, w_dec), None, length=steps)
    return w_enc, w_dec


def matmul_chain_call(d_in: int, d_sae: int, batch: int, *, steps_per_call: int):
    """``(call, flops_per_step)``: the five matmuls a learning step needs (10BDH), with
    minimal other work: what XLA achieves on this machine for those shapes."""
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(k1, (batch, d_in))
    holder = {"w": (0.01 * jax.random.normal(k2, (d_in, d_sae)),
                    0.01 * jax.random.normal(k3, (d_sae, d_in)))}

    def call():
        holder["w"] = _matmul_chain(x, *holder["w"], steps=steps_per_call)
        jax.block_until_ready(holder["w"])

    return call, sae_step_flops(batch, d_in, d_sae)
