"""Every pytree a run stores goes through orbax here: checkpoints and model directories.

- :class:`Checkpoints`: ``<directory>/<step>/`` training checkpoints under an orbax
  ``CheckpointManager`` (the newest ``keep`` kept). Each holds the run's state as a
  flat ``{dotted.path: array}`` dict (so a mismatch names the array) and a JSON item
  of progress (step, data position, seconds, last metrics: whatever exact resume
  needs). Orbax writes a temporary directory and renames it, so a kill mid-write
  leaves the previous checkpoint intact. After the write, process 0 records the size
  and CRC-32 of every file in ``integrity.json``; a restore checks them and falls
  back from a damaged checkpoint (file deleted, truncated, bytes changed, manifest
  missing) to the newest intact one, saying which file of which step was wrong; the
  damaged ones move to ``<directory>.damaged/`` so the run can write those steps again.
- :func:`save_tree` / :func:`load_tree`: one pytree (a model's parameters) in one
  directory, with a shape check that names the parameter.

Saving is collective in a multi-process run: every process calls it (orbax
coordinates which process writes what).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from runkit.errors import RunFault
from runkit.hosts import is_writer, wait_for_all
from runkit.jsonio import read_json, write_json

MANIFEST = "integrity.json"
_CHUNK = 1 << 22


class CheckpointMismatch(ValueError):
    """A stored checkpoint does not fit the run's configuration."""


class NoIntactCheckpoint(RunFault):
    """Checkpoints exist but every one is damaged."""


class DamagedCheckpoint(RuntimeError):
    """One checkpoint failed its integrity check (the message names the file)."""


# ------------------------------------------------------------------ names and integrity


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


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(step_dir: Path) -> None:
    """Record ``{relative path: [size, crc32]}`` of every file of a finished checkpoint."""
    files = {str(p.relative_to(step_dir)): [p.stat().st_size, _crc32(p)]
             for p in _files(step_dir)}
    write_json(step_dir / MANIFEST, {"files": files})


def verify_manifest(step_dir: Path) -> None:
    """Raise :class:`DamagedCheckpoint` naming the first file that is missing, of another
    size or another CRC-32 than when it was written (or a missing/unreadable manifest)."""
    try:
        files = read_json(step_dir / MANIFEST, what="checkpoint manifest")["files"]
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        raise DamagedCheckpoint(f"{step_dir}: no readable {MANIFEST} (the write was cut "
                                f"short or the file was damaged: {e})") from None
    for rel, (size, crc) in files.items():
        p = step_dir / rel
        if not p.is_file():
            raise DamagedCheckpoint(f"{p} is missing")
        if p.stat().st_size != size:
            raise DamagedCheckpoint(f"{p} has {p.stat().st_size} bytes, {size} were written")
        if _crc32(p) != crc:
            raise DamagedCheckpoint(f"{p} does not hold the bytes that were written "
                                    "(checksum differs)")


def _abstract(leaf):
    sharding = getattr(leaf, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype if hasattr(leaf, "dtype")
                                else np.asarray(leaf).dtype, sharding=sharding)


def _array_table(named: dict) -> dict:
    return {k: [list(np.shape(v)), str(v.dtype if hasattr(v, "dtype") else np.asarray(v).dtype)]
            for k, v in named.items()}


# ------------------------------------------------------------------ training checkpoints


def _is_disk_full(error: BaseException) -> bool:
    return ((isinstance(error, OSError) and error.errno == errno.ENOSPC)
            or "No space left on device" in str(error))


