"""The demo's results collector (benchmarks/demo_results.py) on a small fake run folder."""

import json

import pytest

from benchmarks import demo_results as dr


def _write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def fake_run(root):
    """A run folder with the fields the collector reads, each value distinct."""
    _write(root / "metrics.json", {
        "architecture": "batchtopk", "k": 7, "d_in": 16, "d_sae": 64, "fve": 0.9234,
        "loss_recovered": 0.8767, "l0": 6.96, "dead_fraction": 0.125, "num_inputs": 3000,
        "steps": 1234, "seconds": 55.5})
    _write(root / "concepts.json", {"rows": [], "summary": {
        "recovered": 5, "recovered_with_pairs": 8, "total": 9, "num_builds": 500}})
    _write(root / "explanations.json", {"num_builds": 4000, "features": {}, "summary": {
        "explained": 21, "explained_f1": 0.5, "explained_activity_share": 0.9517,
        "causal_agreement": 0.9, "causal_checked": 20,
        "median_f1_window": 0.8149, "window_features": 13,
        "ground_truth": {"matched": 4, "checked": 6}}})
    _write(root / "absorption.json", {"rungs": [], "summary": {
        "mean_absorption_fraction": 0.1374, "split_share": 0.35, "measured": 52,
        "concepts": 126}})
    _write(root / "primary_run" / "metrics.json", {
        "val_f1": 0.6512, "baseline_f1": 0.5987, "num_params": 1000, "seconds": 12.0})
    return root


def test_collect_reads_each_figure_from_its_file(tmp_path):
    fig = dr.collect(fake_run(tmp_path / "run"))
    assert (fig["fve"], fig["l0"], fig["dead_fraction"], fig["dead_inputs"]) == (
        0.9234, 6.96, 0.125, 3000)
    assert (fig["primary_val_f1"], fig["primary_baseline_f1"]) == (0.6512, 0.5987)
    assert (fig["concepts_recovered"], fig["concepts_with_pairs"], fig["concepts_total"]) == (
        5, 8, 9)
    assert (fig["explained"], fig["causal_agreement"], fig["causal_checked"]) == (21, 0.9, 20)
    assert fig["explained_activity_share"] == 0.9517
    assert (fig["median_f1_window"], fig["window_features"]) == (0.8149, 13)
    assert (fig["ground_truth_matched"], fig["ground_truth_checked"]) == (4, 6)
    assert (fig["absorption_fraction"], fig["absorption_split_share"]) == (0.1374, 0.35)
    assert (fig["absorption_rungs_measured"], fig["absorption_rungs"]) == (52, 126)


def test_a_missing_file_or_field_is_named(tmp_path):
    run = fake_run(tmp_path / "run")
    (run / "concepts.json").unlink()
    assert not dr.is_finished(run)
    with pytest.raises(dr.DemoResultsError, match=r"concepts\.json: missing"):
        dr.collect(run)
    fake_run(run)
    _write(run / "explanations.json", {"num_builds": 1, "summary": {}})
    with pytest.raises(dr.DemoResultsError, match=r"explanations\.json: no field "
                                                  r"'summary\.ground_truth'"):
        dr.collect(run)


def test_the_table_rounds_for_people(tmp_path):
    results = {"figures": dr.collect(fake_run(tmp_path / "run")), "wall_s": 125.4,
               "wall_load_average_1min": [1.25, 2.5],
               "commit": "0123456789abcdef", "machine": {"cpu_cores": 2, "cpu_model": "X",
                                                         "load_average_1_5_15": [1.5, 2, 3]}}
    table = dr.render_table(results)
    for cell in ("| **0.651** vs 0.599 |", "| **0.923** |", "| 0.877 |", "| 7.0 of 64 |",
                 "| 12.5% |", "3,000 held-out", "| **5 / 9** |", "| 8 / 9 |",
                 "| 21 of 64, carrying 95.2% of the activity |", "| **0.81** |",
                 "over the 13 features",
                 "| 90.0% (18 of 20) |", "| 4 / 6 |", "| 0.137, 35.0% of rungs split |",
                 "the 52 of 126 rungs",
                 "| 2 min 5 s (load average 1.25 at the start, 2.5 at the end) |",
                 "BatchTopK, k = 7",
                 "2-core CPU (X) at commit `0123456789`"):
        assert cell in table, cell


def test_the_command_writes_the_results_and_redraws_the_readme(tmp_path):
    run = fake_run(tmp_path / "run")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{dr.TABLE_START}\nold table\n{dr.TABLE_END}\nafter\n")
    out = tmp_path / "demo.json"
    assert dr.main([f"--workdir={run}", f"--out={out}", f"--readme={readme}",
                    "--wall_s=61", "--commit=abc"]) == 0
    results = json.loads(out.read_text())
    assert results["figures"] == dr.collect(run)
    assert (results["wall_s"], results["commit"]) == (61.0, "abc")
    assert readme.read_text() == f"intro\n{dr.table_block(results)}\nafter\n"


def test_a_wall_time_needs_a_finished_run(tmp_path):
    with pytest.raises(dr.DemoResultsError, match="no finished demo run"):
        dr.main([f"--workdir={tmp_path / 'empty'}", f"--out={tmp_path / 'x.json'}",
                 "--readme=", "--wall_s=5"])


def test_an_empty_workdir_runs_the_demo_and_times_it(tmp_path, monkeypatch):
    ran = []

    def fake_demo(workdir):
        ran.append(workdir)
        fake_run(workdir)
        return 42.25

    monkeypatch.setattr(dr, "run_demo", fake_demo)
    run, out = tmp_path / "run", tmp_path / "demo.json"
    assert dr.main([f"--workdir={run}", f"--out={out}", "--readme="]) == 0
    results = json.loads(out.read_text())
    assert ran == [run]
    assert (results["wall_s"], results["wall_timed_by"], results["resumed"]) == (
        42.2, "benchmarks.demo_results", False)
    assert len(results["wall_load_average_1min"]) == 2
    assert results["figures"] == dr.collect(run)
    # A finished run is read, not run again, and has no time of its own.
    assert dr.main([f"--workdir={run}", f"--out={out}", "--readme="]) == 0
    assert ran == [run] and json.loads(out.read_text())["wall_s"] is None
