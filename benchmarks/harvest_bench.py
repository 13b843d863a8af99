"""Harvest throughput: primary forward to pooled vectors into the activation buffer.

Ours: one jitted, buffer-donating call (pooled + push). The original: the torch
forward under ``torch.inference_mode`` with the pooled vector copied into a
preallocated circular buffer tensor. Both sides run the same weights (ours
copied into the torch model), and the pooled vectors are compared.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import summarize, time_interleaved
from bridge.harvest import make_harvest_fn
from primary.model import PrimaryConfig, count_params, create_model
from sae_jax.buffer import create_buffer

FULL_SIZE = PrimaryConfig(vocab_size=140, weapon_vocab_size=130, embedding_dim=32,
                          hidden_dim=512, num_layers=3, num_heads=8, num_inducing_points=32,
                          use_layer_norm=True)
DEMO_FALLBACK = PrimaryConfig(vocab_size=140, weapon_vocab_size=130, embedding_dim=32,
                              hidden_dim=128, num_layers=2, num_heads=4, num_inducing_points=16,
                              use_layer_norm=True)
_FLAG_TO_FIELD = {
    "embedding_dim": "embedding_dim", "hidden_dim": "hidden_dim", "num_layers": "num_layers",
    "num_heads": "num_heads", "num_inducing_points": "num_inducing_points",
    "use_layer_norm": "use_layer_norm",
}


def demo_config(flagfile: str = "primary/configs/primary_demo.flags"
                ) -> tuple[PrimaryConfig, str]:
    """The demo primary's shape from its flagfile if present, else a small stand-in."""
    try:
        with open(flagfile) as f:
            lines = f.read().splitlines()
    except OSError:
        return DEMO_FALLBACK, "built-in demo size (no primary/configs/primary_demo.flags)"
    values = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("--") or "=" not in line:
            continue
        name, value = line[2:].split("=", 1)
        if name in _FLAG_TO_FIELD:
            field = _FLAG_TO_FIELD[name]
            if field == "use_layer_norm":
                values[field] = value.lower() in ("true", "1", "yes")
            else:
                values[field] = int(value)
    cfg = PrimaryConfig(vocab_size=140, weapon_vocab_size=130,
                        **{**{k: getattr(DEMO_FALLBACK, k) for k in _FLAG_TO_FIELD}, **values})
    return cfg, flagfile


def random_builds(cfg: PrimaryConfig, batch: int, length: int, seed: int = 0):
    """``tokens (b, length)`` right-padded, ``weapons (b, 1)``, ``mask (b, length)`` True=pad;
    set sizes uniform in 1..length."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, length + 1, size=batch)
    ability_ids = np.array([i for i in range(cfg.vocab_size) if i != cfg.pad_token_id])
    tokens = rng.choice(ability_ids, size=(batch, length))
    mask = np.arange(length)[None, :] >= sizes[:, None]
    tokens = np.where(mask, cfg.pad_token_id, tokens).astype(np.int32)
    weapons = rng.integers(0, cfg.weapon_vocab_size, size=(batch, 1)).astype(np.int32)
    return tokens, weapons, mask


def torch_state_dict(model) -> dict:
    """Our parameters under the original's state-dict names (torch Linear = (out, in))."""
    import torch

    out = {}
    for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        parts = [str(p) for p in path]
        arr = np.asarray(value[...] if hasattr(value, "__getitem__") else value)
        leaf = parts[-1]
        owner = parts[:-1]
        if owner and owner[-1] in ("fc1", "fc2"):
            owner = owner[:-1] + ["0" if owner[-1] == "fc1" else "2"]
        if owner and owner[-1] == "in_proj":
            name = ".".join(owner[:-1] + [f"in_proj_{'weight' if leaf == 'kernel' else 'bias'}"])
        else:
            torch_leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(
                leaf, leaf)
            name = ".".join(owner + [torch_leaf])
        if leaf == "kernel":
            arr = arr.T
        out[name] = torch.from_numpy(np.array(arr, dtype=np.float32))
    return out


