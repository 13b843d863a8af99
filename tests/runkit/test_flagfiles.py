"""Flagfiles read in before absl: nested ones found next to the file that names them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runkit.flags import config_from_flagfile, expand_flagfiles, read_flag_lines
from sae_jax.config import SAETrainConfig

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_nested_flagfile_is_found_next_to_its_includer_from_any_directory(tmp_path,
                                                                         monkeypatch):
    write(tmp_path / "cfg" / "base.flags", "# base", "--lr=0.1", "--k=4", "", "// note")
    top = write(tmp_path / "cfg" / "top.flags", "--flagfile=base.flags", "--k=8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = ["prog", "--seed=1", f"--flagfile={top}", "--lr=0.5"]
    # In place and in order, so the command line after the flagfile still wins.
    assert expand_flagfiles(argv) == ["prog", "--seed=1", "--lr=0.1", "--k=4", "--k=8",
                                      "--lr=0.5"]
    assert expand_flagfiles(["prog", "--flagfile", str(top)]) == ["prog", "--lr=0.1", "--k=4",
                                                                  "--k=8"]
    assert read_flag_lines(top) == {"lr": "0.1", "k": "8"}


def test_nested_flagfile_falls_back_to_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path / "shared" / "base.flags", "--lr=0.2")
    top = write(tmp_path / "cfg" / "top.flags", "--flagfile=shared/base.flags")
    monkeypatch.chdir(tmp_path)  # absl's rule: relative to where the command runs
    assert expand_flagfiles([f"--flagfile={top}"]) == ["--lr=0.2"]


def test_flagfile_errors_name_the_file(tmp_path):
    top = write(tmp_path / "top.flags", "--flagfile=missing.flags")
    with pytest.raises(FileNotFoundError, match=r"top.flags: --flagfile=missing.flags not found"):
        expand_flagfiles([f"--flagfile={top}"])
    with pytest.raises(FileNotFoundError, match=r"--flagfile=nope.flags: no such file"):
        expand_flagfiles(["--flagfile=nope.flags"])
    bad = write(tmp_path / "bad.flags", "lr=0.1")
    with pytest.raises(ValueError, match=r"bad.flags: line 'lr=0.1' is not a --flag=value"):
        expand_flagfiles([f"--flagfile={bad}"])
    write(tmp_path / "a.flags", "--flagfile=b.flags")
    write(tmp_path / "b.flags", "--flagfile=a.flags")
    with pytest.raises(ValueError, match="cycle"):
        expand_flagfiles([f"--flagfile={tmp_path / 'a.flags'}"])


def test_every_shipped_sae_flagfile_reads_into_valid_settings():
    shipped = sorted((REPO / "configs").glob("demo*.flags"))
    assert len(shipped) >= 6
    for path in shipped:
        config_from_flagfile(SAETrainConfig, path).validate()
    # demo_topk.flags is demo_relu_l1.flags with the architecture changed.
    topk = config_from_flagfile(SAETrainConfig, REPO / "configs" / "demo_topk.flags")
    relu = config_from_flagfile(SAETrainConfig, REPO / "configs" / "demo_relu_l1.flags")
    assert topk.architecture == "topk" and topk.lr == relu.lr
    assert topk.buffer_size == relu.buffer_size and topk != relu
    sweep = read_flag_lines(REPO / "configs" / "sweep_demo.flags")
    assert sweep["epochs"] == "8" and sweep["buffer_size"] == str(relu.buffer_size)


def test_the_every_architecture_sweep_is_the_demo_sweep_with_matryoshka_added():
    from apps.sweep import parse_members
    from sae_jax.architectures import ARCHITECTURES

    base = config_from_flagfile(SAETrainConfig, REPO / "configs" / "demo_relu_l1.flags")
    plain = read_flag_lines(REPO / "configs" / "sweep_demo.flags")
    every = read_flag_lines(REPO / "configs" / "sweep_demo_all.flags")
    assert {k: v for k, v in every.items() if k != "members"} == \
        {k: v for k, v in plain.items() if k != "members"}
    seeds = every["seeds"].split(",")
    members = parse_members(every["members"], seeds, base)
    demo = parse_members(plain["members"], seeds, base)
    assert [m for m in members if m.cfg.architecture != "matryoshka"] == demo
    assert {m.cfg.architecture for m in members} == set(ARCHITECTURES)
    assert len(members) == 30
    for m in members:
        m.cfg.validate()


def test_arguments_after_a_double_dash_are_left_alone(tmp_path):
    top = write(tmp_path / "top.flags", "--lr=0.1")
    argv = ["prog", f"--flagfile={top}", "--", "child", "--flagfile=absent.flags"]
    assert expand_flagfiles(argv) == ["prog", "--lr=0.1", "--", "child",
                                      "--flagfile=absent.flags"]


def _train_from(cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sae_jax.train", *flags], cwd=cwd, capture_output=True,
        text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"})


def test_training_command_reads_a_nested_flagfile_from_another_directory(tmp_path):
    # --k=0 is refused by validation, before any work: the message names the architecture,
    # which comes from demo_topk.flags, and the rest from the demo_relu_l1.flags it names.
    done = _train_from(tmp_path, f"--flagfile={REPO / 'configs' / 'demo_topk.flags'}",
                       "--k=0", f"--workdir={tmp_path / 'run'}")
    assert done.returncode == 1, done.stderr
    assert "--k must be >= 1 for --architecture=topk" in done.stderr
    missing = _train_from(tmp_path, "--flagfile=absent.flags", f"--workdir={tmp_path / 'run'}")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith(
        "error: --flagfile=absent.flags: no such file")
    assert not (tmp_path / "run").exists()
