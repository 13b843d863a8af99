"""The sweep's frontier: every member's numbers, and their means over seeds per setting.

``write_sweep_report(workdir, members)`` writes

- ``sweep.json``: per member its settings and metrics (fve, l0, dead_fraction,
  loss_recovered, kl_spliced, concepts recovered by one feature and by one feature or a
  pair, explained features and their share, the median explanation F1 and causal
  agreement, absorption and splitting on the AP rungs, ...), per setting (a member's name
  less its seed) the mean and standard deviation over seeds, and per architecture the same
  over all its members;
- ``frontier.png``: FVE, concepts recovered (dashed: by one feature or a pair), loss
  recovered and the median explanation F1 (features firing on 1-30% of builds) against
  L0, each setting at its mean over seeds with error bars of one std, one line per
  architecture (per architecture and dictionary size, learning rate, ... where a sweep
  varies those too: :func:`frontier_series`);
- ``sweep.html``: the settings table (mean +- std over seeds) linking to every member's
  report, and the architectures table.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runkit.jsonio import read_json, write_json
from runkit.run_dir import RunDir

# Metrics gathered from a member's metrics.json.
RUN_METRICS = ("fve", "mse", "l0", "dead_fraction", "dense_fraction", "loss_recovered",
               "kl_spliced", "logit_cosine", "top5_agreement", "shrinkage")
# Columns of the table and keys averaged over seeds.
SUMMARY_METRICS = RUN_METRICS + ("concepts_recovered", "concepts_with_pairs",
                                  "mean_concept_f1", "explained", "explained_share",
                                  "explanation_f1", "causal_agreement",
                                  "absorption_fraction", "full_absorption", "rungs_split")
FRONTIER = (("fve", "FVE"), ("concepts_recovered", "concepts recovered (F1 >= 0.8)"),
            ("loss_recovered", "loss recovered"),
            ("explanation_f1", "explanation F1 (median, 1-30% window)"))
# A second metric drawn dashed in a panel, in the same colours.
DASHED = {"concepts_recovered": ("concepts_with_pairs", "dashed: by one feature or a pair")}


# The settings that move a member along its frontier (how sparse it is): settings that
# differ only in these share one line of the plot.
SPARSITY_SETTINGS = ("k", "l1_coeff", "l0_coeff")


def frontier_series(settings: list[dict]) -> dict[str, str]:
    """``{setting: the label of its line}``: the architecture, followed by every other
    recorded setting that differs between that architecture's settings (``expansion_factor=16``),
    so members of different sizes are not joined into one line."""
    out = {}
    for arch in sorted({s["architecture"] for s in settings}):
        group = [s for s in settings if s["architecture"] == arch]
        names = sorted({k for s in group for k in s["settings"]} - set(SPARSITY_SETTINGS))
        varying = [k for k in names if len({repr(s["settings"].get(k)) for s in group}) > 1]
        for s in group:
            out[s["setting"]] = ", ".join(
                [arch, *(f"{k}={_short(s['settings'].get(k))}" for k in varying)])
    return out


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_of(name: str) -> str:
    """A member's setting: its name without the trailing ``.seed-<n>``."""
    head, _, tail = name.rpartition(".seed-")
    return head if head and tail.lstrip("-").isdigit() else name


def member_record(mdir: Path, cfg) -> dict:
    """One member's settings and numbers (None where its run wrote none)."""
    rec = {"name": mdir.name, "setting": setting_of(mdir.name),
           "architecture": cfg.architecture, "seed": cfg.seed,
           "settings": {k: v for k, v in cfg.to_dict().items()
                        if k in ("expansion_factor", "lr", "l1_coeff", "k", "l0_coeff",
                                 "aux_coeff", "usage_coeff", "target_usage")},
           "report": f"members/{mdir.name}/report/index.html"}
    if (mdir / "diverged.json").exists():
        rec["diverged"] = True
    metrics = read_json(mdir / "metrics.json", what="member metrics") \
        if (mdir / "metrics.json").exists() else {}
    for k in RUN_METRICS:
        v = metrics.get(k)
        rec[k] = float(v) if isinstance(v, (int, float)) else None
    rec["steps"] = metrics.get("steps")
    concepts = read_json(mdir / "concepts.json", what="member concepts") \
        if (mdir / "concepts.json").exists() else {}
    summary = concepts.get("summary", {})
    rec["concepts_recovered"] = summary.get("recovered")
    rec["concepts_total"] = summary.get("total")
    # Also counting concepts that two features detect together (sae_jax/pair_recovery.py).
    rec["concepts_with_pairs"] = summary.get("recovered_with_pairs")
    rec["mean_concept_f1"] = summary.get("mean_sae_f1")
    explanations = read_json(mdir / "explanations.json", what="member explanations") \
        if (mdir / "explanations.json").exists() else {}
    explanation_summary = explanations.get("summary", {})
    rec["explained"] = explanation_summary.get("explained")
    # Of the features that fire, each counted on the inputs it is explained on.
    rec["explained_share"] = explanation_summary.get("explained_share")
    # How well rules explain the features depends on the recipe (README, "Explanations").
    rec["explanation_f1"] = explanation_summary.get("median_f1_window")
    rec["causal_agreement"] = explanation_summary.get("causal_agreement")
    # Absorption and splitting on the AP rungs (sae_jax/absorption.py), over the rungs
    # each member measured; a member trained on activation files has no rungs.
    if getattr(cfg, "activations", None):
        rec["on_activations"] = True
    absorption = (RunDir(mdir).absorption() or {}).get("summary", {})
    rec["absorption_fraction"] = absorption.get("mean_absorption_fraction")
    rec["full_absorption"] = absorption.get("mean_full_absorption")
    rec["rungs_split"] = absorption.get("split_share")
    rec["rungs_measured"] = absorption.get("measured")
    return rec