def _flops_per_call(fn, *args) -> float | None:
    """XLA's FLOP count of one call (from the lowered program; no compile)."""
    try:
        cost = fn.lower(*args).cost_analysis()
    except Exception:  # cost analysis is best-effort on some backends
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def bench_harvest(cfg: PrimaryConfig, *, batch: int, length: int, rounds: int,
                  buffer_rows: int = 4096) -> dict:
    """Builds/s of ours and of the torch forward, timed in interleaved rounds, with the
    pooled outputs compared. ``speedup`` is the median of the per-round ratios."""
    model = create_model(cfg, seed=0)
    inputs = random_builds(cfg, batch, length)
    graphdef, state = nnx.split(model)
    harvest = make_harvest_fn(graphdef)
    tokens, weapons, mask = (jnp.asarray(a) for a in inputs)
    batch_arrays = {"tokens": tokens, "weapons": weapons, "key_padding_mask": mask,
                    "weight": jnp.ones((batch,), jnp.float32)}
    if buffer_rows % batch:
        raise ValueError(f"buffer_rows {buffer_rows} must be a multiple of the batch {batch}")
    holder = {"buf": create_buffer(buffer_rows, cfg.hidden_dim)}

    def ours():
        holder["buf"], finite = harvest(state, holder["buf"], batch_arrays)
        jax.block_until_ready((holder["buf"], finite))

    contenders = {"ours": ours}
    original, pos = _torch_original_harvest(model, cfg, inputs, batch, buffer_rows)
    if original is not None:
        contenders["original"] = original
    times = time_interleaved(contenders, rounds=rounds, warmup=1)  # warmup compiles
    ours_t = summarize(times["ours"])
    flops = _flops_per_call(harvest, state, holder["buf"], batch_arrays)
    out = {"config": {k: getattr(cfg, k) for k in ("embedding_dim", "hidden_dim", "num_layers",
                                                   "num_heads", "num_inducing_points",
                                                   "use_layer_norm")},
           "params": count_params(model), "batch": batch, "tokens": length, "rounds": rounds,
           "ours_s_best": ours_t["best"], "ours_s_median": ours_t["median"],
           "ours_builds_per_s": batch / ours_t["best"],
           "xla_flops_per_batch": flops,
           "ours_gflops_per_s": flops / ours_t["best"] / 1e9 if flops else None}
    if original is None:
        return out
    torch_t = summarize(times["original"])
    # The rows our last call pushed (the buffer is a whole number of batches long).
    buf = holder["buf"]
    end = int(buf.write_pos) or buffer_rows
    ours_pooled = np.asarray(buf.data[end - batch:end])
    ratios = np.array(times["original"]) / np.array(times["ours"])
    out.update(torch_s_best=torch_t["best"], torch_s_median=torch_t["median"],
               torch_builds_per_s=batch / torch_t["best"],
               speedup=float(np.median(ratios)), speedup_all=ratios.tolist(),
               speedup_best_over_best=torch_t["best"] / ours_t["best"],
               pooled_max_abs_diff=float(np.max(np.abs(ours_pooled - pos["pooled"].numpy()))))
    return out


def _torch_original_harvest(model, cfg: PrimaryConfig, inputs, batch: int, buffer_rows: int):
    """``(call, holder)``: the original's forward on our weights under
    ``torch.inference_mode``, appending to a circular buffer tensor (``holder["pooled"]``:
    the last pooled batch); ``(None, None)`` without torch."""
    try:
        import torch
    except ImportError:
        return None, None
    tmodel = torch_model_like(model, cfg)
    t_tokens, t_weapons = (torch.from_numpy(a.astype(np.int64)) for a in inputs[:2])
    t_mask = torch.from_numpy(inputs[2])
    t_buf = torch.zeros(buffer_rows, cfg.hidden_dim)
    holder = {"i": 0, "pooled": None}

    def original():
        with torch.inference_mode():
            pooled = tmodel.pooled(t_tokens, t_weapons, t_mask)
            tmodel.output_layer(pooled)  # the original runs the whole forward
            i = holder["i"]
            t_buf[i:i + batch] = pooled  # its circular buffer append
            holder["i"] = (i + batch) % buffer_rows
        holder["pooled"] = pooled

    return original, holder


