"""SAE model directories: ``config.json`` (SAEConfig), ``params/`` and ``usage_ema/`` (orbax)."""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from primary.store import load_params, save_params
from sae_jax.model import SAEConfig, SparseAutoencoder, create_sae, sae_from_params


def save_sae(directory: str | os.PathLike, sae: SparseAutoencoder) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sae.config.to_json(d / "config.json")
    save_params(d / "params", sae.params())
    save_params(d / "usage_ema", {"usage_ema": np.asarray(sae.usage_ema[...])})
    return d


def load_sae(directory: str | os.PathLike) -> SparseAutoencoder:
    d = Path(directory)
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d} is not an SAE directory (no config.json)")
    config = SAEConfig.from_json(d / "config.json")
    like = create_sae(config).params()
    params = load_params(d / "params", like)
    ema = load_params(d / "usage_ema", {"usage_ema": jnp.zeros((config.hidden_dim,))})
    return sae_from_params(config, params, ema["usage_ema"])