def _spread(records: list[dict], metric: str) -> dict | None:
    """``{"mean", "std", "n"}`` of ``metric`` over the records that have it (None if none)."""
    vals = [float(r[metric]) for r in records if isinstance(r.get(metric), (int, float))]
    return ({"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
            if vals else None)


def summarise(records: list[dict]) -> list[dict]:
    """Per setting: architecture, seeds, and ``{metric: {"mean", "std", "n"}}`` over seeds
    (std 0 for one seed; metrics missing in every seed are None)."""
    out: dict[str, dict] = {}
    for rec in records:
        entry = out.setdefault(rec["setting"], {"setting": rec["setting"],
                                                "architecture": rec["architecture"],
                                                "settings": {k: v for k, v in
                                                             rec["settings"].items()},
                                                "members": []})
        entry["members"].append(rec["name"])
    for entry in out.values():
        recs = [r for r in records if r["setting"] == entry["setting"]]
        entry["seeds"] = [r["seed"] for r in recs]
        for k in SUMMARY_METRICS:
            entry[k] = _spread(recs, k)
    return list(out.values())


def per_architecture(records: list[dict]) -> list[dict]:
    """Per architecture: its members and ``{metric: {"mean", "std", "n"}}`` over all of
    them, every setting and seed together (None where no member has the metric)."""
    out = []
    for arch in dict.fromkeys(r["architecture"] for r in records):
        recs = [r for r in records if r["architecture"] == arch]
        out.append({"architecture": arch, "members": [r["name"] for r in recs],
                    **{k: _spread(recs, k) for k in SUMMARY_METRICS}})
    return out


def plot_frontier(settings: list[dict], out_png: str | os.PathLike) -> Path:
    """The frontier panels against L0, two by two (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = frontier_series(settings)
    lines = list(dict.fromkeys(series.values()))  # by architecture, then in sweep order
    colours = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(lines)}
    cols = 2
    rows = -(-len(FRONTIER) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows),
                             constrained_layout=True, squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(FRONTIER):]:
        ax.set_visible(False)
    for ax, (key, title) in zip(axes, FRONTIER):
        if not any(s.get("l0") and s.get(key) for s in settings):
            ax.text(0.5, 0.5, f"no {key} recorded\n(members not analyzed?)",
                    ha="center", va="center", transform=ax.transAxes, color="0.4")
        dashed, note = DASHED.get(key, (None, None))
        drawn_metrics = [(key, "-")] + ([(dashed, "--")] if dashed else [])
        for line in lines:
            for metric, style in drawn_metrics:
                pts = sorted((s["l0"]["mean"], s["l0"]["std"], s[metric]["mean"],
                              s[metric]["std"])
                             for s in settings if series[s["setting"]] == line
                             and s.get("l0") and s.get(metric))
                if not pts:
                    continue
                x, xerr, y, yerr = map(np.asarray, zip(*pts))
                ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", capsize=3, linestyle=style,
                            color=colours[line], label=line if style == "-" else None,
                            alpha=1.0 if style == "-" else 0.6)
        ax.set_xlabel("L0 (active features per input)")
        drawn = note and any(s.get(dashed) for s in settings)
        ax.set_title(f"{title} vs L0" + (f"\n({note})" if drawn else ""))
        ax.grid(alpha=0.3)
    one_per_architecture = len(lines) == len({s["architecture"] for s in settings})
    axes[0].legend(title="architecture" if one_per_architecture
                   else "architecture, other settings")
    fig.suptitle("sweep frontier (mean over seeds, error bars: 1 std)")
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def write_sweep_html(workdir: Path, records: list[dict], settings: list[dict],
                     architectures: list[dict] | None = None) -> Path:
    from apps.analysis.report import template_environment

    template = template_environment().get_template("sweep.html.j2")
    html = template.render(title=f"SAE sweep {workdir.name}", metrics=SUMMARY_METRICS,
                           settings=settings, records=records,
                           architectures=architectures or per_architecture(records),
                           has_frontier=(workdir / "frontier.png").exists())
    path = workdir / "sweep.html"
    path.write_text(html, encoding="utf-8")
    return path


def write_sweep_report(workdir, members, *, timing: dict | None = None) -> dict:
    """sweep.json, frontier.png and sweep.html of the sweep in ``workdir`` (``members``:
    the :class:`~apps.training.sweep_run.SweepMember` list; ``timing``: seconds recorded as they
    are); returns the sweep.json document."""
    workdir = Path(workdir)
    records = [member_record(workdir / "members" / m.name, m.cfg) for m in members]
    settings = summarise(records)
    architectures = per_architecture(records)
    doc = {"members": records, "settings": settings, "architectures": architectures,
           "timing": timing or {}}
    write_json(workdir / "sweep.json", doc)
    if any(s.get("l0") for s in settings):
        plot_frontier(settings, workdir / "frontier.png")
    write_sweep_html(workdir, records, settings, architectures)
    return doc