# --- harvest of training examples: our length groups vs the original's padded batches --------


def demo_examples(num_builds: int = 10_000, seed: int = 0):
    """The demo run's training examples (its synthetic world, split and example settings):
    ``(examples, vocab, weapon_vocab)``."""
    from primary.examples import make_examples, split_builds
    from primary.sources import default_vocabs, load_builds

    builds = load_builds("synthetic", path=None, num_builds=num_builds, seed=seed)
    vocab, weapon_vocab = default_vocabs(builds)
    train_idx, _, _ = split_builds(len(builds), seed)
    return make_examples(builds.subset(train_idx), vocab, weapon_vocab, seed=seed), vocab, \
        weapon_vocab


def with_vocab(cfg: PrimaryConfig, vocab, weapon_vocab) -> PrimaryConfig:
    """``cfg``'s shape with the vocabularies of a data set (<PAD> last, as the original)."""
    import dataclasses

    if vocab.pad_id != len(vocab) - 1:
        raise ValueError(f"vocabulary puts <PAD> at {vocab.pad_id}, not last")
    return dataclasses.replace(cfg, vocab_size=len(vocab), output_dim=len(vocab),
                               weapon_vocab_size=len(weapon_vocab), pad_token_id=vocab.pad_id)


def original_batches(examples, indices: np.ndarray, batch: int):
    """The original's inputs: ``indices`` in batches of ``batch`` rows, each right-padded
    to its own longest example (its collate), as torch tensors."""
    import torch

    out = []
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        width = int(examples.lengths[idx].max())
        tokens = examples.tokens[idx, :width]
        out.append((torch.from_numpy(tokens.astype(np.int64)),
                    torch.from_numpy(examples.weapons[idx].astype(np.int64)),
                    torch.from_numpy(tokens == examples.pad_id)))
    return out


def padding_stats(examples, indices: np.ndarray, batch: int, block) -> dict:
    """Token positions each side computes, against the real tokens."""
    real = int(examples.lengths[indices].sum())
    original = sum(int(examples.lengths[indices[s:s + batch]].max()) * len(indices[s:s + batch])
                   for s in range(0, len(indices), batch))
    ours = sum(w * len(g["positions"]) for w, g in block.groups)
    return {"real_tokens": real, "original_token_positions": original,
            "ours_token_positions": ours, "rows": int(len(indices)),
            "ours_rows_forwarded": int(sum(len(g["positions"]) for _, g in block.groups)),
            "null_rows_looked_up": int(block.is_null.sum())}


