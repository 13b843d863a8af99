"""``metrics.jsonl``: one JSON object per line, appended as a run goes.

A run killed mid-write leaves a torn last line. Reading skips it; restarting a run
(:meth:`MetricsLog.restart_at`) rewrites the file atomically with only the whole lines
up to the step the run resumes from, so a resumed log reads as if never interrupted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class MetricsLog:
    """The metrics log at ``path``; rows are dicts with an integer ``"step"``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def rows(self) -> list[dict]:
        """Every whole row; lines that are not a JSON object (torn by a kill) are skipped."""
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def restart_at(self, step: int | None) -> int:
        """Keep the whole rows with ``step`` at or before ``step`` (none when ``step`` is None:
        a fresh start); returns how many lines were dropped."""
        before = self.path.read_text(errors="replace").splitlines() if self.path.exists() else []
        kept = [] if step is None else [r for r in self.rows() if int(r.get("step", 0)) <= step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return len(before) - len(kept)

    def append(self, row: dict) -> None:
        """Add one row (a whole line in one write, flushed)."""
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
