"""The benchmark harness's own arithmetic and inputs (no torch needed)."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import harvest_bench, sae_bench
from benchmarks import run as bench_run
from benchmarks.timing import time_calls, time_interleaved
from primary.model import PrimaryConfig
from sae_jax.config import SAETrainConfig
from sae_jax.losses import sae_loss
from sae_jax.model import SAEConfig, create_sae


def _xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def test_matmul_chain_does_the_counted_work():
    # Shapes where the matmuls dwarf the elementwise work, so XLA's count is ~all matmul.
    b, d, h = 64, 256, 512
    x = jnp.ones((b, d))
    we, wd = jnp.ones((d, h)), jnp.ones((h, d))
    counted = sae_bench.sae_step_flops(b, d, h, bias_grad_matmul=False)
    xla = _xla_flops(lambda x, we, wd: sae_bench._matmul_chain(x, we, wd, steps=1), x, we, wd)
    assert counted <= xla <= 1.05 * counted


@pytest.mark.parametrize("original_behaviour", [False, True])
def test_step_flop_count_matches_the_real_loss_gradient(original_behaviour):
    b, d, h = 64, 256, 512
    params = create_sae(SAEConfig(d, h / d)).params()
    x = jax.random.normal(jax.random.key(0), (b, d))
    cfg = SAETrainConfig(original_behaviour=original_behaviour, resample_steps=())
    ema = jnp.zeros((h,))
    xla = _xla_flops(jax.grad(lambda p: sae_loss(p, x, ema, 10, cfg)[0]), params)
    counted = sae_bench.sae_step_flops(b, d, h, learn_decoder=not original_behaviour)
    assert counted <= xla
    # The count covers the matmuls; the rest is elementwise (at most ~100 ops per (b, h)),
    # far less than one more (b, d, h) matmul (2bdh = 512 per (b, h) here).
    assert xla - counted < 100 * b * h + 50 * d * h


def test_original_loop_counts_its_second_forward():
    b, d, h = 8, 4, 16
    loop = sae_bench.sae_step_flops(b, d, h, learn_decoder=False, bias_grad_matmul=True,
                                    second_forward=True)
    assert loop - sae_bench.sae_step_flops(b, d, h, learn_decoder=False,
                                           bias_grad_matmul=True) == 4 * b * d * h
    assert loop > sae_bench.sae_step_flops(b, d, h)


def test_random_builds_are_valid_padded_sets():
    cfg = PrimaryConfig(vocab_size=20, weapon_vocab_size=5, embedding_dim=4, hidden_dim=8,
                        num_layers=1, num_heads=2, num_inducing_points=2)
    tokens, weapons, mask = harvest_bench.random_builds(cfg, batch=50, length=7, seed=3)
    assert tokens.shape == mask.shape == (50, 7) and weapons.shape == (50, 1)
    np.testing.assert_array_equal(mask, tokens == cfg.pad_token_id)
    assert (~mask[:, 0]).all()  # at least one token per build
    assert (np.diff(mask.astype(int), axis=1) >= 0).all()  # right-padded
    assert weapons.min() >= 0 and weapons.max() < cfg.weapon_vocab_size


def test_demo_config_reads_the_flagfile(tmp_path):
    flags = tmp_path / "primary_demo.flags"
    flags.write_text("# demo\n--hidden_dim=96\n--num_layers=1\n--use_layer_norm=false\n"
                     "--learning_rate=0.1\n")
    cfg, source = harvest_bench.demo_config(str(flags))
    assert (cfg.hidden_dim, cfg.num_layers, cfg.use_layer_norm) == (96, 1, False)
    assert cfg.num_heads == harvest_bench.DEMO_FALLBACK.num_heads
    assert source == str(flags)
    cfg, source = harvest_bench.demo_config(str(tmp_path / "missing.flags"))
    assert cfg == harvest_bench.DEMO_FALLBACK and "built-in" in source


def test_time_calls_counts_every_rep():
    calls = []
    t = time_calls(lambda: calls.append(1), reps=4, warmup=2)
    assert len(calls) == 6 and len(t["all"]) == 4
    assert t["best"] <= t["median"]


def test_time_interleaved_runs_one_call_of_each_per_round():
    order = []
    times = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                             rounds=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert sorted(times) == ["a", "b"] and all(len(t) == 3 for t in times.values())


@pytest.mark.slow  # runs the benchmark suite's smoke pass end to end
def test_smoke_run_reports_consistent_ratios(tmp_path):
    out = tmp_path / "smoke.json"
    bench_run.main(["--smoke", "--skip", "harvest,loop,scaling", "--out", str(out)])
    res = json.loads(out.read_text())
    sae = res["sae"]
    for name in ("ours_fixed", "ours_original_behaviour", "ours_fixed_bf16", "matmul_chain"):
        entry = sae[name]
        assert len(entry["roofline_fraction_all"]) == sae["rounds"]
        assert entry["roofline_fraction"] == pytest.approx(
            float(np.median(entry["roofline_fraction_all"])))
        assert 0 < entry["roofline_fraction"]
    # Best-over-best fraction is the best step rate over the best matmul rate of its dtype.
    fixed = sae["ours_fixed"]
    assert fixed["roofline_fraction_best_over_best"] == pytest.approx(
        fixed["gflops_per_s"] / sae["matmul_float32"]["gflops_best"], rel=1e-6)
    assert res["headline"]["sae_roofline_fraction"] == fixed["roofline_fraction"]
    if "original_torch" in sae:  # torch is a benchmark-only dependency
        assert fixed["speedup_vs_original"] == pytest.approx(
            float(np.median(fixed["speedup_vs_original_all"])))
        assert res["headline"]["sae_speedup_vs_original"] == fixed["speedup_vs_original"]


def test_serve_load_mix_is_seeded_legal_and_partly_steered():
    from benchmarks.serve_load import request_mix
    from primary.allocator import fits
    from primary.vocab import ABILITIES

    bodies = request_mix(300, [40, 50, 60], [3, 7, 9], seed=1)
    assert bodies == request_mix(300, [40, 50, 60], [3, 7, 9], seed=1)
    assert bodies != request_mix(300, [40, 50, 60], [3, 7, 9], seed=2)
    rows = np.array([[b["abilities"].get(a, 0) for a in ABILITIES] for b in bodies])
    assert fits(rows).all() and {b["weapon"] for b in bodies} == {40, 50, 60}
    assert {len(b["abilities"]) for b in bodies} >= {0, 1, 2, 3}
    edits = [b["edits"] for b in bodies if "edits" in b]
    assert 0.25 < len(edits) / len(bodies) < 0.42  # about a third
    assert {len(e) for e in edits} == {1, 2}
    assert all(len({x["feature"] for x in e}) == len(e) for e in edits)


@pytest.mark.slow  # starts the workbench server twice (each compiling its programs)
def test_serve_load_measures_both_servers_on_a_small_run(tmp_path):
    from benchmarks import serve_load
    from tests.apps.workbench.workbench_fixture import make_run

    run = make_run(tmp_path / "run")
    out = tmp_path / "serve_load.json"
    assert serve_load.main([f"--demo_run={run}", f"--scratch={tmp_path / 'scratch'}",
                            "--requests=12", "--cold=4", "--alone=2", "--clients=3",
                            f"--out={out}"]) == 0
    got = json.loads(out.read_text())
    for name in ("off", "on"):
        for phase, n in (("cold", 4), ("warm", 12), ("alone", 2)):
            figures = got[name][phase]
            assert figures["requests"] == n and figures["errors"] == 0, (name, phase, figures)
            assert figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"] <= \
                figures["max_ms"]
    assert got["on"]["warm"]["mean_batch"] >= 1 and "mean_batch" not in got["off"]["warm"]
    assert got["ratios_on_off"]["warm_requests_per_s"] == pytest.approx(
        got["on"]["warm"]["requests_per_s"] / got["off"]["warm"]["requests_per_s"], abs=0.01)


def test_example_harvest_pads_less_than_the_original_and_agrees_with_it():
    examples, vocab, weapon_vocab = harvest_bench.demo_examples(200)
    cfg = harvest_bench.with_vocab(PrimaryConfig(
        vocab_size=1, weapon_vocab_size=1, embedding_dim=8, hidden_dim=16, num_layers=1,
        num_heads=2, num_inducing_points=4), vocab, weapon_vocab)
    r = harvest_bench.bench_example_harvest(cfg, examples, rows=64, original_batch=16, rounds=1)
    pad = r["padding"]
    assert pad["rows"] == 64 and pad["null_rows_looked_up"] > 0
    assert pad["real_tokens"] <= pad["ours_token_positions"] < pad["original_token_positions"]
    assert r["ours_builds_per_s"] == pytest.approx(64 / r["ours_s_best"])
    if "torch_builds_per_s" in r:  # torch is a benchmark-only dependency
        assert r["pooled_max_abs_diff"] < 1e-4
        assert r["speedup"] == pytest.approx(float(np.median(r["speedup_all"])))


def test_concept_probe_finds_a_linear_concept_and_not_noise():
    from benchmarks.concept_probe import probe_f1

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 8)).astype(np.float32)
    linear = (x[:, 0] + 0.5 * x[:, 3]) > 1.0  # a concept the vector encodes linearly
    noise = rng.random(4000) < 0.2  # one it does not encode
    f1 = probe_f1(x, np.stack([linear, noise], 1), steps=300)
    assert f1[0] > 0.9, f1
    assert f1[1] < 0.45, f1


def test_run_summary_reads_a_run_and_averages_runs_of_one_label(tmp_path):
    from benchmarks.run_summary import parse_runs, summarise_groups, summarise_run

    def run(name, fve, rates, f1s, median, matched, share=None):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(
            {"fve": fve, "l0": 16.0, "dead_fraction": 0.0, "dense_fraction": 0.1,
             "loss_recovered": 0.98}))
        (d / "concepts.json").write_text(json.dumps(
            {"rows": [{"concept": "a", "sae_f1": 0.9}, {"concept": "b", "sae_f1": 0.79}]}))
        feats = {str(i): {"frequency_all": r, "f1": f} for i, (r, f) in
                 enumerate(zip(rates, f1s))}
        (d / "explanations.json").write_text(json.dumps(
            {"features": feats, "summary": {
                "median_f1_window": median, "window_features": 2, "causal_agreement": 1.0,
                "explained_share": share, "explained_activity_share": share,
                "ground_truth": {"share": matched / 2, "matched": matched, "checked": 2}}}))
        return d

    a = run("a", 0.98, [0.0, 0.005, 0.02, 0.2, 0.5], [0.0, 0.1, 0.6, 0.8, 0.9], 0.7, 2)
    b = run("b", 0.96, [0.0005, 0.0005, 0.05, 0.1, 0.4], [0.2, 0.2, 0.4, 0.5, 0.6], 0.45, 1,
            share=0.4)
    rows = [summarise_run(a), summarise_run(b)]
    assert rows[0]["features_by_rate"] == {"0%-0.1%": 1, "0.1%-1%": 1, "1%-30%": 2,
                                           "30%-100%": 1}
    assert rows[1]["features_by_rate"]["0%-0.1%"] == 2
    assert rows[0]["concepts_recovered"] == 1 and rows[0]["concepts_total"] == 2
    assert rows[0]["median_f1_above_1pct"] == pytest.approx(0.8)  # 0.6, 0.8, 0.9
    assert rows[0]["ground_truth"] == "2/2"
    groups = summarise_groups(rows, ["x", "x"])
    assert groups["x"]["runs"] == 2
    assert groups["x"]["fve"]["mean"] == pytest.approx(0.97)
    assert groups["x"]["fve"]["std"] == pytest.approx(0.01)
    assert groups["x"]["ground_truth_share"]["mean"] == pytest.approx(0.75)
    # A share only one run has (the other read full builds only) is that run's.
    assert rows[0]["explained_share"] is None and rows[1]["explained_share"] == 0.4
    assert groups["x"]["explained_share"] == {"mean": 0.4, "std": 0.0}
    assert parse_runs("p=d1,d2") == [("p", Path("d1")), ("d2", Path("d2"))]
    with pytest.raises(ValueError, match="no run directories"):
        parse_runs(",")
    with pytest.raises(Exception, match="no metrics file"):
        summarise_run(tmp_path)  # holds no run


def test_results_name_repository_paths_relative_to_its_root(tmp_path):
    import os

    from benchmarks.output import REPO_ROOT, write_results

    out = tmp_path / "r.json"
    write_results({"wall_s": 1.0, "fixture": os.path.join(REPO_ROOT, "tests", "fixtures"),
                   "runs": [os.path.join(REPO_ROOT, "configs", "demo.flags"), "/elsewhere/x"],
                   "rows": 3}, str(out))
    got = json.loads(out.read_text())
    assert got["fixture"] == os.path.join("tests", "fixtures")
    assert got["runs"] == [os.path.join("configs", "demo.flags"), "/elsewhere/x"]
    assert got["rows"] == 3 and got["wall_s"] == 1.0


def test_explain_tighten_compares_the_two_searches_on_a_run(tmp_path):
    from benchmarks import explain_tighten
    from tests.apps.workbench.workbench_fixture import make_run

    run = make_run(tmp_path / "run", explained=False)
    out = tmp_path / "tighten.json"
    assert explain_tighten.main([f"--workdir={run}", "--rounds=2", "--num_builds=200",
                                 f"--out={out}"]) == 0
    got = json.loads(out.read_text())
    on, off = got["tightened"], got["not tightened"]
    assert len(on["seconds"]) == len(off["seconds"]) == 2
    assert got["time_ratio"] == pytest.approx(on["median_seconds"] / off["median_seconds"],
                                               abs=2e-3)
    assert 0 <= got["rules_changed"] <= got["features"] == 128
    # Tightening may cost each rule at most 0.01 fit F1, so the mean at most as much.
    assert on["mean_fit_f1"] >= off["mean_fit_f1"] - 0.01
    assert got["rows"] >= 200 and got["workdir"] == str(run)


def test_concept_requirement_rule_is_met_by_every_labelled_build_and_scored_against_labels():
    from benchmarks.concept_probe import requirement_scores
    from primary.planted_concepts import CONCEPTS
    from primary.synthetic import generate_builds

    builds = generate_builds(3000, seed=4)
    scores = requirement_scores(builds, CONCEPTS)
    assert sorted(scores) == sorted(builds.concept_names)
    for name, (precision, recall, f1) in scores.items():
        assert recall == 1.0, name  # a labelled build holds its concept's requirement
        assert 0.0 < precision <= 1.0 and f1 == pytest.approx(2 * precision / (precision + 1))
    # Unlabel half of anchor's builds: they still meet the rule, so precision halves.
    column = builds.concept_names.index("anchor")
    labels = np.asarray(builds.concepts, bool).copy()
    positives = np.flatnonzero(labels[:, column])
    labels[positives[::2], column] = False
    fewer = dataclasses.replace(builds, concepts=labels)
    precision, recall, _ = requirement_scores(fewer, CONCEPTS)["anchor"]
    assert recall == 1.0
    assert precision == pytest.approx(scores["anchor"][0] * (len(positives) // 2)
                                      / len(positives))


def test_requirement_rule_as_the_tokens_show_it_cannot_be_more_precise():
    from benchmarks.concept_probe import requirement_scores
    from primary.planted_concepts import CONCEPTS, Concept
    from primary.synthetic import generate_builds

    builds = generate_builds(3000, seed=4)
    exact = requirement_scores(builds, CONCEPTS)
    seen = requirement_scores(builds, CONCEPTS, visible=True)
    for name in exact:
        assert seen[name][1] == 1.0, name  # what holds in AP holds in the tokens
        assert seen[name][0] <= exact[name][0], name
    # Anchor asks for 13 AP of Ink Saver (Main), which the tokens show as 12: builds with
    # exactly 12 (four subs) meet the visible rule only.
    assert seen["anchor"][0] < exact["anchor"][0]
    # A requirement on a threshold reads the same either way.
    on_threshold = [Concept("on_threshold", "", {"swim_speed_up": 12, "ninja_squid": 10})]
    relabelled = dataclasses.replace(builds, concept_names=["on_threshold"],
                                     concepts=np.asarray(builds.concepts)[:, :1])
    assert (requirement_scores(relabelled, on_threshold, visible=True)
            == requirement_scores(relabelled, on_threshold))


def test_concept_probe_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    from benchmarks.concept_probe import main

    with pytest.raises(SystemExit) as stop:
        main(["--workdir", str(tmp_path), "--out", str(tmp_path / "out.json")])
    assert stop.value.code == 2
    assert f"{tmp_path} is not an SAE run directory" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_input_transforms_standardise_and_whiten_the_training_vectors(tmp_path, capsys):
    from benchmarks.input_transform import main, transforms

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 6)) @ rng.normal(size=(6, 6)) * 3.0 + 5.0
    fns = transforms(x)
    assert np.array_equal(fns["raw"](x), x)
    z = fns["standardise"](x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-5)
    w = fns["whiten"](x)
    cov = np.cov(w.T)
    # Whitened: uncorrelated, each principal direction at variance ev / (ev + ridge).
    ev = np.linalg.eigvalsh(np.cov(x.T))
    np.testing.assert_allclose(cov, np.diag(ev / (ev + 1e-3 * ev.max())), atol=1e-9)
    with pytest.raises(SystemExit) as stop:
        main(["--workdir", str(tmp_path), "--transforms", "raw,zscore"])
    assert stop.value.code == 2
    assert "--transforms: unknown ['zscore']" in capsys.readouterr().err


def test_concept_probe_on_a_small_run_writes_every_column(tmp_path):
    import shutil

    from benchmarks.concept_probe import main

    fixture = Path(__file__).resolve().parent / "fixtures" / "demo_small"
    run = tmp_path / "run"
    shutil.copytree(fixture / "sae", run / "sae")
    (run / "run.json").write_text(json.dumps({"primary_model_dir": str(fixture / "primary"),
                                              "data_source": "synthetic"}))
    out = tmp_path / "probe.json"
    assert main(["--workdir", str(run), "--builds", "400", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["builds"] == 400 and doc["sae_recovered"] is None  # no concepts.json here
    for row in doc["concepts"]:
        assert 0.0 <= row["fresh_single_f1"] <= 1.0 and len(set(row["fresh_pair"])) == 2
        assert row["visible_requirement_f1"] <= row["requirement_f1"] + 1e-12


def test_sweep_chain_reports_every_form_against_the_matmul():
    from benchmarks import sweep_bench

    out = sweep_bench.bench_chain(rounds=2, steps_per_call=1, matmul_n=32, members=2,
                                  d_in=8, d_sae=16, batch=8)
    for form in ("singles", "vmapped", "vmapped_one_by_one"):
        fractions = out[f"{form}_roofline_fraction_all"]
        assert len(fractions) == 2 and all(f > 0 for f in fractions)
        assert out[f"{form}_roofline_fraction_median"] == pytest.approx(np.median(fractions))


@pytest.mark.slow  # compiles and times a stacked sweep step
def test_sweep_step_times_a_what_if_variant_beside_the_stack(monkeypatch):
    from benchmarks import profile_sae_step, sweep_bench

    traced = []

    def counted(h):
        traced.append(h.shape)
        return profile_sae_step.firing_counts_two_passes(h)

    monkeypatch.setitem(profile_sae_step.STEP_VARIANTS, "two_pass_counts",
                        {"firing_counts": counted})
    out = sweep_bench.bench_step(rounds=2, steps_per_call=1, matmul_n=32, members=2, d_in=8,
                                 d_sae=16, batch=8, buffer_rows=32, what_if="two_pass_counts")
    assert traced, "the variant was not swapped into the stacked step"
    assert out["stacked_two_pass_counts_ms_per_step_median"] > 0
    assert out["stacked_over_stacked_two_pass_counts_median"] > 0
    assert 0 < out["stacked_two_pass_counts_roofline_fraction_median"]


@pytest.mark.slow  # compiles a sweep step of every architecture
def test_sweep_step_takes_every_architecture_matryoshka_included():
    from benchmarks import sweep_bench

    # d_sae above the default k (32); the groups come from the architecture (8, 8, 16, 32).
    out = sweep_bench.bench_step(rounds=1, steps_per_call=1, matmul_n=32, members=2, d_in=8,
                                 d_sae=64, batch=8, buffer_rows=32, architecture="matryoshka")
    assert out["architecture"] == "matryoshka"
    assert out["stacked_ms_per_step_median"] > 0 and out["singles_ms_per_step_median"] > 0
    assert "matryoshka" in sweep_bench.ARCHITECTURES


@pytest.mark.slow  # compiles and times the primary step in two forms
def test_primary_step_bench_times_both_forms_of_the_same_steps(tmp_path):
    from benchmarks import primary_step_bench

    flagfile = tmp_path / "tiny_primary.flags"
    flagfile.write_text("\n".join([
        "--data_source=synthetic", "--num_builds=80", "--seed=0", "--embedding_dim=8",
        "--hidden_dim=16", "--num_layers=1", "--num_heads=2", "--num_inducing_points=4",
        "--batch_size=96", "--epochs=1", "--dropout=0.0"]) + "\n")
    out = tmp_path / "step.json"
    res = primary_step_bench.main([f"--flagfile={flagfile}", "--batches=2", "--rounds=2",
                                   f"--out={out}"])
    r = res["primary_step"]
    written = json.loads(out.read_text())["primary_step"]
    assert written["parts_over_whole_all"] == pytest.approx(r["parts_over_whole_all"])
    assert (r["batch_size"], r["batches"], r["rounds"], r["hidden_dim"]) == (96, 2, 2, 16)
    assert len(r["layout"]) == r["parts"] == 2 and sum(rows for rows, _ in r["layout"]) == 96
    widths = [w for _, w in r["layout"]]
    assert widths == sorted(widths) and widths[0] < widths[-1] <= 16
    assert len(r["parts_over_whole_all"]) == 2 and all(x > 0 for x in r["parts_over_whole_all"])
    assert r["parts_over_whole_median"] == pytest.approx(
        float(np.median(r["parts_over_whole_all"])))
    assert all(s > 0 for s in r["compile_s"].values())
    # Same steps from the same start in both forms: only float rounding between them.
    assert r["params_max_abs_difference"] < 1e-4


@pytest.mark.slow  # trains twice, each run in its own process
def test_byo_memory_measures_both_runs_and_removes_its_files(tmp_path):
    import subprocess
    import sys

    out, scratch = tmp_path / "byo.json", tmp_path / "scratch"
    done = subprocess.run(
        [sys.executable, "benchmarks/byo_memory.py", "--rows=60000", "--small_rows=40000",
         "--dim=16", "--buffer_size=16384", f"--scratch={scratch}", f"--out={out}"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["buffer_mib"] == 16384 * 16 * 4 / 2**20
    for name, rows in (("small", 40000), ("large", 60000)):
        run = res["runs"][name]
        assert run["rows"] == rows and run["peak_rss_mib"] > run["sampled_peak_anon_mib"] > 0
        assert run["beyond_buffer_mib"] == pytest.approx(run["peak_rss_mib"] - res["buffer_mib"])
    assert not scratch.exists()
