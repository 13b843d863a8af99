"""Training checkpoints for exact resume: parameters, optimiser state and progress.

The whole training state (any pytree: parameters and optax state) is stored as
a flat ``{"00000": leaf, ...}`` dict under an orbax ``CheckpointManager``, with
a JSON item holding the progress (step, epoch, position in the epoch, seconds
spent) and the tree paths of the leaves, which are checked on restore. Orbax
writes each step to a temporary directory and renames it when complete, so a
run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp


def _flat(tree) -> tuple[dict, list[str]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    flat = {f"{i:05d}": leaf for i, (_, leaf) in enumerate(leaves)}
    return flat, [jax.tree_util.keystr(path) for path, _ in leaves]


class TrainCheckpoints:
    """``directory/<step>/`` checkpoints of a training state; keeps the newest ``keep``."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, progress: dict) -> None:
        """Write ``state`` (a pytree of arrays) and ``progress`` (JSON-able) for ``step``."""
        flat, paths = _flat(state)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(flat),
            progress=ocp.args.JsonSave({**progress, "step": int(step), "leaf_paths": paths}),
        )
        self._manager.save(int(step), args=args, force=True)

    def restore(self, step: int, like, sharding=None) -> tuple[object, dict]:
        """The state saved at ``step``, in the tree structure of ``like`` (placed with
        ``sharding`` when given), and its progress dict."""
        flat_like, paths = _flat(like)
        meta = self._manager.restore(
            int(step), args=ocp.args.Composite(progress=ocp.args.JsonRestore())
        )["progress"]
        if meta.get("leaf_paths") != paths:
            raise ValueError(
                f"checkpoint {self.directory / str(step)} holds a training state of a different "
                f"structure ({len(meta.get('leaf_paths', []))} arrays, the run needs "
                f"{len(paths)}); it was written by a different configuration"
            )

        def abstract(x):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or x.sharding)

        restored = self._manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(jax.tree.map(abstract, flat_like))
            ),
        )["state"]
        leaves = [restored[k] for k in sorted(flat_like)]
        return jax.tree.unflatten(jax.tree.structure(like), leaves), meta

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
