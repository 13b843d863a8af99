"""``python -m runkit.launch``: its command line, the children's environment, and stopping
every process when one fails (with a stand-in module: no JAX in the children)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runkit import launch

ROOT = Path(__file__).resolve().parents[2]


def test_options_module_and_its_flags():
    options, module, flags = launch.parse_args(
        ["--num_processes=3", "--devices_per_process", "2", "--cpu", "--",
         "sae_jax.train", "--workdir=w", "--num_processes=9", "--", "x"])
    assert (options.num_processes, options.devices_per_process, options.cpu) == (3, 2, True)
    assert options.port == 0
    assert module == "sae_jax.train"
    assert flags == ["--workdir=w", "--num_processes=9", "--", "x"]  # the module's, untouched


@pytest.mark.parametrize("argv, message", [
    (["--num_processes=2"], "no module given"),
    (["--num_processes=2", "--"], "no module given"),
    (["--", "sae_jax.train"], "required: --num_processes"),
    (["--num_processes=0", "--", "sae_jax.train"], "--num_processes must be at least 1, got 0"),
    (["--num_processes=two", "--", "m"], "invalid int value"),
    (["--num_processes=2", "--devices_per_process=0", "--", "m"], "at least 1"),
    (["--num_processes=2", "--workdir=x", "--", "m"], "unknown launcher arguments"),
    (["--num_processes=2", "--", "sae_jax/train.py"], "not a module name"),
    (["--num_processes=1", "--", "no_such_module_here"], "no module 'no_such_module_here'"),
    (["--num_processes=1", "--", "no_such.module"], "no module 'no_such.module'"),
])
def test_bad_usage_is_one_error_line(argv, message, capsys):
    assert launch.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err.splitlines()[0]


def test_children_get_the_run_environment():
    base = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_dump_to=/tmp/d",
            "JAX_PLATFORMS": "cuda", "HOME": "/h"}
    env = launch.child_env(base, index=1, count=2, port=1234, devices=3, cpu=False)
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:1234"
    assert (env["JAX_NUM_PROCESSES"], env["JAX_PROCESS_ID"]) == ("2", "1")
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=3"
    assert env["JAX_PLATFORMS"] == "cuda" and env["HOME"] == "/h"  # inherited unless --cpu
    assert launch.child_env(base, index=0, count=2, port=1, devices=1,
                            cpu=True)["JAX_PLATFORMS"] == "cpu"
    assert base["JAX_PLATFORMS"] == "cuda"  # the parent's copy is not changed


def test_free_port_is_bindable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", launch.free_port()))


PROBE = """
import os, sys, time
i = int(os.environ["JAX_PROCESS_ID"])
env = os.environ
print(f"process {i} of {env['JAX_NUM_PROCESSES']} at {env['JAX_COORDINATOR_ADDRESS']}")
print("progress 1", end="\\r", flush=True)
print("progress 2")
if i == 1 and os.environ.get("PROBE_FAIL"):
    time.sleep(0.5)
    print("failing", file=sys.stderr)
    sys.exit(3)
if os.environ.get("PROBE_SLEEP"):
    time.sleep(120)
"""


def run_launcher(tmp_path, **probe_env):
    (tmp_path / "launch_probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), **probe_env}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runkit.launch", "--num_processes=3",
                           "--port=1", "--", "launch_probe"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    return done, time.perf_counter() - t0


def test_a_failing_process_stops_the_others_and_sets_the_status(tmp_path):
    done, seconds = run_launcher(tmp_path, PROBE_FAIL="1", PROBE_SLEEP="1")
    assert done.returncode == 3, done.stderr
    assert seconds < 30  # processes 0 and 2 (sleeping 120 s) were stopped
    out = done.stdout.replace("\r", "\n").splitlines()
    for i in range(3):
        assert f"[{i}] process {i} of 3 at 127.0.0.1:1" in out
        assert f"[{i}] progress 1" in out and f"[{i}] progress 2" in out
    assert "[1] failing" in done.stderr.splitlines()
    assert "process 1 exited with status 3; stopping the others" in done.stderr


def test_status_is_zero_only_when_every_process_succeeds(tmp_path):
    assert run_launcher(tmp_path, PROBE_FAIL="1")[0].returncode == 3  # 0 and 2 succeeded
    assert run_launcher(tmp_path)[0].returncode == 0
