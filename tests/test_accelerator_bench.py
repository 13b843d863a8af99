"""The accelerator benchmark at toy sizes: every section runs and its bookkeeping adds up."""

import json
import math

import numpy as np
import pytest

from benchmarks import accelerator, sae_bench

# Slow (a smoke run of the accelerator benchmark):
# run by `pytest -m slow`; .ci/run runs both passes.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerator") / "smoke.json"
    results = accelerator.main(["--smoke", "--out", str(out)])
    with open(out) as f:
        written = json.load(f)
    return results, written


def _numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield node


def test_json_has_every_section_and_the_machine(smoke):
    _, written = smoke
    for section in ("machine", "plan", "matmul", *accelerator.SECTIONS, "targets"):
        assert section in written, section
    assert written["mode"] == "smoke" and written["complete"] is True
    assert written["machine"]["jax_backend"] == "cpu"
    assert written["machine"]["device_kind"]
    assert set(written["targets"]) == {"sae_bf16_roofline_fraction_batch4096",
                                       "harvest_819200_seconds", "bf16_fve_change"}


def test_timings_are_finite_and_positive(smoke):
    _, written = smoke
    for section in ("matmul", "sae", "harvest"):
        for x in _numbers(written[section]):
            assert math.isfinite(x) and x >= 0, (section, x)
    for variant in accelerator.VARIANTS:
        assert written["matmul"][variant]["flops_per_s"] > 0
    h = written["harvest"]
    assert h["seconds"] > 0 and h["builds_per_s"] > 0
    assert h["buffer_rows_filled"] == h["rows"] and h["all_finite"]


def test_loop_sweep_counts_its_steps_and_rates(smoke):
    _, written = smoke
    loop = written["loop"]
    assert list(loop["by_primary_batch"]) == [str(b) for b in written["plan"]["loop_batch_sweep"]]
    for batch, r in loop["by_primary_batch"].items():
        assert r["num_batches"] * int(batch) == loop["rows"]
        assert r["sae_steps"] == r["num_batches"] * 4  # demo_relu_l1.flags: 4 SAE steps per batch
        assert r["ours_sae_steps_per_s"] == pytest.approx(r["sae_steps"] / r["ours_s_best"])
        assert r["ours_losses_finite"] and "speedup" not in r  # no torch side here


def test_roofline_fraction_is_flops_over_time_over_the_matching_rate(smoke):
    _, written = smoke
    matmul = written["matmul"]
    assert matmul["flops"] == 2 * matmul["n"] ** 3
    for shape, entry in written["sae"].items():
        assert set(entry) == set(written["plan"]["sae_variants"])
        for variant, r in entry.items():
            assert r["flops_per_step"] == sae_bench.sae_step_flops(r["batch"], r["d_in"],
                                                                    r["d_sae"])
            assert f"{r['d_in']}x{r['d_sae']}" == shape
            rate = matmul[variant]["flops_per_s"]
            assert r["matmul_flops_per_s"] == rate
            expected = r["flops_per_step"] / r["step_s_best"] / rate
            assert r["roofline_fraction"] == pytest.approx(expected, rel=1e-12)
            assert r["activations_per_s"] == pytest.approx(r["batch"] / r["step_s_best"],
                                                           rel=1e-12)
            assert r["compute_dtype"] == accelerator.VARIANTS[variant][0]
            assert r["all_losses_finite"]


def test_sweep_section_compares_the_stack_with_its_members(smoke):
    _, written = smoke
    plan, sweep = written["plan"], written["sweep"]
    assert (sweep["members"], sweep["batch"]) == (plan["sweep_members"], plan["sweep_batch"])
    assert [sweep["d_in"], sweep["d_sae"]] == plan["sweep_shape"]
    ratios = sweep["stacked_over_singles_all"]
    assert len(ratios) == plan["sweep_rounds"] and all(r > 0 for r in ratios)
    assert sweep["stacked_over_singles_median"] == pytest.approx(float(np.median(ratios)))
    fractions = sweep["roofline_fraction_all"]
    assert len(fractions) == plan["sweep_rounds"] and all(f > 0 for f in fractions)
    assert sweep["roofline_fraction_median"] == pytest.approx(float(np.median(fractions)))


