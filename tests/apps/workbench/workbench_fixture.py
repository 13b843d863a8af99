"""A small SAE run directory for the workbench tests: the committed demo_small primary and
SAE (tests/fixtures/demo_small), a run.json naming them, and a hand-written explanations.json
for a few features (so the pages show explanations without running the analysis)."""

import json
import shutil
from pathlib import Path

from tests.fixture_paths import FIXTURES

DEMO_SMALL = FIXTURES / "demo_small"
EXPLAINED = {5: "weapon: Octobrush Nouveau", 9: "class: shooter"}  # F1 0.5, 0.6
# Read on partial builds, its rule broader than the feature (precision well below recall).
BROADER = 9
ANALYSIS_BUILDS = 400


def explanation(rule_text: str, f1: float) -> dict:
    return {"rule": [], "rule_text": rule_text, "sentence": f"Fires on builds with {rule_text}.",
            "precision": f1, "recall": f1, "f1": f1, "fit_f1": f1, "frequency": 0.1,
            "distribution": "full", "broader": False,
            "rule_frequency": 0.1, "lifts": [{"text": rule_text, "lift": 3.0}],
            "causal": None, "classes": [{"class": "shooter", "rate": 0.3, "support": 40}],
            "weapons": [{"weapon": "Splattershot", "rate": 0.5}],
            "rung_curves": {"swim_speed_up": {"ap": [0, 3, 6], "mean": [0.0, 0.2, 0.4],
                                              "n": [10, 10, 10]}}}


def make_run(directory: Path, *, explained: bool = True) -> Path:
    """``directory`` as an SAE run dir over demo_small (explanations for :data:`EXPLAINED`)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(DEMO_SMALL / "sae", directory / "sae")
    cfg = json.loads((DEMO_SMALL / "train_config.json").read_text())
    (directory / "run.json").write_text(json.dumps({
        "primary_model_dir": str(DEMO_SMALL / "primary"), "data_source": "synthetic",
        "data_path": "", "num_builds": 2000, "seed": cfg["seed"]}))
    if explained:
        features = {str(f): explanation(t, 0.5 + 0.1 * i)
                    for i, (f, t) in enumerate(EXPLAINED.items())}
        features[str(BROADER)].update(distribution="partial", precision=0.3, recall=0.9,
                                      broader=True, frequency_partial=0.0123)
        (directory / "explanations.json").write_text(json.dumps({
            "version": 1, "summary": {}, "features": features}))
    return directory


def scores_apart(answer: dict) -> tuple[dict, list[float]]:
    """A build-lab answer without its builds' scores, and the scores: a batched answer equals
    the one-at-a-time one but for the last bits of those (see apps.workbench.lab)."""
    scores = [answer[k]["score"] for k in ("build", "before") if k in answer]
    return {k: (dict(v, score=None) if k in ("build", "before") else v)
            for k, v in answer.items()}, scores