class _DropOrbaxThreadTracebacks(logging.Filter):
    """orbax logs each failed writer thread's traceback before the same error reaches the
    save that waits on it, where the command reports it in one line: drop the log copy."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("orbax" in record.pathname
                    and "_SignalingThread.run() raised an exception" in str(record.msg))


logging.getLogger("absl").addFilter(_DropOrbaxThreadTracebacks())


@dataclass
class Restored:
    step: int
    tree: object
    progress: dict


class Checkpoints:
    """Save and restore a run's state under ``directory``, keeping the newest ``keep``."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3):
        self.directory = Path(directory).absolute()
        self._remove_unfinished("*")
        wait_for_all("checkpoints_unfinished_removed")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        # Handlers named up front, so a fresh manager (a resumed run) reads what it
        # did not write.
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "progress": ocp.JsonCheckpointHandler()})

    def _remove_unfinished(self, step: int | str) -> None:
        """Delete what an unfinished save of ``step`` (``"*"``: of any step) left: a kill or
        a full disk leaves orbax's temporary directory, which holds no usable state."""
        if is_writer() and self.directory.is_dir():
            for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree, progress: dict) -> None:
        """Write ``tree`` (a pytree of arrays) and ``progress`` (JSON-able) for ``step``."""
        named, _ = flatten_named(tree)
        progress = {**progress, "step": int(step), "arrays": _array_table(named)}
        try:
            self._manager.save(int(step), args=ocp.args.Composite(
                state=ocp.args.StandardSave(named), progress=ocp.args.JsonSave(progress)),
                force=True)
            self._manager.wait_until_finished()
        except Exception as e:  # orbax/tensorstore report a full disk as a ValueError
            if not _is_disk_full(e):
                raise
            self._remove_unfinished(int(step))
            raise OSError(errno.ENOSPC, f"no space left on the device while writing the "
                          f"checkpoint of step {step} in {self.directory}; free some space "
                          "and run the command again: it resumes from the last checkpoint"
                          ) from None
        if is_writer():
            write_manifest(self.directory / str(int(step)))

    def restore(self, step: int, like, *, what: str = "this configuration") -> Restored:
        """The checkpoint at ``step`` in the structure, shapes, dtypes and shardings of
        ``like``. Raises :class:`DamagedCheckpoint` when it fails its integrity check or
        cannot be read, :class:`CheckpointMismatch` (naming the array and both shapes)
        when it was written by another configuration."""
        step_dir = self.directory / str(int(step))
        verify_manifest(step_dir)
        named_like, treedef = flatten_named(like)
        try:
            progress = self._manager.restore(int(step), args=ocp.args.Composite(
                progress=ocp.args.JsonRestore()))["progress"]
        except Exception as e:  # orbax/tensorstore errors of a damaged store
            raise DamagedCheckpoint(f"{step_dir}: progress record unreadable: "
                                    f"{str(e).splitlines()[0][:200]}") from None
        stored = progress.get("arrays", {})
        missing = sorted(set(named_like) - set(stored))
        extra = sorted(set(stored) - set(named_like))
        if missing or extra:
            raise CheckpointMismatch(
                f"checkpoint {step_dir} does not match {what}: missing {missing[:4]}, "
                f"unexpected {extra[:4]}; use a fresh --workdir or the settings the run was "
                "started with")
        for name, leaf in named_like.items():
            got, want = tuple(stored[name][0]), tuple(np.shape(leaf))
            if got != want:
                raise CheckpointMismatch(
                    f"checkpoint {step_dir} stores {name} with shape {got}, but {what} needs "
                    f"{want}; use a fresh --workdir or the settings the run was started with")
        abstract = {k: _abstract(v) for k, v in named_like.items()}
        try:
            restored = self._manager.restore(int(step), args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))["state"]
        except Exception as e:
            silence_reads_after_a_failure()
            raise DamagedCheckpoint(f"{step_dir}: arrays unreadable: "
                                    f"{str(e).splitlines()[0][:200]}") from None
        tree = jax.tree_util.tree_unflatten(treedef, [restored[k] for k in named_like])
        return Restored(int(step), tree, progress)

    def restore_latest(self, like, *, what: str = "this configuration") -> Restored | None:
        """The newest intact checkpoint (None when there is none at all). A damaged one is
        reported and skipped; when every one is damaged, :class:`NoIntactCheckpoint`."""
        damaged = {}
        for step in reversed(self.steps()):
            try:
                restored = self.restore(step, like, what=what)
            except DamagedCheckpoint as e:
                damaged[step] = str(e)
                print(f"warning: checkpoint at step {step} is damaged ({e}); trying an older one")
                continue
            if damaged:
                self._set_aside(sorted(damaged))
            return restored
        if damaged:
            raise NoIntactCheckpoint(
                f"every checkpoint in {self.directory} is damaged:\n  "
                + "\n  ".join(f"step {s}: {e}" for s, e in damaged.items())
                + "\nmove the directory away to start the run afresh")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Move damaged checkpoints out of the run's way (the run will write those steps
        again) into ``<directory>.damaged/``, kept for inspection rather than deleted."""
        aside = self.directory.with_name(self.directory.name + ".damaged")
        if is_writer():
            aside.mkdir(exist_ok=True)
            for step in steps:
                target = aside / f"{step}.{time.strftime('%Y%m%dT%H%M%S')}"
                os.replace(self.directory / str(step), target)
                print(f"note: moved the damaged checkpoint of step {step} to {target}")
        wait_for_all("checkpoints_set_aside")
        self._manager.reload()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------ model directories


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


def save_tree(path: str | os.PathLike, tree) -> None:
    """Write a nested dict of arrays to the directory ``path`` atomically (orbax writes a
    temporary directory, then renames it). Collective: every process calls it."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, _str_keys(jax.tree.map(np.asarray, tree)), force=True)


def load_tree(path: str | os.PathLike, like):
    """Read a pytree saved by :func:`save_tree` into the structure and shapes of ``like``;
    a shape mismatch is an error naming the parameter and both shapes, a damaged or
    truncated store a ``ValueError`` naming the directory."""
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no parameters at {path}")
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(path)
        stored = getattr(meta, "item_metadata", meta)
        _check_shapes(stored, _str_keys(like), where=str(path))
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _str_keys(like))
        try:
            restored = ckptr.restore(path, abstract)
        except Exception as e:  # orbax/tensorstore errors of a damaged store
            silence_reads_after_a_failure()
            raise ValueError(f"{path}: the stored parameters are damaged or truncated "
                             f"({str(e).splitlines()[0][:200]})") from None
        return _int_keys_like(restored, like)


def _is_closed_loop_callback(unraisable) -> bool:
    return (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed")


def silence_reads_after_a_failure() -> None:
    """Once a restore has failed, tensorstore's other reads still finish and try to report
    to orbax's event loop, which is closed by then: each would print a traceback (hundreds
    in all) after the real error. Drop exactly those; any other unraisable is shown."""
    shown = sys.unraisablehook
    if getattr(shown, "drops_closed_loop_callbacks", False):
        return

    def hook(unraisable):
        if not _is_closed_loop_callback(unraisable):
            shown(unraisable)

    hook.drops_closed_loop_callbacks = True
    sys.unraisablehook = hook


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
    if flat_like and not flat_stored:
        raise ValueError(f"{where}: the stored parameters are damaged or truncated (their "
                         "metadata names no arrays)")
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
