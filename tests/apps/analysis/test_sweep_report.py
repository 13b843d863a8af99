"""The sweep report reads each member's files: explanation F1 and causal agreement too."""

import dataclasses
import json

import pytest

from apps.analysis.sweep_report import (
    FRONTIER,
    frontier_series,
    member_record,
    per_architecture,
    plot_frontier,
    summarise,
)
from sae_jax.config import SAETrainConfig


def _member(root, name, *, fve, l0, explanation_f1, causal, analyzed=True, with_pairs=4,
            absorbed=0.1):
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"fve": fve, "l0": l0, "steps": 10}))
    if analyzed:
        (d / "concepts.json").write_text(json.dumps(
            {"summary": {"recovered": 3, "total": 4, "mean_sae_f1": 0.8,
                         "recovered_with_pairs": with_pairs}}))
        (d / "explanations.json").write_text(json.dumps(
            {"summary": {"explained": 5, "median_f1_window": explanation_f1,
                         "causal_agreement": causal, "explained_share": 5 / (6 + with_pairs)}}))
        (d / "absorption.json").write_text(json.dumps(
            {"summary": {"measured": 40, "mean_absorption_fraction": absorbed,
                         "mean_full_absorption": absorbed / 2, "split_share": 0.25}}))
    return d


def test_members_explanation_f1_is_recorded_averaged_and_plotted(tmp_path):
    cfg = SAETrainConfig(architecture="topk", k=4, seed=0)
    records = [
        member_record(_member(tmp_path, "topk.k-4.seed-0", fve=0.9, l0=4.0,
                              explanation_f1=0.8, causal=1.0), cfg),
        member_record(_member(tmp_path, "topk.k-4.seed-1", fve=0.8, l0=4.0,
                              explanation_f1=0.6, causal=0.9, with_pairs=3, absorbed=0.3),
                      cfg),
        member_record(_member(tmp_path, "relu_l1.seed-0", fve=0.7, l0=9.0,
                              explanation_f1=None, causal=None, analyzed=False),
                      SAETrainConfig()),
    ]
    assert records[0]["explanation_f1"] == 0.8 and records[0]["causal_agreement"] == 1.0
    assert records[2]["explanation_f1"] is None and records[2]["explained"] is None
    settings = {s["setting"]: s for s in summarise(records)}
    topk = settings["topk.k-4"]
    assert topk["explanation_f1"]["mean"] == pytest.approx(0.7)
    assert topk["explanation_f1"]["std"] == pytest.approx(0.1)
    assert topk["causal_agreement"]["mean"] == pytest.approx(0.95)
    assert settings["relu_l1"]["explanation_f1"] is None  # not analyzed: no number made up
    # Concepts recovered by one feature, and by one feature or a pair of features.
    assert topk["concepts_recovered"]["mean"] == 3
    assert topk["concepts_with_pairs"]["mean"] == pytest.approx(3.5)
    assert settings["relu_l1"]["concepts_with_pairs"] is None
    # The explained share of the features that fire, averaged as the others.
    assert topk["explained_share"]["mean"] == pytest.approx((0.5 + 5 / 9) / 2)
    assert settings["relu_l1"]["explained_share"] is None
    # Absorption on the AP rungs, per setting and per architecture over all its members.
    assert records[0]["absorption_fraction"] == 0.1 and records[0]["rungs_measured"] == 40
    assert records[2]["absorption_fraction"] is None
    assert topk["full_absorption"]["mean"] == pytest.approx(0.1)
    assert topk["absorption_fraction"]["std"] == pytest.approx(0.1)
    assert topk["rungs_split"]["mean"] == 0.25
    architectures = {a["architecture"]: a for a in per_architecture(records)}
    assert architectures["topk"]["members"] == ["topk.k-4.seed-0", "topk.k-4.seed-1"]
    assert architectures["topk"]["absorption_fraction"]["n"] == 2
    assert architectures["relu_l1"]["absorption_fraction"] is None
    assert "explanation_f1" in dict(FRONTIER)
    png = plot_frontier(list(settings.values()), tmp_path / "frontier.png")
    assert png.stat().st_size > 1000


