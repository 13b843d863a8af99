"""A finished run folder that is moved and renamed works with every command: analyze, the
workbench, label, the SAELens export, complete and eval_completion. A run whose primary
model was given outside it (--primary_dir) and is gone says so, naming the path and flag."""

import json
import shutil

import pytest
from starlette.testclient import TestClient

from apps.analysis.pipeline import analyze
from apps.label import label_command
from apps.training.single_run import train_sae
from apps.workbench.server import create_app
from bridge.export_saelens import export_workdir, load_saelens_export
from primary import complete, eval_completion
from tests.apps.training.test_sae_train import CFG, PRIMARY, finished_demo_primary

ANALYSIS_BUILDS = 12  # the tiny run's whole test split


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run with its own demo primary (``primary_run/``), moved away from
    where it was trained (that folder is gone) and renamed."""
    base = tmp_path_factory.mktemp("finished")
    workdir = base / "trained" / "run"
    finished_demo_primary(workdir)
    train_sae(CFG, workdir, primary_flagfile_cfg=PRIMARY, analyze=False)
    (base / "moved").mkdir()
    moved = shutil.move(workdir, base / "moved" / "renamed")
    shutil.rmtree(base / "trained")
    return moved


def copied(finished, tmp_path):
    """A copy of the moved run in another folder, as on another machine."""
    return shutil.copytree(finished, tmp_path / "elsewhere" / "copied")


@pytest.mark.slow  # runs every command on a moved run
def test_a_moved_run_works_with_every_command(finished, tmp_path):
    run = copied(finished, tmp_path)

    # analyze
    summary = analyze(run, num_builds=ANALYSIS_BUILDS, explanations=False)
    assert summary["total"] > 0 and (run / "report" / "index.html").is_file()

    # the workbench: the list, a feature page, a completion
    with TestClient(create_app(run, num_builds=ANALYSIS_BUILDS),
                    raise_server_exceptions=False) as client:
        listing = client.get("/api/features?scope=all&limit=5")
        assert listing.status_code == 200, listing.text
        feature = listing.json()["features"][0]["id"]
        page = client.get(f"/api/features/{feature}")
        assert page.status_code == 200, page.text
        assert page.json()["page"]["id"] == feature
        assert client.get(f"/feature/{feature}").status_code == 200
        done = client.post("/api/complete", json={"weapon": "Splattershot",
                                                  "abilities": {"swim_speed_up": 10}})
        assert done.status_code == 200, done.text
        assert client.get("/").status_code == 200

    # label: set, then list
    assert "written to" in label_command(run, feature=3, name="Moved feature")
    assert "Moved feature" in label_command(run, list_labels=True)

    # SAELens export
    out = export_workdir(run, tmp_path / "export")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["metadata"]["primary_model_dir"] == str(run / "primary_run" / "model")
    assert load_saelens_export(out).hidden_dim == 32

    # complete and eval_completion with the run's primary
    primary_dir = str(run / "primary_run" / "model")
    text = complete.run(primary_dir, "Splattershot", '{"swim_speed_up": 10}', 2, False)
    assert "Swim Speed Up" in text or "swim_speed_up" in text
    result = eval_completion.run(primary_dir, str(tmp_path / "eval"), data_source=None,
                                 data_path="", num_builds=8, beam_size=1, seed=0)
    assert result["num_builds"] > 0 and "test split of the primary" in result["data"]


def test_an_old_run_json_with_absolute_paths_still_loads_after_a_move(finished, tmp_path):
    first = shutil.copytree(finished, tmp_path / "old" / "run")
    # As runs recorded it before paths were relative: absolute, inside the run.
    record = json.loads((first / "run.json").read_text())
    record["primary_model_dir"] = str(first / "primary_run" / "model")
    (first / "run.json").write_text(json.dumps(record))
    run = shutil.move(first, tmp_path / "new")
    with TestClient(create_app(run, num_builds=ANALYSIS_BUILDS),
                    raise_server_exceptions=False) as client:
        listing = client.get("/api/features?scope=all&limit=5")
        assert listing.status_code == 200, listing.text


def test_a_missing_outside_primary_is_a_clear_error(finished, tmp_path):
    outside = shutil.copytree(finished / "primary_run", tmp_path / "shared" / "primary_run")
    run = tmp_path / "run"
    train_sae(CFG, run, primary_dir=outside / "model", analyze=False)
    recorded = json.loads((run / "run.json").read_text())["primary_model_dir"]
    assert recorded == str(outside / "model")  # outside the run: absolute, as given
    shutil.rmtree(outside)
    for use in (lambda: analyze(run, explanations=False),
                lambda: create_app(run)):
        with pytest.raises(ValueError) as e:
            use()
        assert str(outside / "model") in str(e.value) and "--primary_dir" in str(e.value)
