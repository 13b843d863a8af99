"""Held-out evaluation of an SAE on the frozen primary model's pooled vectors.

Reconstruction and sparsity, the figures that need no model: ``mse``, ``fve``, ``l0``,
``dead_fraction``, ``dense_fraction``, ``shrinkage``, ``recon_cosine`` and, for SAEs that
clip, ``clipped_fraction`` (:mod:`sae_jax.reconstruction_metrics` defines them and adds
them up). Downstream fidelity:
the primary's binary cross-entropy against the multi-hot targets with the true
pooled vector (``l_true``), the SAE reconstruction spliced in (``l_spliced``)
and the pooled vector mean-ablated (``l_ablated``);
``loss_recovered = (l_ablated - l_spliced) / (l_ablated - l_true)``.

Prediction fidelity, true vs spliced logits per input (the original's logit-level
comparisons): ``kl_spliced``, the mean over inputs and tokens of the Bernoulli KL
``KL(sigmoid(z_true) || sigmoid(z_spliced))`` (the model predicts every token
independently, so each token is a Bernoulli); ``logit_cosine``, the mean cosine
between the two logit vectors; ``top5_agreement``, the mean share of the 5
highest-scoring tokens the two predictions share.

One jitted call per batch returns per-batch sums; the host combines them in
float64 (:func:`sae_jax.reconstruction_metrics.combine_sums`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bridge.harvest import model_inputs, pad_batch, pooled_vectors
from primary.examples import pad_to_width
from sae_jax.model import decode, encode
from sae_jax.reconstruction_metrics import (
    combine_sums,
    reconstruction_metrics,
    reconstruction_sums,
)


def _sums(graphdef, primary_state, sae_params, x, targets, weight, encoder):
    """The per-batch sums of pooled vectors ``x`` (inside jit)."""
    model = nnx.merge(graphdef, primary_state)
    valid = weight > 0
    vf = valid.astype(jnp.float32)
    _, h = encode(sae_params, x, encoder)
    recon = decode(sae_params, h)
    sums = reconstruction_sums(x, recon, h, valid, encoder.clip_max)
    # Padding rows may hold anything (even NaN): zero them before any sum.
    x = jnp.where(valid[:, None], x, 0.0)
    recon = jnp.where(valid[:, None], recon, 0.0)
    targets = targets.astype(jnp.float32)

    def bce_rows(z):  # (B,) mean over the vocabulary
        return jnp.mean(optax.sigmoid_binary_cross_entropy(z, targets), axis=-1)

    z_true, z_spliced = model.head(x), model.head(recon)
    return {
        **sums,
        "bce_true": jnp.sum(vf * bce_rows(z_true)),
        "bce_spliced": jnp.sum(vf * bce_rows(z_spliced)),
        "target_sum": (targets * vf[:, None]).sum(0),
        **_prediction_sums(z_true, z_spliced, vf),
    }


@partial(jax.jit, static_argnums=(0, 4))
def _batch_sums(graphdef, primary_state, sae_params, batch, encoder):
    x = pooled_vectors(graphdef, primary_state, batch)
    return _sums(graphdef, primary_state, sae_params, x, batch["targets"], batch["weight"],
                 encoder)


@partial(jax.jit, static_argnums=(0, 6))
def _pooled_batch_sums(graphdef, primary_state, sae_params, x, targets, weight, encoder):
    return _sums(graphdef, primary_state, sae_params, x, targets, weight, encoder)


TOP_K_AGREEMENT = 5


def _prediction_sums(z_true, z_spliced, vf):
    """Per-batch sums of the logit-level fidelity measures over the valid rows."""
    log_p, log_1mp = jax.nn.log_sigmoid(z_true), jax.nn.log_sigmoid(-z_true)
    log_q, log_1mq = jax.nn.log_sigmoid(z_spliced), jax.nn.log_sigmoid(-z_spliced)
    kl = jnp.exp(log_p) * (log_p - log_q) + jnp.exp(log_1mp) * (log_1mp - log_1mq)
    norms = jnp.linalg.norm(z_true, axis=-1) * jnp.linalg.norm(z_spliced, axis=-1)
    cosine = jnp.sum(z_true * z_spliced, axis=-1) / jnp.maximum(norms, 1e-12)
    k = min(TOP_K_AGREEMENT, z_true.shape[-1])
    top_true = jax.lax.top_k(z_true, k)[1]
    top_spliced = jax.lax.top_k(z_spliced, k)[1]
    shared = (top_true[:, :, None] == top_spliced[:, None, :]).any(-1).sum(-1) / k
    return {"kl_sum": jnp.sum(vf * jnp.mean(kl, axis=-1)),
            "cosine_sum": jnp.sum(vf * cosine),
            "topk_sum": jnp.sum(vf * shared)}


@partial(jax.jit, static_argnums=0)
def _head(graphdef, primary_state, pooled):
    return nnx.merge(graphdef, primary_state).head(pooled)


def evaluate_sae(primary, sae, examples, *, batch_size: int,
                 original_behaviour: bool = False, pooled: np.ndarray | None = None) -> dict:
    """Reconstruction, sparsity and downstream-fidelity metrics of ``sae`` on ``examples``.

    ``primary``: a SetCompletionModel; ``sae``: a SparseAutoencoder whose input_dim is the
    primary's hidden size; ``examples``: primary.examples.Examples (held-out builds).
    ``original_behaviour`` only labels the result (the forward pass is the same).
    ``pooled``: the examples' pooled vectors in example order
    (:func:`bridge.harvest.harvest_array`), when several SAEs of one primary are evaluated
    on the same examples (None: computed batch by batch here).
    """
    from primary.examples import LENGTH_BUCKETS, iterate_batches

    d_model = primary.config.hidden_dim
    if sae.config.input_dim != d_model:
        raise ValueError(f"SAE input_dim {sae.config.input_dim} does not match the primary "
                         f"model's pooled size {d_model}")
    if pooled is not None and len(pooled) != len(examples):
        raise ValueError(f"{len(pooled)} pooled vectors given for {len(examples)} examples")
    graphdef, state = nnx.split(primary)
    params = sae.params()
    parts, start = [], 0
    for batch in iterate_batches(examples, batch_size, seed=0, epoch=0, shuffle=False,
                                 drop_remainder=False):
        if pooled is None:
            inputs = pad_to_width(model_inputs(batch), LENGTH_BUCKETS[-1],
                                  primary.config.pad_token_id)
            inputs["targets"] = batch["targets"]
            parts.append(_batch_sums(graphdef, state, params, pad_batch(inputs, batch_size),
                                     sae.config.encoder))
            continue
        real = int((batch["weight"] > 0).sum())  # the batch's real rows come first
        x = np.zeros((batch_size, d_model), np.float32)
        x[:real] = pooled[start:start + real]
        start += real
        parts.append(_pooled_batch_sums(graphdef, state, params, x, batch["targets"],
                                        batch["weight"], sae.config.encoder))
    if not parts:
        raise ValueError("evaluation set is empty: no examples to evaluate the SAE on")
    t = combine_sums(parts)
    n = t["n"]
    if n == 0:
        raise ValueError("evaluation set has no rows with weight > 0")
    vocab = t["target_sum"].shape[0]
    # Mean ablation gives every row the same logits z: sum_rows BCE = n*sum softplus(z) - z.t_sum
    z = np.asarray(_head(graphdef, state, jnp.asarray(t["mean"], jnp.float32)), np.float64)
    softplus = np.logaddexp(0.0, z)
    l_ablated = float((n * softplus.sum() - (z * t["target_sum"]).sum()) / (n * vocab))
    l_true = float(t["bce_true"] / n)
    l_spliced = float(t["bce_spliced"] / n)
    gap = l_ablated - l_true
    loss_recovered = float((l_ablated - l_spliced) / gap) if abs(gap) > 1e-12 else float("nan")
    return {
        **reconstruction_metrics(t, d_in=d_model, clips=sae.config.encoder.clip_max is not None),
        "l_true": l_true,
        "l_spliced": l_spliced,
        "l_ablated": l_ablated,
        "loss_recovered": loss_recovered,
        "kl_spliced": float(t["kl_sum"] / n),
        "logit_cosine": float(t["cosine_sum"] / n),
        f"top{TOP_K_AGREEMENT}_agreement": float(t["topk_sum"] / n),
        "original_behaviour": bool(original_behaviour),
    }
