"""The human label store: SplatNLP's format round trip, validation, the label command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apps.label import label_command
from runkit.run_dir import LABELS_FILE, RunDir
from sae_jax.feature_labels import (
    FeatureLabel,
    LabelError,
    import_labels,
    parse_labels,
    read_labels,
    remove_label,
    set_label,
    write_labels,
)
from sae_jax.model import SAEConfig

REPO = Path(__file__).resolve().parents[2]
NUM_FEATURES = 16  # input_dim 8 x expansion 2

# Shaped like SplatNLP's published feature_labels_ultra.json, with keys beyond the four.
SPLATNLP_LABELS = {
    "3": {"name": "SCU stacker", "category": "tactical", "notes": "16+ AP of SCU",
          "timestamp": "2025-06-01T12:00:00", "source": "manual", "confidence": 0.9},
    "12": {"name": "Ninja swim", "category": "mechanical", "notes": "",
           "timestamp": "2025-06-02T08:30:00", "tags": ["stealth", "swim"]},
    "7": {"name": "", "category": "none", "notes": "unclear", "timestamp": ""},
}


def sae_run(tmp_path) -> Path:
    """A directory with just what the store reads of an SAE run: sae/config.json."""
    (tmp_path / "sae").mkdir()
    SAEConfig(input_dim=8, expansion_factor=2.0).to_json(tmp_path / "sae" / "config.json")
    return tmp_path


def test_splatnlp_file_round_trips_with_its_extra_keys(tmp_path):
    src = tmp_path / "feature_labels_ultra.json"
    src.write_text(json.dumps(SPLATNLP_LABELS))
    labels = read_labels(src)
    assert sorted(labels) == [3, 7, 12]
    assert labels[3] == FeatureLabel("SCU stacker", "tactical", "16+ AP of SCU",
                                     "2025-06-01T12:00:00",
                                     {"source": "manual", "confidence": 0.9})
    assert labels[12].extra == {"tags": ["stealth", "swim"]}
    out = write_labels(tmp_path / "again.json", labels)
    assert json.loads(out.read_text()) == SPLATNLP_LABELS
    assert list(json.loads(out.read_text())) == ["3", "7", "12"]  # feature order
    assert read_labels(out) == labels


def test_absent_category_notes_and_timestamp_take_defaults():
    labels = parse_labels({"5": {"name": "x"}})
    assert labels[5] == FeatureLabel("x", "none", "", "")


@pytest.mark.parametrize("data,needle", [
    ({"3": {"name": "a", "category": "sneaky"}}, ["feature 3", "'sneaky'", "tactical"]),
    ({"x1": {"name": "a"}}, ["'x1'", "feature id"]),
    ({"-1": {"name": "a"}}, ["'-1'"]),
    ({"4": {"category": "none"}}, ["feature 4", "'name'", "missing"]),
    ({"4": {"name": "a", "notes": 5}}, ["feature 4", "'notes'", "string"]),
    ({"4": "just a name"}, ["feature 4", "expected an object"]),
    ({"99": {"name": "a"}}, ["feature 99", "out of range", "16 features"]),
    ([{"name": "a"}], ["keyed by feature id"]),
])
def test_bad_label_data_is_refused_naming_where(data, needle):
    with pytest.raises(LabelError) as e:
        parse_labels(data, source="f.json", num_features=NUM_FEATURES)
    assert "f.json" in str(e.value)
    for part in needle:
        assert part in str(e.value), (part, str(e.value))


def test_unreadable_file_names_it(tmp_path):
    bad = tmp_path / "labels.json"
    bad.write_text("{not json")
    with pytest.raises(LabelError, match="labels.json: not valid JSON"):
        read_labels(bad)
    assert read_labels(tmp_path / "absent.json") == {}
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_labels(tmp_path / "absent.json", missing_ok=False)


def test_set_relabel_remove_keep_other_fields(tmp_path):
    path = tmp_path / "labels.json"
    set_label(path, 3, "first", category="strategic", notes="n1", timestamp="t1")
    relabel = set_label(path, 3, "second", timestamp="t2")  # category and notes kept
    assert relabel == FeatureLabel("second", "strategic", "n1", "t2")
    set_label(path, 5, "other")
    stored = read_labels(path)
    assert set(stored) == {3, 5} and stored[5].category == "none" and stored[5].timestamp
    assert remove_label(path, 3).name == "second"
    assert set(read_labels(path)) == {5}
    with pytest.raises(LabelError, match="feature 3 has no label"):
        remove_label(path, 3)
    with pytest.raises(LabelError, match="non-empty name"):
        set_label(path, 4, "  ")
    with pytest.raises(LabelError, match="out of range"):
        set_label(path, NUM_FEATURES, "x", num_features=NUM_FEATURES)
    # What a person types: bounded, and no control characters (a file is read as it is).
    with pytest.raises(LabelError, match="label name is 100,000 characters, more than 200"):
        set_label(path, 4, "x" * 100_000)
    with pytest.raises(LabelError, match=r"label name holds the control character '\\x00'"):
        set_label(path, 4, "zero\x00day")
    with pytest.raises(LabelError, match="label notes is 5,001 characters"):
        set_label(path, 4, "ok", notes="n" * 5_001)
    assert set_label(path, 4, "ok", notes="two\nlines\tand a tab").notes == "two\nlines\tand a tab"
    assert set(read_labels(path)) == {4, 5}


def test_import_keeps_existing_labels_unless_told(tmp_path):
    path = tmp_path / "labels.json"
    src = tmp_path / "feature_labels_ultra.json"
    src.write_text(json.dumps(SPLATNLP_LABELS))
    set_label(path, 3, "mine", timestamp="t")
    assert import_labels(src, path, num_features=NUM_FEATURES) == {"imported": 2, "kept": 1}
    stored = read_labels(path)
    assert stored[3].name == "mine" and stored[12].extra == {"tags": ["stealth", "swim"]}
    assert import_labels(src, path, overwrite=True) == {"imported": 3, "kept": 0}
    assert read_labels(path)[3].name == "SCU stacker"


def test_label_command_modes(tmp_path):
    run = sae_run(tmp_path)
    out = label_command(run, feature=2, name="Swim stack", category="mechanical", notes="n")
    assert "feature 2" in out and (run / LABELS_FILE).exists()
    assert set(read_labels(RunDir(run).labels_path)) == {2}
    listing = label_command(run, list_labels=True)
    assert "Swim stack" in listing and "mechanical" in listing
    assert "removed" in label_command(run, feature=2, remove=True)
    assert label_command(run, list_labels=True) == "no labels"
    for kwargs, needle in [
        ({"feature": 2, "name": "a", "category": "bogus"}, "'bogus'"),
        ({"feature": 16, "name": "a"}, "feature 16 is out of range"),
        ({"feature": 2}, "exactly one of"),
        ({"feature": 2, "name": "a", "remove": True}, "--name and --remove"),
        ({"name": "a"}, "needs --feature"),
        ({"list_labels": True, "notes": "x"}, "go with --name"),
    ]:
        with pytest.raises(ValueError, match=needle):
            label_command(run, **kwargs)


def _cli(*args, cwd):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "apps.label", *args], cwd=cwd, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow  # starts the label command in several processes
def test_cli_sets_lists_removes_and_reports_errors_on_one_line(tmp_path):
    run = sae_run(tmp_path)
    w = f"--workdir={run}"
    r = _cli(w, "--feature=4", "--name=Bomb thrower", "--category=tactical", cwd=REPO)
    out, err = r.communicate(timeout=120)
    assert r.returncode == 0, err
    assert read_labels(RunDir(run).labels_path)[4].name == "Bomb thrower"
    # The rest run side by side (each starts a Python).
    procs = {
        "list": _cli(w, "--list", cwd=REPO),
        "bad category": _cli(w, "--feature=4", "--name=x", "--category=sneaky", cwd=REPO),
        "out of range": _cli(w, "--feature=16", "--name=x", cwd=REPO),
        "no mode": _cli(w, "--feature=4", cwd=REPO),
        "not a run": _cli(f"--workdir={tmp_path / 'sae'}", "--list", cwd=REPO),
    }
    results = {k: (p, *p.communicate(timeout=120)) for k, p in procs.items()}
    p, out, err = results.pop("list")
    assert p.returncode == 0 and "Bomb thrower" in out and "tactical" in out, err
    for name, (p, _out, err) in results.items():
        lines = err.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), \
            (name, err)
    assert "'sneaky'" in results["bad category"][2]
    assert "16" in results["out of range"][2]
    # The failed calls changed nothing.
    assert read_labels(RunDir(run).labels_path)[4].category == "tactical"
    r = _cli(w, "--feature=4", "--remove", cwd=REPO)
    assert r.wait(timeout=120) == 0
    assert read_labels(RunDir(run).labels_path) == {}
