"""The SAELens peer benchmark's arithmetic and recipes, without torch or SAELens: the
means and spreads over seeds, the summary's picks and ratios, the targets, and that our
side's settings are valid for every architecture."""

import pytest

from benchmarks import peer_recipes, peer_summary
from sae_jax.architectures import ARCHITECTURES, get_architecture


def _run(library, arch, seed, **metrics):
    base = {m: 0.0 for m in peer_summary.METRICS}
    base.update(metrics)
    return {"library": library, "architecture": arch, "seed": seed, "samples": 1000,
            "wall_s": 1000 / base["samples_per_s"], **base}


def _runs():
    """Two architectures x two libraries x three seeds, with known values."""
    runs = []
    for seed, (f1_ours, f1_theirs) in enumerate([(0.50, 0.40), (0.52, 0.44), (0.54, 0.42)]):
        runs.append(_run("ours", "topk", seed, f1=f1_ours, mcc=0.8, samples_per_s=4000.0))
        runs.append(_run("saelens", "topk", seed, f1=f1_theirs, mcc=0.7, samples_per_s=1000.0))
        runs.append(_run("ours", "relu_l1", seed, f1=0.30, mcc=0.6 + 0.01 * seed,
                         samples_per_s=2000.0))
        runs.append(_run("saelens", "relu_l1", seed, f1=0.35, mcc=0.9,
                         samples_per_s=1000.0))
    return runs


def test_means_and_seed_spreads_per_architecture():
    table = peer_summary.per_architecture(_runs())
    f1 = table["topk"]["ours"]["f1"]
    assert f1["all"] == [0.50, 0.52, 0.54]
    assert f1["mean"] == pytest.approx(0.52)
    assert f1["spread"] == pytest.approx(0.02)  # sample std of 0.50, 0.52, 0.54
    assert table["relu_l1"]["saelens"]["seeds"] == [0, 1, 2]
    assert peer_summary.spread([0.3]) == 0.0


def test_no_worse_allows_the_larger_spread_and_no_more():
    theirs = {"mean": 0.50, "spread": 0.01}
    assert peer_summary.no_worse({"mean": 0.48, "spread": 0.02}, theirs)
    assert not peer_summary.no_worse({"mean": 0.47, "spread": 0.02}, theirs)
    assert peer_summary.no_worse({"mean": 0.60, "spread": 0.0}, theirs)


def test_summary_picks_the_best_architecture_and_divides_the_right_way():
    result = peer_summary.summarize(_runs(), {"ours_wall_s": 10.0, "saelens_wall_s": 25.0})
    s = result["summary"]
    assert (s["ours_best_f1"], s["ours_best_f1_architecture"]) == (pytest.approx(0.52), "topk")
    assert (s["saelens_best_f1"], s["saelens_best_f1_architecture"]) == (
        pytest.approx(0.42), "topk")
    assert (s["saelens_best_mcc"], s["saelens_best_mcc_architecture"]) == (0.9, "relu_l1")
    # Totals over all of a library's runs: ours 6 x 1,000 samples in 3 x 0.25 s (topk,
    # 4,000/s) and 3 x 0.5 s (relu_l1, 2,000/s).
    assert s["ours_samples_per_s"] == pytest.approx(6000 / (3 * 0.25 + 3 * 0.5))
    assert s["saelens_samples_per_s"] == pytest.approx(1000.0)
    assert s["throughput_ratio"] == pytest.approx(s["ours_samples_per_s"] / 1000.0)
    assert s["sweep_ratio"] == pytest.approx(2.5)
    t = result["targets"]
    assert t["best_f1_margin"]["value"] == pytest.approx(0.10) and t["best_f1_margin"]["met"]
    assert t["sweep_ratio"]["met"] and not t["throughput_ratio"]["met"]  # 2.67 < 3
    # relu_l1: ours' F1 0.30 against 0.35 (no spread) and MCC 0.61 against 0.9 miss.
    assert t["per_architecture_no_worse"]["topk"] == {"f1": True, "mcc": True}
    assert t["per_architecture_no_worse"]["relu_l1"] == {"f1": False, "mcc": False}
    assert t["per_architecture_no_worse_met"] is False


