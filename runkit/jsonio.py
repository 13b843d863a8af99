"""JSON files a run writes: whole or not at all, and read back with the file named on error."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: str | os.PathLike, obj, *, indent: int = 2) -> Path:
    """Write ``obj`` to ``path`` atomically: a temporary file beside it, flushed to disk,
    then renamed over ``path``, so a kill leaves either the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_json(path: str | os.PathLike, *, what: str = "JSON file"):
    """The parsed content of ``path``; a missing or malformed file raises an error naming
    it (``FileNotFoundError`` / ``ValueError``)."""
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable {what}: {e}") from None


def parse_json_file(path: str | os.PathLike, *, what: str,
                    error: type[Exception] = ValueError):
    """The parsed content of a UTF-8 JSON file a user gave; a missing file raises
    ``FileNotFoundError``, undecodable text or malformed JSON raises ``error``, each
    naming ``what`` and the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise error(f"{what} {path}: not UTF-8 text ({e.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{what} {path}: not valid JSON ({e})") from None
