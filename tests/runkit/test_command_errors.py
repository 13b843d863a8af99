"""A command's bad command line is one ``error:`` line with a hint to --help, exit status
1: a missing required flag, an unknown flag (also from a flagfile), a malformed value."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*argv, cwd):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv, message", [
    (["sae_jax.train"], "error: --workdir is required"),  # checked in main
    (["apps.analyze"], "error: --workdir is required"),  # an absl required flag
    (["sae_jax.train", "--workdir=w", "--k=abc"], "error: flag --k=abc: invalid literal"),
    (["primary.complete", "--bogus=1"], "error: Unknown command line flag 'bogus'"),
    (["sae_jax.train", "--workdir=w", "--stop_after_steps=-5"],
     "error: flag --stop_after_steps=-5: -5 is not a positive integer"),
])
def test_bad_command_line_is_one_error_line(argv, message, tmp_path):
    done = run(*argv, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert lines[0].endswith("run the command with --help to list its flags")
    assert not (tmp_path / "w").exists()  # nothing was started


def test_unknown_flag_in_a_flagfile(tmp_path):
    (tmp_path / "bad.flags").write_text("--k=4\n--no_such_setting=1\n")
    done = run("sae_jax.train", f"--flagfile={tmp_path / 'bad.flags'}", "--workdir=w",
               cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: Unknown command line flag 'no_such_setting'; run the command with --help "
        "to list its flags"]
