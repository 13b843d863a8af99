"""curves.png is drawn for the run's architecture: the panels its plugin names, only where the
run logged the metric, and a dead count that says what it counts beside the evaluation's."""

import json

import pytest

from apps.runs.curves import curve_panels, plot_curves
from sae_jax.config import SAETrainConfig
from sae_jax.step import MEAN_METRICS

SETTINGS = {"relu_l1": {}, "jumprelu": {},
            "topk": {"resample_steps": (), "dead_after_rows": 262_144},
            "batchtopk": {"resample_steps": (), "dead_after_rows": 262_144},
            "matryoshka": {"resample_steps": (), "dead_after_rows": 262_144,
                           "matryoshka_groups": (4, 4, 8)}}
EXPECTED = {
    "relu_l1": ["loss", "mse", "l1", "kl", "l0", "dead_count"],
    "jumprelu": ["loss", "mse", "threshold_mean", "l0", "dead_count"],
    "topk": ["loss", "mse", "aux_loss", "l0", "dead_aux"],
    "batchtopk": ["loss", "mse", "aux_loss", "threshold", "l0", "dead_aux"],
    "matryoshka": ["loss", "mse", "aux_loss", "threshold", "prefix_mse", "l0", "dead_aux"],
}


def config(name: str) -> SAETrainConfig:
    return SAETrainConfig(architecture=name, **SETTINGS[name])


def logged_rows(cfg, steps=(100, 200, 300)) -> list[dict]:
    """Metrics lines with the keys a run of ``cfg`` logs (sae_jax.step's), as
    metrics.jsonl holds them: every architecture logs l1, kl and dead_count too."""
    keys = (*MEAN_METRICS, *cfg.arch.metric_names(cfg), "n_resampled", "dead_count")
    return [{**{k: 0.5 + i for k in keys}, "finite": True, "step": s}
            for i, s in enumerate(steps)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_are_the_architectures(name):
    cfg = config(name)
    assert [key for key, _ in curve_panels(cfg, logged_rows(cfg))] == EXPECTED[name]


def test_batchtopk_draws_no_usage_kl_and_counts_dead_as_auxk_does():
    """BatchTopK logs kl (always 0: it has no usage penalty) and dead_count (the usage EMA's
    test, which nothing of it acts on); neither is drawn. Its dead panel is AuxK's counter,
    titled with its window."""
    cfg = config("batchtopk")
    panels = dict(curve_panels(cfg, logged_rows(cfg)))
    assert "kl" not in panels and "l1" not in panels and "dead_count" not in panels
    assert panels["dead_aux"] == ("features not active (h > 0.01) on the last\n"
                                  "262,144 training rows (AuxK's test)")
    relu = config("relu_l1")
    assert dict(curve_panels(relu, logged_rows(relu)))["dead_count"] == (
        "features with firing-rate EMA < 1e-08\n(h > 0, decay 0.99; resampling's test)")


def test_a_metric_the_run_did_not_log_gets_no_panel():
    cfg = config("batchtopk")
    rows = [{k: v for k, v in r.items() if k != "threshold"} for r in logged_rows(cfg)]
    assert [k for k, _ in curve_panels(cfg, rows)] == ["loss", "mse", "aux_loss", "l0",
                                                       "dead_aux"]


@pytest.mark.parametrize("name", ["relu_l1", "batchtopk", "matryoshka"])
def test_the_figure_holds_the_panels(name, tmp_path):
    cfg = config(name)
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in logged_rows(cfg)) + '{"torn')
    titles = plot_curves(log, tmp_path / "curves.png", cfg, held_out_dead=(28, 12_000))
    assert titles == [title for _, title in curve_panels(cfg, logged_rows(cfg))]
    assert len(titles) == len(EXPECTED[name])
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
