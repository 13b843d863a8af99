"""Model directories: the on-disk form every command of the project reads and writes.

A primary model directory holds::

    config.json          PrimaryConfig (the original's model_params.json names)
    vocab.json           token -> id (the original's format)
    weapon_vocab.json    "weapon_id_{N}" -> id
    params/              orbax checkpoint of the parameters (nested dict of arrays)

Training checkpoints (optimiser state, step, RNG) live elsewhere, under an
orbax ``CheckpointManager``; a model directory is the finished, portable model.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from primary.model import PrimaryConfig, SetCompletionModel, create_model
from primary.vocab import Vocab, WeaponVocab


def _str_keys(tree):
    """Nested dicts with string keys (orbax stores list indices as strings)."""
    if isinstance(tree, dict):
        return {str(k): _str_keys(v) for k, v in tree.items()}
    return tree


def _int_keys_like(tree, like):
    """Undo :func:`_str_keys` where ``like`` has integer keys."""
    if not isinstance(like, dict):
        return tree
    return {k: _int_keys_like(tree[str(k)], v) for k, v in like.items()}


def save_params(path: str | os.PathLike, params) -> None:
    """Write a nested dict of arrays atomically (orbax writes to a temp dir, then renames)."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, _str_keys(jax.tree.map(np.asarray, params)), force=True)


def load_params(path: str | os.PathLike, like):
    """Read a pytree saved by :func:`save_params`, restored to the structure and shapes of
    ``like``; a shape mismatch is an error naming the parameter and both shapes."""
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no parameters at {path}")
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(path)
        stored = getattr(meta, "item_metadata", meta)
        _check_shapes(stored, _str_keys(like), where=str(path))
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _str_keys(like))
        return _int_keys_like(ckptr.restore(path, abstract), like)


def _check_shapes(stored, like, *, where: str) -> None:
    flat_like = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(like)}
    try:
        flat_stored = {
            jax.tree_util.keystr(k): v
            for k, v in jax.tree_util.tree_leaves_with_path(stored)
            if hasattr(v, "shape")
        }
    except Exception:  # metadata of an unexpected form: let orbax report
        return
    missing = sorted(set(flat_like) - set(flat_stored))
    extra = sorted(set(flat_stored) - set(flat_like))
    if missing or extra:
        raise ValueError(f"{where}: parameters do not match the model: "
                         f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                         f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    for k, v in flat_like.items():
        if tuple(flat_stored[k].shape) != tuple(v.shape):
            raise ValueError(f"{where}: parameter {k} has shape {tuple(flat_stored[k].shape)} "
                             f"on disk but the configuration needs {tuple(v.shape)}")


def params_dict(model: nnx.Module) -> dict:
    """The model's parameters as a nested plain dict."""
    return nnx.state(model, nnx.Param).to_pure_dict()


def save_primary(directory: str | os.PathLike, model: SetCompletionModel, vocab: Vocab,
                 weapon_vocab: WeaponVocab) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.config.to_json(d / "config.json")
    vocab.save(d / "vocab.json")
    weapon_vocab.save(d / "weapon_vocab.json")
    save_params(d / "params", params_dict(model))
    return d


def load_primary(directory: str | os.PathLike) -> tuple[SetCompletionModel, Vocab, WeaponVocab]:
    d = Path(directory)
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d} is not a primary model directory (no config.json)")
    config = PrimaryConfig.from_json(d / "config.json")
    vocab = Vocab.load(d / "vocab.json")
    weapon_vocab = WeaponVocab.load(d / "weapon_vocab.json")
    if len(vocab) != config.vocab_size:
        raise ValueError(f"{d}: vocab.json has {len(vocab)} tokens, config.json says "
                         f"vocab_size {config.vocab_size}")
    if len(weapon_vocab) != config.weapon_vocab_size:
        raise ValueError(f"{d}: weapon_vocab.json has {len(weapon_vocab)} weapons, config.json "
                         f"says weapon_vocab_size {config.weapon_vocab_size}")
    model = create_model(config)
    like = params_dict(model)
    state = nnx.state(model, nnx.Param)
    state.replace_by_pure_dict(load_params(d / "params", like))
    nnx.update(model, state)
    return model, vocab, weapon_vocab
