"""The whole SAE training loop: harvest + buffer + SAE steps + host work, ours vs the original.

Both sides run the same primary weights on the same training examples, in the
same order, with the buffer already holding ``min_buffer`` rows (the steady
state of a run), and time ``num_batches`` primary batches end to end:

- the original (``benchmarks.original_torch``): per primary batch, build the
  batch's padded tensors (its collate: right-padded to the batch's longest),
  the primary forward under ``torch.inference_mode``, the append to its
  circular buffer tensor, then ``steps_per_batch`` SAE steps of its trainer
  (``randperm`` batch over the filled buffer, step, second forward for L0);
- ours, the code the training loop runs (:mod:`apps.training.single_run`): the
  block's host arrays (:func:`bridge.harvest_blocks.host_block`), its length
  groups through the primary (:func:`~bridge.harvest_blocks.harvest_block`)
  and one chunk call (:mod:`apps.training.chunk`) that pushes each batch and runs its
  SAE steps; timing ends when the device is done.

The figure is SAE steps per second including the harvesting; its ratio is per
round, both sides taking turns.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from apps.training.chunk import fresh_health, make_chunk_fn, single_steps
from benchmarks.timing import summarize
from bridge.harvest_blocks import (
    BlockLayout,
    block_example_indices,
    create_staging,
    harvest_block,
    host_block,
    null_pooled_table,
    to_device,
)
from primary.model import PrimaryConfig, create_model
from runkit.sharding import batch_sharding, make_mesh, replicate
from sae_jax.buffer import ActivationBuffer
from sae_jax.config import SAETrainConfig
from sae_jax.model import create_sae
from sae_jax.step import init_train_state

TOTAL_STEPS = 100_000  # sets the schedules; any value does for timing


def ours_loop_call(model, cfg: SAETrainConfig, examples, indices: np.ndarray, prefill):
    """``call()`` running our loop over the batches ``indices`` ``(n, B)`` (one block)."""
    n, batch = indices.shape
    mesh = make_mesh(jax.devices()[:1])
    layout = BlockLayout.for_batch_size(batch, block_rows=max(n * batch, 1))
    graphdef, primary_state = nnx.split(model)
    table = null_pooled_table(model, examples.null_id, mesh)
    sae_config = cfg.sae_config(model.config.hidden_dim)
    steps = single_steps(cfg, TOTAL_STEPS, cfg.sae_steps_per_primary_step, batch_sharding(mesh))
    chunk = make_chunk_fn(steps, layout.batches, train=True, batch_sharding=batch_sharding(mesh))
    # Placed as the training loop places them (replicated state, buffer rows split).
    data = np.zeros((cfg.buffer_size, prefill.shape[1]), np.float32)
    data[:len(prefill)] = prefill
    pos, fill = (replicate(jnp.asarray(len(prefill), jnp.int32), mesh) for _ in range(2))
    holder = {"state": replicate(init_train_state(create_sae(sae_config, seed=cfg.seed), cfg,
                                                  TOTAL_STEPS), mesh),
              "buffer": ActivationBuffer(jax.device_put(data, batch_sharding(mesh)), pos, fill),
              "staging": create_staging(layout, model.config.hidden_dim, mesh)}
    key = replicate(jax.random.PRNGKey(cfg.seed), mesh)

    def call():
        block = to_device(host_block(examples, layout, indices, 0), mesh)
        holder["staging"] = harvest_block(graphdef, primary_state, block, holder["staging"])
        holder["state"], holder["buffer"], health, metrics = chunk(
            holder["state"], holder["buffer"], key, fresh_health(), holder["staging"], table,
            block.is_null, block.weapons, np.int32(0), np.int32(n))
        jax.block_until_ready((holder["state"], holder["buffer"], health, metrics))
        return metrics[0]  # the one SAE's metrics

    return call


def original_loop_call(tmodel, cfg: SAETrainConfig, examples, indices: np.ndarray, prefill):
    """``call(num_batches=None)`` running the original's loop over the batches ``indices``."""
    import torch

    from benchmarks.original_torch import SAETrainer, SparseAutoencoder

    torch.manual_seed(cfg.seed)
    d_in = prefill.shape[1]
    sae = SparseAutoencoder(d_in, cfg.expansion_factor, cfg.clip_max, cfg.target_usage)
    trainer = SAETrainer(sae, lr=cfg.lr, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                         l1_coeff=cfg.l1_coeff, usage_coeff=cfg.usage_coeff,
                         batch_size=cfg.sae_batch_size, total_steps=TOTAL_STEPS)
    buf = torch.zeros(cfg.buffer_size, d_in)
    buf[:len(prefill)] = torch.from_numpy(prefill)
    state = {"pos": len(prefill), "fill": len(prefill)}

    def call(num_batches=None):
        for idx in indices[:num_batches]:
            width = int(examples.lengths[idx].max())  # its collate: pad to the longest
            tokens = examples.tokens[idx, :width]
            t_tokens = torch.from_numpy(tokens.astype(np.int64))
            t_weapons = torch.from_numpy(examples.weapons[idx].astype(np.int64))
            t_mask = torch.from_numpy(tokens == examples.pad_id)
            with torch.inference_mode():
                pooled = tmodel.pooled(t_tokens, t_weapons, t_mask)
                tmodel.output_layer(pooled)
            rows = torch.arange(state["pos"], state["pos"] + len(idx)) % cfg.buffer_size
            buf[rows] = pooled
            state["pos"] = (state["pos"] + len(idx)) % cfg.buffer_size
            state["fill"] = min(state["fill"] + len(idx), cfg.buffer_size)
            for _ in range(cfg.sae_steps_per_primary_step):
                trainer.step(buf[:state["fill"]])

    return call


