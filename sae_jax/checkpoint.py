"""Exact-resume checkpoints of an SAE run (orbax ``CheckpointManager``).

A checkpoint is one pytree (train state, buffer, data position, RNG key, step),
stored flat under readable names (``train_state.params.W_enc``, ...) so that a
shape mismatch can name the array. Writes are synchronous and atomic (orbax
writes a temporary directory and renames it), so a run killed at any moment
leaves its previous checkpoint intact; the last few are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flatten_named(tree) -> tuple[dict, object]:
    """``{dotted.path: leaf}`` and the treedef to rebuild ``tree``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    named = {".".join(_key_name(e) for e in path): leaf for path, leaf in leaves}
    if len(named) != len(leaves):
        raise ValueError("checkpoint tree has leaves whose dotted paths collide")
    return named, treedef


def _abstract(leaf):
    sharding = getattr(leaf, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(leaf), np.asarray(leaf).dtype if sharding is None
                                else leaf.dtype, sharding=sharding)


class CheckpointMismatch(ValueError):
    """A stored checkpoint does not fit the run's configuration."""


class RunCheckpointer:
    """Save and restore whole-run pytrees under ``directory``, keeping the last ``keep``."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        # The handler is named up front so that a fresh manager (a resumed run) can read the
        # metadata of checkpoints it did not write.
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_handlers=ocp.StandardCheckpointHandler())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, tree) -> None:
        named, _ = flatten_named(tree)
        self._manager.save(step, args=ocp.args.StandardSave(named), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, like, *, what: str = "this configuration"):
        """The checkpoint at ``step`` in the structure, shapes, dtypes and shardings of
        ``like`` (arrays); a missing array or a shape mismatch raises
        :class:`CheckpointMismatch` naming the array and both shapes."""
        named_like, treedef = flatten_named(like)
        stored = self._manager.item_metadata(step)
        stored = dict(stored) if stored is not None else {}
        where = self.directory / str(step)
        missing = sorted(set(named_like) - set(stored))
        extra = sorted(set(stored) - set(named_like))
        if missing or extra:
            raise CheckpointMismatch(
                f"checkpoint {where} does not match {what}: missing {missing[:4]}, "
                f"unexpected {extra[:4]}")
        for name, leaf in named_like.items():
            got, want = tuple(stored[name].shape), tuple(np.shape(leaf))
            if got != want:
                raise CheckpointMismatch(
                    f"checkpoint {where} stores {name} with shape {got}, but {what} needs "
                    f"{want}; use a fresh --workdir or the settings the run was started with")
        abstract = {k: _abstract(v) for k, v in named_like.items()}
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return jax.tree_util.tree_unflatten(treedef, [restored[k] for k in named_like])

    def close(self) -> None:
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
