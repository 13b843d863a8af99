"""How well an SAE reconstructs a set of inputs: the figures that need no model around it.

``mse`` (mean over elements), ``fve`` (fraction of variance explained,
``1 - sum||x - recon||^2 / sum||x - mean(x)||^2``), ``l0`` (mean active features per
input), ``dead_fraction`` (never active on the set), ``dense_fraction`` (active on 30% of
inputs or more), active, dead and dense as :mod:`sae_jax.activity` defines them;
``shrinkage`` (``sum ||recon||^2 / sum <x, recon>``: 1 when unbiased, below 1 when the
SAE shrinks its reconstructions); ``recon_cosine`` (the mean cosine between an input and
its reconstruction); ``clipped_fraction`` for SAEs that clip (the share of active
feature activations at the clip, which an SAELens export does not reproduce).

:func:`reconstruction_sums` gives a batch's sums inside jit (padding rows masked out);
:func:`combine_sums` adds batches up on the host in float64 (the variance through
per-batch means, which stays exact for large sets); :func:`reconstruction_metrics` turns
the totals into the figures. :func:`evaluate_rows` does all three over batches of rows
(activations read from files); :mod:`apps.runs.evaluation` adds the primary model's
figures to the same sums.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from sae_jax.activity import dead_mask, dense_mask, is_active
from sae_jax.model import decode, encode


def reconstruction_sums(x, recon, h, valid, clip_max) -> dict:
    """The sums of one batch (inside jit): inputs ``x (B, d)``, reconstructions ``recon``,
    activations ``h (B, F)``; rows where ``valid (B,)`` is False are left out (they may
    hold anything, even NaN). ``clip_max``: the SAE's clip (None: it does not clip)."""
    vf = valid.astype(jnp.float32)
    n = vf.sum()
    x = jnp.where(valid[:, None], x, 0.0)
    recon = jnp.where(valid[:, None], recon, 0.0)
    mean_b = x.sum(0) / jnp.maximum(n, 1.0)
    active = is_active(h) & valid[:, None]
    clipped = (active & (h >= clip_max)) if clip_max is not None else jnp.zeros_like(active)
    norms = jnp.linalg.norm(x, axis=-1) * jnp.linalg.norm(recon, axis=-1)
    return {
        "n": n,
        "mean": mean_b,
        "m2": jnp.sum(vf * jnp.sum((x - mean_b) ** 2, axis=-1)),
        "sq_err": jnp.sum((x - recon) ** 2),
        "active_per_feature": active.sum(0),
        "active_total": active.sum(),
        "clipped_total": clipped.sum(),
        "recon_sq": jnp.sum(recon * recon),
        "x_dot_recon": jnp.sum(x * recon),
        "recon_cosine_sum": jnp.sum(vf * jnp.sum(x * recon, axis=-1)
                                    / jnp.maximum(norms, 1e-12)),
    }


def combine_sums(parts: list[dict]) -> dict:
    """Per-batch device sums -> float64 host totals: ``n``, the ``mean`` and scatter ``m2``
    of the inputs, and every other key summed over the batches."""
    host = jax.device_get(parts)
    n_b = np.array([p["n"] for p in host], np.float64)
    means = np.stack([p["mean"] for p in host]).astype(np.float64)
    n = n_b.sum()
    mean = (n_b[:, None] * means).sum(0) / n
    # Total scatter = within-batch scatter + between-batch scatter (exact).
    m2 = sum(float(p["m2"]) for p in host) + float((n_b * ((means - mean) ** 2).sum(1)).sum())
    totals = {k: sum(np.asarray(p[k], np.float64) for p in host)
              for k in host[0] if k not in ("n", "mean", "m2")}
    return {"n": n, "mean": mean, "m2": m2, **totals}


def reconstruction_metrics(t: dict, *, d_in: int, clips: bool) -> dict:
    """The figures (module docstring) from :func:`combine_sums`' totals ``t`` of an SAE
    reading ``d_in``-d inputs; ``clips``: whether the SAE clips (adds
    ``clipped_fraction``)."""
    n = t["n"]
    frac_active = t["active_per_feature"] / n
    clipped = {}
    if clips:
        clipped["clipped_fraction"] = (float(t["clipped_total"] / t["active_total"])
                                       if t["active_total"] > 0 else 0.0)
    return {
        "num_inputs": int(n),
        "mse": float(t["sq_err"] / (n * d_in)),
        "fve": float(1.0 - t["sq_err"] / t["m2"]) if t["m2"] > 0 else float("nan"),
        "l0": float(t["active_total"] / n),
        "dead_fraction": float(np.mean(dead_mask(frac_active))),
        "dense_fraction": float(np.mean(dense_mask(frac_active))),
        "shrinkage": (float(t["recon_sq"] / t["x_dot_recon"]) if abs(t["x_dot_recon"]) > 0
                      else float("nan")),
        "recon_cosine": float(t["recon_cosine_sum"] / n),
        **clipped,
    }


@partial(jax.jit, static_argnums=3)
def _row_sums(params, x, valid, encoder):
    _, h = encode(params, x, encoder)
    return reconstruction_sums(x, decode(params, h), h, valid, encoder.clip_max)


def evaluate_rows(sae, batches: Iterable[np.ndarray], *, batch_size: int) -> dict:
    """:func:`reconstruction_metrics` of ``sae`` over ``batches`` of input rows ``(b, d_in)``,
    ``b <= batch_size`` (each padded to ``batch_size``: one compiled program)."""
    params, encoder, d_in = sae.params(), sae.config.encoder, sae.config.input_dim
    parts = []
    for rows in batches:
        rows = np.asarray(rows, np.float32)
        if rows.ndim != 2 or rows.shape[1] != d_in or not 0 < len(rows) <= batch_size:
            raise ValueError(f"a batch of shape {rows.shape}: the SAE reads batches of at "
                             f"most {batch_size} rows of {d_in}")
        x = np.zeros((batch_size, d_in), np.float32)
        x[:len(rows)] = rows
        valid = np.arange(batch_size) < len(rows)
        parts.append(_row_sums(params, x, valid, encoder))
    if not parts:
        raise ValueError("evaluation set is empty: no rows to evaluate the SAE on")
    return reconstruction_metrics(combine_sums(parts), d_in=d_in,
                                  clips=encoder.clip_max is not None)
