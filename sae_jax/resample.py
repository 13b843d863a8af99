"""Dead-feature resampling inside jit (docs/original.md §5, with fixed shapes).

A feature is dead when its usage EMA is below ``cfg.dead_threshold``. Each dead
feature is re-pointed at an input the SAE reconstructs badly:

1. Draw a fixed number of candidate rows uniformly from the whole valid part
   of the buffer (the original took its first rows, which are the oldest
   activations, not a sample).
2. Score each candidate by its squared reconstruction error and draw, without
   replacement, one candidate per dead feature with probability proportional to
   that score (Gumbel top-k; uniform when every error is zero).
3. For dead feature ``j`` with chosen input ``x``, let ``v = x - b_dec``: the
   encoder sees ``x - b_dec`` and the decoder adds ``b_dec`` back, so ``v`` is
   the direction the SAE would have to add to explain ``x``. Then
   ``W_dec[j] = v / |v|``; ``W_enc[:, j] = v / |v| * resample_weight * s``, where
   ``s`` is the live features' mean encoder-column norm (1 when none is live), so
   a new feature starts on the scale of its peers instead of at a fixed size
   that may be far too large or too small for the data; ``b_enc[j] =
   resample_bias``. (A chosen input equal to ``b_dec`` gives no direction; a
   random one is used instead.)
4. Zero the Adam moments (``mu``, ``nu``) of exactly those encoder columns,
   encoder biases and decoder rows, and set their usage EMA to the live
   features' mean usage (so they are not judged dead again at once).

Architectures: relu_l1 and jumprelu resample (a jumprelu feature's threshold goes back to
``cfg.jumprelu_init_threshold``, its moments zeroed too); the TopK family does not (its
AuxK loss revives dead features; ``SAETrainConfig.validate`` refuses resample steps there).

Everything is masked with ``jnp.where``: the shapes never depend on how many
features are dead, and every other entry is left bit-for-bit unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sae_jax.buffer import ActivationBuffer
from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEParams, decode, encode, unit_rows

MIN_CANDIDATES = 4096
CANDIDATES_PER_FEATURE = 8
# Rows scored per chunk, to bound the (rows, d_sae) activations in memory.
SCORE_CHUNK = 1024


def num_candidates(capacity: int, d_sae: int) -> int:
    """Static number of buffer rows scored per resampling."""
    return min(capacity, max(CANDIDATES_PER_FEATURE * d_sae, MIN_CANDIDATES))


def reconstruction_errors(params: SAEParams, x: jax.Array, clip_max) -> jax.Array:
    """Per-row squared reconstruction error: (n, d_in) -> (n,), scored in chunks.
    ``clip_max``: the relu_l1 clip, or an encoder spec (``sae_jax.model.encode``)."""

    def score(row):
        _, h = encode(params, row[None], clip_max)
        return jnp.sum(jnp.square(decode(params, h)[0] - row))

    return jax.lax.map(score, x, batch_size=min(SCORE_CHUNK, x.shape[0]))


def _zero_adam_moments(opt_state, mask_cols: jax.Array, feature_params: tuple[str, ...] = ()):
    """Zero ``mu``/``nu`` of the masked encoder columns, encoder biases and decoder rows,
    and of the masked entries of ``feature_params`` (the architecture's own parameters
    with one value per feature).

    mask_cols: (d_sae,) bool.
    """

    def masked(tree: SAEParams) -> SAEParams:
        out = {
            **tree,
            "W_enc": jnp.where(mask_cols[None, :], 0, tree["W_enc"]).astype(tree["W_enc"].dtype),
            "b_enc": jnp.where(mask_cols, 0, tree["b_enc"]).astype(tree["b_enc"].dtype),
            "W_dec": jnp.where(mask_cols[:, None], 0, tree["W_dec"]).astype(tree["W_dec"].dtype),
        }
        for name in feature_params:
            t = tree[name]
            out[name] = jnp.where(mask_cols, 0, t).astype(t.dtype)
        return out

    found = optax.tree_utils.tree_get_all_with_path(opt_state, "ScaleByAdamState")
    if len(found) != 1:
        raise ValueError(f"expected exactly one Adam state in the optimiser state, found "
                         f"{len(found)}")
    adam = found[0][1]
    in_adam = lambda path, _: getattr(path[-1], "tuple_name", None) == "ScaleByAdamState"
    return optax.tree.set(opt_state, in_adam, mu=masked(adam.mu), nu=masked(adam.nu))


def resample_dead_features(
    params: SAEParams,
    opt_state,
    usage_ema: jax.Array,
    buffer: ActivationBuffer,
    key: jax.Array,
    cfg: SAETrainConfig,
):
    """Re-initialise the dead features; jit-compatible.

    Returns ``(params, opt_state, usage_ema, n_resampled)`` with ``n_resampled`` an int32
    scalar (the number of dead features).
    """
    d_in, d_sae = params["W_enc"].shape
    if buffer.data.shape[1] != d_in:
        raise ValueError(f"buffer rows have dim {buffer.data.shape[1]}, the SAE expects {d_in}")
    dead = usage_ema < cfg.dead_threshold
    live = ~dead
    n_dead = jnp.sum(dead, dtype=jnp.int32)

    n_cand = num_candidates(buffer.capacity, d_sae)
    key_rows, key_pick, key_dir = jax.random.split(key, 3)
    rows = jax.random.randint(key_rows, (n_cand,), 0, jnp.maximum(buffer.fill, 1))
    cand = buffer.data[rows].astype(jnp.float32)
    spec = cfg.sae_config(d_in).encoder
    err = reconstruction_errors(params, cand, spec)
    err = jnp.where(jnp.sum(err) > 0, err, jnp.ones_like(err))  # all zero: uniform
    gumbel = jax.random.gumbel(key_pick, (n_cand,))
    n_pick = min(n_cand, d_sae)
    _, order = jax.lax.top_k(jnp.log(err) + gumbel, n_pick)  # weighted, no replacement
    # The r-th dead feature takes the r-th draw.
    rank = (jnp.cumsum(dead) - 1) % n_pick
    chosen = cand[order[rank]]  # (d_sae, d_in)

    offset = chosen - params["b_dec"]
    # An input equal to b_dec gives no direction: use a random one instead.
    flat = jnp.sum(jnp.square(offset), axis=-1, keepdims=True) == 0
    offset = jnp.where(flat, jax.random.normal(key_dir, offset.shape), offset)
    direction = unit_rows(offset)
    col_norms = jnp.linalg.norm(params["W_enc"], axis=0)
    n_live = jnp.sum(live)
    live_norm = jnp.sum(jnp.where(live, col_norms, 0.0)) / jnp.maximum(n_live, 1)
    enc_scale = cfg.resample_weight * jnp.where(n_live > 0, live_norm, 1.0)

    w_enc, b_enc, w_dec = params["W_enc"], params["b_enc"], params["W_dec"]
    new_params = {
        **params,
        "W_enc": jnp.where(dead[None, :], (direction * enc_scale).T.astype(w_enc.dtype), w_enc),
        "b_enc": jnp.where(dead, jnp.asarray(cfg.resample_bias, b_enc.dtype), b_enc),
        "W_dec": jnp.where(dead[:, None], direction.astype(w_dec.dtype), w_dec),
    }
    new_params = cfg.arch.resampled_params(new_params, params, dead, cfg)
    per_feature = tuple(name for name, kind in cfg.arch.extra_params if kind == "features")
    new_opt_state = _zero_adam_moments(opt_state, dead, per_feature)

    live_usage = jnp.sum(jnp.where(live, usage_ema, 0.0)) / jnp.maximum(n_live, 1)
    live_usage = jnp.where(n_live > 0, live_usage, cfg.target_usage)
    new_usage = jnp.where(dead, live_usage.astype(usage_ema.dtype), usage_ema)
    return new_params, new_opt_state, new_usage, n_dead
