"""Training curves of an SAE run, drawn from its ``metrics.jsonl`` (matplotlib, Agg) for the
run's architecture: the loss, MSE and L0 of every run, the terms of the architecture's own
loss and state (its plugin's ``curve_metrics``), and the dead count training acts on (its
``dead_metric``), beside the evaluation's dead count on held-out inputs, whose test differs
(:mod:`sae_jax.activity`). A panel is drawn only where the run logged its metric."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from sae_jax.activity import ACTIVE_THRESHOLD

COMMON_BEFORE = (("loss", "total loss"), ("mse", "reconstruction MSE"))
COMMON_AFTER = (("l0", f"L0 (features active, h > {ACTIVE_THRESHOLD:g}, per row)"),)
COLUMNS = 3


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


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def curve_panels(cfg, rows: list[dict]) -> list[tuple[str, str]]:
    """``(metrics key, title)`` of the panels for a run of ``cfg`` (an SAETrainConfig) whose
    metrics lines are ``rows``: the common ones, the architecture's, its dead count; those
    whose key no line logs are left out (a run written before the metric existed)."""
    arch = cfg.arch
    wanted = [*COMMON_BEFORE, *arch.curve_metrics(cfg), *COMMON_AFTER, arch.dead_metric(cfg)]
    logged = {k for r in rows for k, v in r.items() if _number(v)}
    return [(key, title) for key, title in wanted if key in logged]


def plot_curves(metrics_jsonl: str | os.PathLike, out_png: str | os.PathLike, cfg, *,
                held_out_dead: tuple[int, int] | None = None) -> list[str]:
    """Draw :func:`curve_panels` against SAE step into ``out_png``, ``cfg.resample_steps``
    dashed; ``held_out_dead``: the evaluation's ``(dead features, held-out inputs)``, marked
    at the last step of the dead-count panel. Returns the titles of the panels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_jsonl) if "step" in r]
    panels = curve_panels(cfg, rows)
    dead_key = cfg.arch.dead_metric(cfg)[0]
    resample_steps = tuple(cfg.resample_steps)
    nrows = max(1, math.ceil(len(panels) / COLUMNS))
    fig, axes = plt.subplots(nrows, COLUMNS, figsize=(13, 3.6 * nrows), constrained_layout=True,
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    for ax, (key, title) in zip(axes.flat, panels):
        pts = [(r["step"], r[key]) for r in rows if _number(r.get(key))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2,
                label="training" if key == dead_key else None)
        if key in ("loss", "mse") and min(p[1] for p in pts) > 0:
            ax.set_yscale("log")
        else:  # the values themselves on the ticks, not an offset from them
            ax.ticklabel_format(axis="y", useOffset=False)
        for s in resample_steps:
            ax.axvline(s, color="tab:red", ls="--", lw=0.8, alpha=0.7)
        if key == dead_key and held_out_dead is not None:
            dead, inputs = held_out_dead
            ax.plot([pts[-1][0]], [dead], "o", color="tab:orange",
                    label=f"evaluation: {dead} never active (h > {ACTIVE_THRESHOLD:g})\n"
                          f"on {inputs:,} held-out inputs")
            ax.legend(loc="best", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("SAE step")
        ax.grid(alpha=0.3)
    if resample_steps and panels:
        first = axes.flat[0]
        first.plot([], [], color="tab:red", ls="--", label="resample")
        first.legend(loc="upper right")
    fig.savefig(Path(out_png), dpi=110)
    titles = [ax.get_title() for ax in fig.axes]
    plt.close(fig)
    return titles
