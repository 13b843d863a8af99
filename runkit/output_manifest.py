"""A record of the files a step wrote, so a later run can tell a finished step from one
cut short or damaged since.

:func:`seal` writes ``<root>/<name>`` last, naming each file (relative to ``root``) with its
SHA-256; :func:`gaps` lists what no longer matches it: the record itself missing (the step
never reached its end), a file missing, or a file whose bytes changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from runkit.jsonio import parse_json_file, write_json

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _files_under(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path] if path.is_file() else []


def seal(root: str | os.PathLike, name: str, outputs: Iterable[str | os.PathLike]) -> Path:
    """Record every file of ``outputs`` (files, or folders taken whole; missing ones are
    skipped: a step need not write each) in ``root/name``, written last and atomically."""
    root = Path(root)
    files = {}
    for output in outputs:
        for path in _files_under(Path(output)):
            files[path.relative_to(root).as_posix()] = file_digest(path)
    return write_json(root / name, {"files": files})


def gaps(root: str | os.PathLike, name: str) -> list[str]:
    """What keeps the sealed step from counting as finished: ``[]`` when every recorded
    file is there with its recorded bytes; else one phrase per problem."""
    root = Path(root)
    record = root / name
    if not record.is_file():
        return [f"{name} (the step never finished)"]
    try:
        files = parse_json_file(record, what="output record")
    except ValueError as e:
        return [f"{name} (unreadable: {e})"]
    files = files.get("files") if isinstance(files, dict) else None
    if not isinstance(files, dict):
        return [f"{name} (no 'files' record)"]
    found = []
    for rel, digest in files.items():
        path = root / rel
        if not path.is_file():
            found.append(f"{rel} (missing)")
        elif file_digest(path) != digest:
            found.append(f"{rel} (changed or damaged since it was written)")
    return found