def bench_example_harvest(cfg: PrimaryConfig, examples, *, rows: int, original_batch: int,
                          rounds: int, seed: int = 0) -> dict:
    """Builds/s harvesting ``rows`` training examples (the first of an epoch's order):
    ours groups them by length (``bridge.harvest_blocks``) and looks the ``[<NULL>]`` rows up
    per weapon; the original runs batches of ``original_batch`` padded to their longest.
    Timed in interleaved rounds; the pooled vectors of both are compared row by row."""
    from apps.training.chunk import batch_rows
    from bridge.harvest_blocks import (
        BlockLayout,
        create_staging,
        harvest_block,
        host_block,
        null_pooled_table,
        to_device,
    )
    from primary.examples import epoch_order
    from runkit.sharding import make_mesh

    if rows % original_batch:
        raise ValueError(f"rows {rows} must be a multiple of the batch {original_batch}")
    model = create_model(cfg, seed=0)
    graphdef, state = nnx.split(model)
    mesh = make_mesh(jax.devices()[:1])
    layout = BlockLayout.for_batch_size(original_batch, block_rows=rows)
    indices = epoch_order(examples, seed=seed, epoch=0)[:rows]
    t0 = time.perf_counter()
    host = host_block(examples, layout, indices.reshape(-1, original_batch), 0)
    block = to_device(host, mesh)
    host_s = time.perf_counter() - t0
    table = null_pooled_table(model, examples.null_id, mesh)
    holder = {"staging": create_staging(layout, cfg.hidden_dim, mesh)}
    assemble = jax.jit(jax.vmap(batch_rows, in_axes=(None, None, None, None, 0)))
    batch_ids = jnp.arange(layout.batches)

    def ours():
        holder["staging"] = harvest_block(graphdef, state, block, holder["staging"])
        holder["pooled"] = assemble(holder["staging"], table, block.is_null, block.weapons,
                                    batch_ids)
        holder["pooled"].block_until_ready()

    contenders = {"ours": ours}
    original = _torch_original_example_harvest(model, cfg, examples, indices, original_batch)
    if original is not None:
        contenders["original"] = original[0]
    times = time_interleaved(contenders, rounds=rounds, warmup=1)
    ours_t = summarize(times["ours"])
    out = {"config": {k: getattr(cfg, k) for k in ("embedding_dim", "hidden_dim", "num_layers",
                                                   "num_heads", "num_inducing_points")},
           "params": count_params(model), "rows": rows, "original_batch": original_batch,
           "group_rows": layout.group_rows, "rounds": rounds,
           "group_widths": [w for w, _ in host.groups],
           "padding": padding_stats(examples, indices, original_batch, host),
           "ours_host_prep_s": host_s,
           "ours_s_best": ours_t["best"], "ours_s_median": ours_t["median"],
           "ours_builds_per_s": rows / ours_t["best"]}
    if original is None:
        return out
    torch_t = summarize(times["original"])
    ratios = np.array(times["original"]) / np.array(times["ours"])
    ours_pooled = np.asarray(holder["pooled"]).reshape(rows, -1)
    out.update(torch_s_best=torch_t["best"], torch_s_median=torch_t["median"],
               torch_builds_per_s=rows / torch_t["best"],
               speedup=float(np.median(ratios)), speedup_all=ratios.tolist(),
               speedup_best_over_best=torch_t["best"] / ours_t["best"],
               pooled_max_abs_diff=float(np.max(np.abs(ours_pooled - original[1]["pooled"]))))
    return out


def torch_model_like(model, cfg: PrimaryConfig):
    """The original's model (benchmarks.original_torch) holding ``model``'s weights."""
    from benchmarks.original_torch import SetCompletionModel

    tmodel = SetCompletionModel(cfg.vocab_size, cfg.weapon_vocab_size, cfg.embedding_dim,
                                cfg.hidden_dim, cfg.output_dim, cfg.num_layers, cfg.num_heads,
                                cfg.num_inducing_points, cfg.use_layer_norm, 0.0,
                                cfg.pad_token_id)
    tmodel.load_state_dict(torch_state_dict(model), strict=True)
    tmodel.eval()
    return tmodel


def _torch_original_example_harvest(model, cfg, examples, indices, batch):
    """``(call, holder)``: the original's forward over the examples in its padded batches,
    into a circular buffer tensor (``holder["pooled"]``: every row, in order); None
    without torch."""
    try:
        import torch
    except ImportError:
        return None
    tmodel = torch_model_like(model, cfg)
    batches = original_batches(examples, indices, batch)
    t_buf = torch.zeros(len(indices), cfg.hidden_dim)
    holder = {}

    def original():
        with torch.inference_mode():
            for i, (tokens, weapons, mask) in enumerate(batches):
                pooled = tmodel.pooled(tokens, weapons, mask)
                tmodel.output_layer(pooled)  # the original runs the whole forward
                t_buf[i * batch:(i + 1) * batch] = pooled
        holder["pooled"] = t_buf.numpy()

    return original, holder