def test_summary_without_a_sweep_leaves_its_ratio_unset():
    result = peer_summary.summarize(_runs(), None)
    assert result["summary"]["sweep_ratio"] is None
    assert result["targets"]["sweep_ratio"]["met"] is False


def test_flat_scores_reads_both_yardsticks():
    scores = {"saelens": {"sae_l0": 6.5, "latent_f1_score": 0.4, "mcc": 0.7,
                          "explained_variance": 0.9, "uniqueness": 0.8, "dead_latents": 3},
              "recovery": {"recovered_fraction": 0.25, "mean_best_f1": 0.6}}
    flat = peer_summary.flat_scores(scores, samples=2048, wall_s=4.0)
    assert set(flat) == set(peer_summary.METRICS)
    assert (flat["l0"], flat["f1"], flat["dead_latents"]) == (6.5, 0.4, 3)
    assert flat["samples_per_s"] == 512.0


PLAN = peer_recipes.Plan(d_in=64, width=512, k=6, batch=1024, samples=2_048_000,
                         train_rows=1_000_000)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_our_settings_are_valid_and_match_the_plan(arch):
    cfg = peer_recipes.ours_config(arch, PLAN, seed=7)
    d_sae = cfg.sae_config(PLAN.d_in).hidden_dim
    assert d_sae == PLAN.width and cfg.seed == 7 and cfg.sae_batch_size == PLAN.batch
    # The demo's learning rate scaled to the input width: sqrt(512 / 64) times 1e-3.
    assert cfg.lr == pytest.approx(1e-3 * 8 ** 0.5)
    arch_ = get_architecture(arch)
    free_rows = arch_.folds_decoder_norms  # jumprelu: free-norm rows started at 0.1
    assert cfg.decoder_init_norm == (peer_recipes.FREE_ROWS_INIT_NORM if free_rows else 0)
    assert cfg.encoder_init_scale == (peer_recipes.PENALTY_ENCODER_INIT_SCALE
                                      if arch_.penalty_setting and not free_rows else 1.0)
    # The schedules are scaled to the run: resampling (where used) inside its steps.
    assert all(0 < s < PLAN.steps for s in cfg.resample_steps)
    penalty = get_architecture(arch).penalty_setting
    if penalty is not None:
        assert getattr(cfg, penalty) == peer_recipes.DEFAULT_RECIPES.penalties["ours"][penalty]


def test_same_lr_gives_saelens_our_learning_rate_and_recommended_its_own():
    ours, theirs = peer_recipes.RECIPES["same_lr"].lrs(64)
    assert ours == theirs == pytest.approx(peer_recipes.ours_lr(64))
    ours, theirs = peer_recipes.RECIPES["recommended"].lrs(64)
    assert theirs == peer_recipes.SAELENS_LR and ours > theirs
    assert peer_recipes.ours_lr(512) == peer_recipes.DEMO_LR


def test_the_plan_counts_whole_steps():
    assert PLAN.steps == 2000
    assert peer_recipes.Plan(64, 512, 6, 1024, 1500, 2000).steps == 1


def test_unknown_architectures_are_refused_by_name():
    with pytest.raises(ValueError, match=r"\['sparse'\]; choose from relu_l1"):
        peer_recipes.check_architectures(["topk", "sparse"])
    with pytest.raises(ValueError, match="none given"):
        peer_recipes.check_architectures([])


def test_penalty_overrides_reach_only_the_architecture_that_has_one():
    assert peer_recipes.penalty_of("ours", "topk", {"l1_coeff": 5.0}) == {}
    (setting, value), = peer_recipes.penalty_of("saelens", "relu_l1", {"l1_coeff": 5.0}).items()
    assert (setting, value) == ("l1_coeff", 5.0)
