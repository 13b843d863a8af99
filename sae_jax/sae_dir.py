"""SAE model directories: ``config.json`` (SAEConfig), ``params/`` and ``usage_ema/`` (orbax)."""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from runkit.checkpoints import load_tree, save_tree
from sae_jax.model import SAEConfig, SparseAutoencoder, create_sae, sae_from_params


def save_sae(directory: str | os.PathLike, sae: SparseAutoencoder, *,
             write: bool = True) -> Path:
    """Write an SAE directory; parameters collectively, ``config.json`` only where
    ``write`` (process 0 of a multi-process run)."""
    d = Path(directory)
    if write:
        d.mkdir(parents=True, exist_ok=True)
        sae.config.to_json(d / "config.json")
    save_tree(d / "params", sae.params())
    save_tree(d / "usage_ema", {"usage_ema": np.asarray(sae.usage_ema[...])})
    return d


def load_sae(directory: str | os.PathLike) -> SparseAutoencoder:
    d = Path(directory)
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d} is not an SAE directory (no config.json)")
    config = SAEConfig.from_json(d / "config.json")
    like = create_sae(config).params()
    params = load_tree(d / "params", like)
    ema = load_tree(d / "usage_ema", {"usage_ema": jnp.zeros((config.hidden_dim,))})
    return sae_from_params(config, params, ema["usage_ema"])