def test_sweep_page_tables_scroll_inside_their_boxes(tmp_path):
    # Many metric columns: the tables scroll sideways in their own box, never the page.
    import re

    from apps.analysis.sweep_report import write_sweep_html

    cfg = SAETrainConfig(architecture="topk", k=4, seed=0)
    records = [member_record(_member(tmp_path, "topk.k-4.seed-0", fve=0.9, l0=4.0,
                                     explanation_f1=0.8, causal=1.0), cfg)]
    html = write_sweep_html(tmp_path, records, summarise(records)).read_text()
    tables = re.findall(r"<table>", html)
    wrapped = re.findall(r'<div class="scroll"><table>.*?</table></div>', html, re.S)
    assert len(tables) == 3 and len(wrapped) == 3
    assert re.search(r"\.scroll\s*\{[^}]*overflow-x:\s*auto", html)


def test_a_sweep_on_activation_files_says_absorption_is_not_measured(tmp_path):
    from apps.analysis.sweep_report import write_sweep_html

    on_files = SAETrainConfig(architecture="topk", k=4, seed=0, activations="acts.npy")
    records = [member_record(_member(tmp_path, "topk.k-4.seed-0", fve=0.9, l0=4.0,
                                     explanation_f1=None, causal=None, analyzed=False),
                             on_files)]
    assert records[0]["on_activations"] and records[0]["absorption_fraction"] is None
    html = write_sweep_html(tmp_path, records, summarise(records)).read_text()
    assert "Absorption (absorption_fraction, full_absorption, rungs_split) is not measured" in html
    # A sweep on the gear model's builds says nothing of the kind.
    gear = [member_record(_member(tmp_path / "gear", "topk.k-4.seed-0", fve=0.9, l0=4.0,
                                  explanation_f1=0.8, causal=1.0),
                          SAETrainConfig(architecture="topk", k=4, seed=0))]
    assert "not measured" not in write_sweep_html(tmp_path, gear, summarise(gear)).read_text()


def test_frontier_draws_one_line_per_architecture_and_dictionary_size(tmp_path, monkeypatch):
    import matplotlib.axes

    base = SAETrainConfig(architecture="batchtopk")
    records = []
    for ef in (2.0, 16.0):
        for k in (11, 22):
            name = f"batchtopk.expansion_factor-{ef:g}.k-{k}.seed-0"
            cfg = dataclasses.replace(base, expansion_factor=ef, k=k)
            records.append(member_record(_member(tmp_path, name, fve=0.9 + ef / 1000 + k / 100,
                                                 l0=float(k), explanation_f1=0.8, causal=1.0),
                                         cfg))
    records.append(member_record(_member(tmp_path, "topk.k-11.seed-0", fve=0.9, l0=11.0,
                                         explanation_f1=0.8, causal=1.0),
                                 SAETrainConfig(architecture="topk", k=11)))
    settings = summarise(records)
    series = frontier_series(settings)
    assert series == {"batchtopk.expansion_factor-2.k-11": "batchtopk, expansion_factor=2",
                      "batchtopk.expansion_factor-2.k-22": "batchtopk, expansion_factor=2",
                      "batchtopk.expansion_factor-16.k-11": "batchtopk, expansion_factor=16",
                      "batchtopk.expansion_factor-16.k-22": "batchtopk, expansion_factor=16",
                      "topk.k-11": "topk"}  # k moves along a line; the size starts a new one
    drawn = []
    errorbar = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, **kw):
        drawn.append((kw["label"], [float(v) for v in x], [float(v) for v in y]))
        return errorbar(self, x, y, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    plot_frontier(settings, tmp_path / "frontier.png")
    fve_panel = drawn[:3]  # the first panel: FVE, one call per line
    assert sorted(label for label, _, _ in fve_panel) == [
        "batchtopk, expansion_factor=16", "batchtopk, expansion_factor=2", "topk"]
    small = next(d for d in fve_panel if d[0] == "batchtopk, expansion_factor=2")
    assert small[1] == [11.0, 22.0] and small[2] == pytest.approx([1.012, 1.122])