def test_analysis_section_times_each_size(smoke):
    _, written = smoke
    plan, analysis = written["plan"], written["analysis"]
    assert list(analysis) == [f"{f}x{n}" for f, n in plan["analysis_sizes"]]
    for (features, builds), row in zip(plan["analysis_sizes"], analysis.values()):
        assert (row["features"], row["builds"]) == (features, builds)
        assert row["explanations"] is plan["analysis_explanations"]
        assert 0 < row["seconds"] and 0 < row["peak_gib"]
        # Every stage and the total are rounded to 0.1 s (at most 0.05 off each), so the
        # stages' sum may pass the total by that much per rounded number, never by more.
        rounding = 0.05 * (len(row["stages"]) + 1) + 1e-9
        assert sum(row["stages"].values()) <= row["seconds"] + rounding
        assert row["positive_activations"] > 0


def test_a_run_cut_short_keeps_the_sections_it_finished(tmp_path, monkeypatch):
    out = tmp_path / "cut.json"

    def cut(plan):
        raise KeyboardInterrupt  # the device taken back after the loop section

    monkeypatch.setattr(accelerator, "run_sweep", cut)
    with pytest.raises(KeyboardInterrupt):
        accelerator.main(["--smoke", "--skip", "sae,quality,harvest", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["complete"] is False and "loop" in written and "sweep" not in written


def test_fve_figures_are_bounded_and_the_change_is_their_difference(smoke):
    _, written = smoke
    q = written["quality"]["variants"]
    ref = q[accelerator.REFERENCE_VARIANT]
    for scores in q.values():
        assert -1 <= scores["fve"] <= 1
        assert 0 <= scores["l0"] <= written["quality"]["d_sae"]
    other = written["quality"]["reference_other_seed"]
    assert -1 <= other["fve"] <= 1 and other["seed"] != written["quality"]["seed"]
    assert other["fve_change_vs_reference"] == pytest.approx(other["fve"] - ref["fve"],
                                                             abs=1e-12)
    change = q["bfloat16"]["fve_change_vs_reference"]
    assert change == pytest.approx(q["bfloat16"]["fve"] - ref["fve"], abs=1e-12)
    assert written["targets"]["bf16_fve_change"]["value"] == change


def test_toy_run_claims_no_target(smoke):
    # Toy sizes on a CPU say nothing about the GPU targets: every verdict stays null, and
    # a harvest of fewer than 819,200 rows is only ever reported as extrapolated.
    _, written = smoke
    for name, t in written["targets"].items():
        assert t["met"] is None, name
    assert written["targets"]["harvest_819200_seconds"]["value"] is None
    h = written["harvest"]
    assert "seconds_819200_measured" not in h
    assert h["seconds_819200_extrapolated"] == pytest.approx(819_200 / h["builds_per_s"])


def test_targets_judge_measured_figures():
    # The verdict logic on hand-made results, as an accelerator run would produce them.
    results = {"mode": "accelerator", "machine": {"jax_backend": "gpu"},
               "sae": {"512x2048": {"bfloat16": {"roofline_fraction": 0.61, "batch": 4096}}},
               "harvest": {"seconds_819200_measured": 31.5},
               "quality": {"variants": {"bfloat16": {"fve_change_vs_reference": -0.004}}}}
    t = accelerator.targets(results)
    assert t["sae_bf16_roofline_fraction_batch4096"]["met"] is True
    assert t["harvest_819200_seconds"]["value"] == 31.5
    assert t["harvest_819200_seconds"]["met"] is False
    assert t["bf16_fve_change"]["met"] is True
    results["sae"]["512x2048"]["bfloat16"]["roofline_fraction"] = 0.2
    results["quality"]["variants"]["bfloat16"]["fve_change_vs_reference"] = 0.03
    t = accelerator.targets(results)
    assert t["sae_bf16_roofline_fraction_batch4096"]["met"] is False
    assert t["bf16_fve_change"]["met"] is False


def test_bad_flags_are_refused():
    with pytest.raises(SystemExit):
        accelerator.main(["--smoke", "--skip", "matmul"])
    with pytest.raises(SystemExit):
        accelerator.main(["--smoke", "--harvest_rows", "0"])
    with pytest.raises(ValueError, match="multiple of the harvest batch"):
        accelerator.host_batches(accelerator.TOY_PRIMARY, rows=100, batch=64, length=4)


def test_synthetic_yardstick_scores_both_architectures(smoke):
    _, written = smoke
    synth = written["synth"]
    assert set(synth["architectures"]) == set(written["plan"]["synth_archs"])
    for arch, entry in synth["architectures"].items():
        run = entry["runs"][0]
        assert 0 <= run["f1"] <= 1 and 0 <= run["mcc"] <= 1, arch
        assert run["samples"] == run["steps"] * synth["batch"]
        assert run["l0"] == pytest.approx(synth["k"], rel=0.5)
    assert synth["full_size"] is False  # the published figures are set beside 16k runs only
