"""The SAELens peer benchmark's plot: F1 and MCC against L0, per architecture (colour),
both libraries (ours filled circles, SAELens crosses), every seed a small mark and the
seeds' mean a large one; the world's true L0 a dashed line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sae_jax.architectures import get_architecture

MARKERS = {"ours": ("o", "ours (sae_jax)"), "saelens": ("x", "SAELens")}
PANELS = (("f1", "SAELens per-latent F1"), ("mcc", "SAELens MCC"))


def plot_peer(runs: list[dict], true_l0: float, out_png: str | os.PathLike) -> Path:
    """Write the plot of ``runs`` (flat runs, :mod:`benchmarks.peer_summary`) to
    ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    architectures = list(dict.fromkeys(r["architecture"] for r in runs))
    colours = {a: plt.get_cmap("tab10")(i) for i, a in enumerate(architectures)}
    fig, axes = plt.subplots(1, len(PANELS), figsize=(11, 4.2))
    for ax, (metric, title) in zip(axes, PANELS):
        for arch in architectures:
            for library, (marker, _) in MARKERS.items():
                mine = [r for r in runs if r["architecture"] == arch and r["library"] == library]
                if not mine:
                    continue
                l0 = np.array([r["l0"] for r in mine])
                value = np.array([r[metric] for r in mine])
                ax.scatter(l0, value, s=14, marker=marker, color=colours[arch], alpha=0.5)
                ax.scatter([l0.mean()], [value.mean()], s=90, marker=marker,
                           color=colours[arch], linewidths=2)
        ax.axvline(true_l0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("L0 (evaluation rows)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[a], marker="s", linestyle="",
                          label=get_architecture(a).display_name) for a in architectures]
    handles += [plt.Line2D([], [], color="black", marker=m, linestyle="", label=label)
                for m, label in MARKERS.values()]
    handles.append(plt.Line2D([], [], color="grey", linestyle="--", label="true L0"))
    axes[-1].legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
