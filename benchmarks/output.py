"""Console and JSON output shared by the benchmark scripts."""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks.timing import load_average


def log(msg: str) -> None:
    """A progress line stamped with the time and the machine's load average."""
    print(f"[{time.strftime('%H:%M:%S')} load {load_average()}] {msg}", flush=True)


def table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a right-aligned table; floats get one decimal and thousands separators."""
    cells = [header] + [[f"{c:,.1f}" if isinstance(c, float) else str(c) for c in r]
                        for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def json_default(o):
    """``json.dump(default=...)`` for numpy scalars and jax arrays."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, jax.Array):
        return np.asarray(o).tolist()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")
