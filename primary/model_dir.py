"""Model directories: the on-disk form every command of the project reads and writes.

A primary model directory holds::

    config.json          PrimaryConfig (the original's model_params.json names)
    vocab.json           token -> id (the original's format)
    weapon_vocab.json    "weapon_id_{N}" -> id
    params/              orbax checkpoint of the parameters (nested dict of arrays)
    concept_set.json     the concept set of its synthetic training builds (absent: the
                         built-in set, or builds from files; see primary.concept_sets)

Training checkpoints (optimiser state, step, RNG) live elsewhere, under an
orbax ``CheckpointManager``; a model directory is the finished, portable model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import jax
from flax import nnx

from primary.concept_sets import write_concept_set
from primary.model import PrimaryConfig, SetCompletionModel, create_model
from primary.vocab import Vocab, WeaponVocab
from runkit.checkpoints import load_tree, save_tree


def params_dict(model: nnx.Module) -> dict:
    """The model's parameters as a nested plain dict."""
    return nnx.state(model, nnx.Param).to_pure_dict()


def save_primary(directory: str | os.PathLike, model: SetCompletionModel, vocab: Vocab,
                 weapon_vocab: WeaponVocab, *, write: bool = True, concepts=None) -> Path:
    """Write a model directory. The parameters are saved collectively (every process of a
    multi-process run calls this); the JSON files only where ``write`` (process 0).
    ``concepts``: the concept set the training builds were drawn with (recorded when given)."""
    d = Path(directory)
    if write:
        d.mkdir(parents=True, exist_ok=True)
        model.config.to_json(d / "config.json")
        vocab.save(d / "vocab.json")
        weapon_vocab.save(d / "weapon_vocab.json")
        if concepts is not None:
            write_concept_set(d, concepts)
    save_tree(d / "params", params_dict(model))
    return d


def model_fingerprint(directory: str | os.PathLike) -> str:
    """sha256 over every file of a model directory (relative path and bytes, in path
    order): equal for a copy or a move, different for another model or other weights."""
    d = Path(directory)
    h = hashlib.sha256()
    for path in sorted(p for p in d.rglob("*") if p.is_file()):
        h.update(path.relative_to(d).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


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
    # An abstract model (shapes only): initialising real weights only to overwrite them
    # costs seconds of small compiles on a CPU.
    model = nnx.eval_shape(lambda: create_model(config))
    like = params_dict(model)
    state = nnx.state(model, nnx.Param)
    state.replace_by_pure_dict(load_tree(d / "params", like))
    nnx.update(model, state)
    unset = [jax.tree_util.keystr(k) for k, x in
             jax.tree_util.tree_leaves_with_path(nnx.state(model))
             if isinstance(x, jax.ShapeDtypeStruct)]
    if unset:
        raise ValueError(f"{d}: the stored parameters leave {unset[:3]} unset")
    return model, vocab, weapon_vocab
