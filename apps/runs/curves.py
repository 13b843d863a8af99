"""Training curves of an SAE run, drawn from its ``metrics.jsonl`` (matplotlib, Agg)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

CURVES = (("loss", "total loss"), ("mse", "reconstruction MSE"), ("l1", "L1"),
          ("kl", "usage KL"), ("l0", "L0 (active features)"), ("dead_count", "dead features"))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The JSON lines of a metrics file (a torn last line, from a killed run, is skipped)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def plot_curves(metrics_jsonl: str | os.PathLike, out_png: str | os.PathLike, *,
                resample_steps: Sequence[int] = ()) -> Path:
    """Loss, MSE, L1, KL, L0 and dead count against SAE step, resample steps dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_jsonl) if "step" in r]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (key, title) in zip(axes.flat, CURVES):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
        if key in ("loss", "mse") and pts and min(p[1] for p in pts) > 0:
            ax.set_yscale("log")
        for s in resample_steps:
            ax.axvline(s, color="tab:red", ls="--", lw=0.8, alpha=0.7)
        ax.set_title(title)
        ax.set_xlabel("SAE step")
        ax.grid(alpha=0.3)
    if resample_steps:
        axes.flat[0].plot([], [], color="tab:red", ls="--", label="resample")
        axes.flat[0].legend(loc="upper right")
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
