"""The run directory value: recorded paths, run.json checks, moved runs, optional records."""

import json
import re
import shutil

import pytest

from runkit.jsonio import write_json
from runkit.run_dir import RunDir, RunDirError, RunRecord


def primary_model(directory):
    """A directory that passes for a primary model directory (it holds config.json)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    return directory


def test_paths_live_under_the_root_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir("runs/a")
    assert run.root == tmp_path / "runs" / "a" and run.name == "a"
    assert run.run_path == run.root / "run.json"
    assert run.settings_path == run.root / "train_config.json"
    assert run.sae_config_path == run.root / "sae" / "config.json"
    assert run.labels_path == run.root / "feature_labels.json"
    assert run.report_features_path == run.root / "report" / "features.json"
    assert run / "anything" == run.root / "anything"
    assert RunDir(tmp_path / "runs" / "a") == run  # a value: equal roots, equal runs


def test_paths_inside_the_run_are_recorded_relative_others_absolute(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.record_path(tmp_path / "run" / "primary_run" / "model") == "primary_run/model"
    assert run.record_path(tmp_path / "elsewhere" / "model") == str(tmp_path / "elsewhere"
                                                                    / "model")
    member = RunDir(tmp_path / "sweep" / "members" / "m1")
    assert member.record_path(tmp_path / "sweep" / "primary_run" / "model",
                              within=tmp_path / "sweep") == "../../primary_run/model"


def test_record_round_trips_and_keeps_extra_keys(tmp_path):
    run = RunDir(tmp_path)
    model = primary_model(tmp_path / "primary_run" / "model")
    record = run.new_record(model, data_source="statink", data_path=str(tmp_path / "b.csv"),
                            num_builds=40, seed=3, imported_from="/x")
    run.write_run(record)
    saved = json.loads(run.run_path.read_text())
    assert saved == {"primary_model_dir": "primary_run/model", "data_source": "statink",
                     "data_path": "b.csv", "num_builds": 40, "seed": 3, "imported_from": "/x"}
    assert run.read_run() == record
    assert run.primary_dir() == model
    assert run.data_path() == str(tmp_path / "b.csv")


@pytest.mark.parametrize("content, needle", [
    ("{not json", "run.json: not valid JSON"),
    ("[1]", "expected a JSON object"),
    ("{}", "field 'primary_model_dir'"),
    ('{"primary_model_dir": 3}', "field 'primary_model_dir'"),
    ('{"primary_model_dir": "m", "seed": "0"}', "field 'seed' must be an integer"),
    ('{"primary_model_dir": "m", "num_builds": true}', "field 'num_builds'"),
    ('{"primary_model_dir": "m", "data_source": 1}', "field 'data_source' must be a string"),
])
def test_bad_run_json_names_the_file_and_field(tmp_path, content, needle):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(RunDirError, match=needle) as e:
        RunDir(tmp_path).read_run()
    assert str(tmp_path / "run.json") in str(e.value)


def test_a_folder_without_run_json_is_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="has no run.json: not an SAE run directory"):
        RunDir(tmp_path).read_run()
    with pytest.raises(RunDirError, match="is not a directory"):
        RunDir(tmp_path / "absent").read_run()


def test_a_moved_run_finds_its_primary(tmp_path):
    run = RunDir(tmp_path / "run")
    primary_model(run.primary_run_dir / "model")
    run.write_run(run.new_record(run.primary_run_dir / "model", data_source="synthetic",
                                 num_builds=10, seed=0))
    moved = RunDir(shutil.move(run.root, tmp_path / "renamed"))
    assert moved.primary_dir() == moved.primary_run_dir / "model"


def test_an_old_absolute_path_inside_a_moved_run_is_mapped(tmp_path):
    old = tmp_path / "old" / "run"
    primary_model(old / "primary_run" / "model")
    write_json(old / "run.json", {"primary_model_dir": str(old / "primary_run" / "model")})
    moved = RunDir(shutil.move(old, tmp_path / "new"))
    assert moved.primary_dir() == moved.root / "primary_run" / "model"
    # A sweep member's primary lies in its sweep: found there too.
    sweep = tmp_path / "sweep"
    primary_model(sweep / "primary_run" / "model")
    member = RunDir(sweep / "members" / "m1")
    member.root.mkdir(parents=True)
    write_json(member.run_path, {"primary_model_dir": "/gone/sweep/primary_run/model"})
    assert member.primary_dir() == sweep / "primary_run" / "model"


def test_a_missing_outside_primary_is_a_clear_error(tmp_path):
    outside = primary_model(tmp_path / "shared" / "model")
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_run(run.new_record(outside, data_source="synthetic", num_builds=10, seed=0))
    assert run.primary_dir() == outside
    shutil.rmtree(outside)
    with pytest.raises(RunDirError) as e:
        run.primary_dir()
    message = str(e.value)
    assert str(outside) in message and "does not exist" in message
    assert "--primary_dir" in message and "primary_model_dir" in message


def test_an_incomplete_run_says_so(tmp_path):
    run = RunDir(tmp_path)
    write_json(run.run_path, {"primary_model_dir": "primary_run/model"})
    with pytest.raises(RunDirError, match="incomplete"):
        run.primary_dir()


def test_sae_config_is_checked(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(RunDirError, match="no SAE in .*: run sae_jax.train first"):
        run.sae_config()
    run.sae_dir.mkdir()
    run.sae_config_path.write_text('{"input_dim": 8, "expansion_factor": 2.0}')
    assert run.sae_config() == {"input_dim": 8, "expansion_factor": 2.0}
    run.sae_config_path.write_text('{"input_dim": 0, "expansion_factor": 2.0}')
    with pytest.raises(RunDirError, match="field 'input_dim' must be a positive number"):
        run.sae_config()


def test_optional_records_are_empty_until_written(tmp_path):
    run = RunDir(tmp_path)
    assert run.metrics() == {} and run.explanations() is None and run.concepts() is None
    assert run.report_features() == {}
    write_json(run.metrics_path, {"fve": 0.5})
    assert run.metrics() == {"fve": 0.5}
    run.concepts_path.write_text("[]")
    with pytest.raises(RunDirError, match="concepts.json: expected a JSON object"):
        run.concepts()


def test_settings_follow_accepted_changes(tmp_path):
    run = RunDir(tmp_path)
    assert not run.has_settings()
    write_json(run.settings_path, {"lr": 0.1, "epochs": 2})
    run.changes_path.write_text(json.dumps({"changes": {"epochs": {"now": 3}}}) + "\n")
    assert run.settings() == {"lr": 0.1, "epochs": 3}


def test_record_from_json_keeps_unknown_keys():
    raw = {"primary_model_dir": "model", "splatnlp": {"model": "model.pth"}}
    record = RunRecord.from_json(raw, where="run.json")
    assert record.extra == {"splatnlp": {"model": "model.pth"}}
    assert record.to_json()["splatnlp"] == {"model": "model.pth"}


def test_a_run_on_activation_files_records_them_and_has_no_primary(tmp_path):
    data = tmp_path / "data" / "acts.npy"
    data.parent.mkdir()
    data.write_bytes(b"x")
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_run(run.new_activations_record(data, seed=4, activations_sha256="ab" * 32))
    record = run.read_run()
    assert record.on_activations and record.primary_model_dir == "" and record.seed == 4
    assert run.activations_path(record) == data
    with pytest.raises(RunDirError, match=r"trained on the activations in .*acts\.npy, not on "
                                          r"a primary model"):
        run.primary_dir(record)
    data.unlink()
    with pytest.raises(RunDirError, match=r"the activations .*acts\.npy do not exist; they were "
                                          r"given to sae_jax.train as --activations"):
        run.activations_path(record)


@pytest.mark.parametrize("content, needle", [
    ({"data_source": "activations"}, "field 'data_path' (the activations"),
    ({"data_source": "activations", "data_path": "/a.npy", "primary_model_dir": "m"},
     "a run on activations has no primary model, but 'primary_model_dir' is 'm'"),
])
def test_a_bad_record_of_a_run_on_activations_names_the_field(tmp_path, content, needle):
    (tmp_path / "run.json").write_text(json.dumps(content))
    with pytest.raises(RunDirError, match=re.escape(needle)):
        RunDir(tmp_path).read_run()