def bench_loop(primary_cfg: PrimaryConfig, cfg: SAETrainConfig, examples, *,
               num_batches: int, rounds: int, with_torch: bool = True, seed: int = 0) -> dict:
    """SAE steps/s of both loops over the first ``num_batches`` primary batches of epoch 0."""
    batch = cfg.primary_batch_size
    model = create_model(primary_cfg, seed=0)
    indices = block_example_indices(examples, seed=seed, batch_size=batch,
                                    batches_per_epoch=len(examples) // batch, first_batch=0,
                                    num_batches=num_batches)
    prefill = np.random.default_rng(seed).standard_normal(
        (cfg.min_buffer, primary_cfg.hidden_dim), dtype=np.float32)
    ours = ours_loop_call(model, cfg, examples, indices, prefill)
    t0 = time.perf_counter()
    ours()  # compiles every group width and the chunk
    compile_s = time.perf_counter() - t0
    ours()  # a second untimed call: any recompilation for the outputs' placement lands here
    original = None
    if with_torch:
        from benchmarks.harvest_bench import torch_model_like

        original = original_loop_call(torch_model_like(model, primary_cfg), cfg, examples,
                                      indices, prefill)
        original(1)  # warm up on one batch
    times = {"ours": [], "original": []}
    finite = True
    for _ in range(rounds):
        t0 = time.perf_counter()
        finite &= bool(np.all(np.asarray(ours()["finite"])[:num_batches]))
        times["ours"].append(time.perf_counter() - t0)
        if original is not None:
            t0 = time.perf_counter()
            original()
            times["original"].append(time.perf_counter() - t0)
    steps = num_batches * cfg.sae_steps_per_primary_step
    ours_t = summarize(times["ours"])
    out = {"primary": {k: getattr(primary_cfg, k) for k in ("hidden_dim", "num_layers",
                                                            "num_heads",
                                                            "num_inducing_points")},
           "primary_batch": batch, "num_batches": num_batches, "sae_steps": steps,
           "sae_batch": cfg.sae_batch_size, "d_sae": int(primary_cfg.hidden_dim
                                                         * cfg.expansion_factor),
           "buffer_size": cfg.buffer_size, "prefilled_rows": cfg.min_buffer,
           "rounds": rounds, "ours_first_call_s_incl_compile": compile_s,
           "ours_s_best": ours_t["best"], "ours_s_median": ours_t["median"],
           "ours_sae_steps_per_s": steps / ours_t["best"],
           "ours_builds_per_s": num_batches * batch / ours_t["best"],
           "ours_losses_finite": finite}
    if original is not None:
        torch_t = summarize(times["original"])
        ratios = np.array(times["original"]) / np.array(times["ours"])
        out.update(original_s_best=torch_t["best"], original_s_median=torch_t["median"],
                   original_sae_steps_per_s=steps / torch_t["best"],
                   speedup=float(np.median(ratios)), speedup_all=ratios.tolist(),
                   speedup_best_over_best=torch_t["best"] / ours_t["best"])
    return out


def full_size_settings(flagfile: str) -> SAETrainConfig:
    """The original's full-size SAE settings (``configs/splatnlp.flags``)."""
    from runkit.flags import config_from_flagfile

    return config_from_flagfile(SAETrainConfig, flagfile)
