"""Console and JSON output shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
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


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_relative(node):
    """``node`` with every path inside this repository written relative to its root (a
    results file then reads the same on every machine)."""
    if isinstance(node, dict):
        return {k: repo_relative(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [repo_relative(v) for v in node]
    if isinstance(node, str):
        return node.replace(REPO_ROOT + os.sep, "")
    return node


def write_results(results: dict, path: str) -> None:
    """Write a benchmark's results as indented JSON (creating the folder) and say where;
    paths inside the repository are written relative to its root."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(repo_relative(results), f, indent=2, default=json_default)
    print(f"\nwrote {path} ({results['wall_s']:.0f} s)")


def feature_build_sizes(text: str) -> list[tuple[int, int]]:
    """``"24576x100000,2048x10000"`` -> ``[(24576, 100000), (2048, 10000)]``; a malformed
    entry raises ValueError naming it."""
    sizes = []
    for size in text.split(","):
        try:
            f, n = (int(x) for x in size.split("x"))
        except ValueError:
            raise ValueError(f"--sizes: {size!r} is not FEATURESxBUILDS") from None
        sizes.append((f, n))
    return sizes
