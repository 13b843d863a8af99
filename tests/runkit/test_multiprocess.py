"""Two processes for real: tiny primary and SAE runs under ``runkit.launch`` (2 processes of 1
CPU device, joined by jax.distributed over 127.0.0.1) against the same runs in one plain
process of 1 device.

All four runs go at once, as subprocesses with their own environment (this pytest process
forces 4 devices through XLA_FLAGS; the children get 1 each).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from primary.model_dir import load_primary
from runkit.checkpoints import Checkpoints, verify_manifest
from runkit.hosts import COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV
from sae_jax.sae_dir import load_sae

# Slow (four runs in six compiling processes):
# run by `pytest -m slow`; .ci/run runs both passes.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PRIMARY_MODEL = ROOT / "tests" / "fixtures" / "demo_small" / "primary"

# The two layouts compute the same thing and differ only in the order of float32 sums:
# with 2 devices each gradient, loss and evaluation sum is two partial sums all-reduced,
# with 1 device one sum. Metrics (losses, scores, logged training numbers) move by a few
# float32 ulps (measured: at most 3e-6 relative); a real fault (a wrong shard, a batch fed
# twice, a missed step) moves them by 1e-2 or more.
RTOL, ATOL = 1e-4, 1e-6
# Parameters: Adam divides each gradient by its own running size, so an element whose gradient
# is tiny takes a step of up to lr that depends on the gradient's last digits; a few elements
# then differ by more than RTOL of their own value (measured: 1.9e-4). Each array is compared
# against its largest entry instead (measured: at most 1e-4 of it, SAE 5e-7).
PARAM_TOL = 1e-3
# The attention key biases (the middle third of each in_proj bias) have a gradient of exactly
# zero in exact arithmetic (a softmax ignores a constant added to all scores of a query), so
# Adam moves them by rounding noise alone (measured 1.3e-4 apart, values about 0.05). They do
# not change the model's output (the validation and test losses agree to RTOL): bound only.
KEY_BIAS_ATOL = 1e-2

# 80 builds -> 56 train builds x 6 examples = 336 -> 21 steps of 16 (one epoch).
PRIMARY_FLAGS = [
    "--data_source=synthetic", "--num_builds=80", "--seed=0", "--embedding_dim=8",
    "--hidden_dim=16", "--num_layers=1", "--num_heads=2", "--num_inducing_points=4",
    "--batch_size=16", "--epochs=1", "--lr=3e-3", "--log_every=5", "--checkpoint_every=10",
]
PRIMARY_STEPS = 21
# The SAE on the demo_small primary (settings of tests/apps/training/test_sae_train.py, one
# epoch): 21 primary batches of 16, SAE training from batch 4 on (min_buffer 64): 18 SAE
# steps, resampling at 15.
SAE_FLAGS = [
    "--data_source=synthetic", "--num_builds=80", "--seed=0", "--expansion_factor=2",
    "--lr=3e-3", "--l1_coeff=1e-3", "--l1_warmup_steps=10", "--usage_warmup_steps=10",
    "--usage_period=100", "--buffer_size=128", "--min_buffer=64", "--primary_batch_size=16",
    "--sae_batch_size=32", "--sae_steps_per_primary_step=1", "--epochs=1",
    "--data_fraction=1.0", "--resample_steps=15", "--log_every=5", "--checkpoint_every=10",
    "--eval_builds=20",
]
SAE_STEPS = 18


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in (COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV)}
    # Compiling dominates runs this small: XLA's CPU backend optimisation level 0 saves a
    # quarter of it (both layouts get it, so the comparison is unaffected).
    env.update(JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1 "
                         "--xla_backend_optimization_level=0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return env


def one_process(module: str, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", module, *flags]


def two_processes(module: str, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", "runkit.launch", "--num_processes=2",
            "--devices_per_process=1", "--cpu", "--", module, *flags]


def run_together(commands: dict[str, list[str]], log_dir: Path) -> dict:
    """Start every command at once and wait for all: ``{name: output}``; fails showing the
    output of any that failed."""
    procs, t0 = {}, time.perf_counter()
    for name, cmd in commands.items():
        log = open(log_dir / f"{name}.log", "wb")
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=log,
                                        stderr=subprocess.STDOUT), log)
    for p, log in procs.values():
        try:
            p.wait(timeout=240)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
    failed = {n: p.returncode for n, (p, _) in procs.items() if p.returncode}
    if failed:
        tails = "\n".join(f"--- {n} (exit {c}):\n"
                          + (log_dir / f"{n}.log").read_text(errors="replace")[-3000:]
                          for n, c in failed.items())
        pytest.fail(f"runs failed: {failed}\n{tails}")
    print(f"{' and '.join(procs)}: {time.perf_counter() - t0:.1f}s")
    return {n: (log_dir / f"{n}.log").read_text(errors="replace") for n in procs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{"primary"|"sae": {1: workdir, 2: workdir}}`` and the runs' output; the two SAE runs
    explain the committed demo_small primary (so all four runs start at once); the
    two-process SAE run also analyzes."""
    base = tmp_path_factory.mktemp("multiprocess")
    dirs = {kind: {n: base / f"{kind}_{n}" for n in (1, 2)} for kind in ("primary", "sae")}
    out = run_together({
        "primary_1": one_process("primary.train",
                                 [f"--workdir={dirs['primary'][1]}", *PRIMARY_FLAGS]),
        "primary_2": two_processes("primary.train",
                                   [f"--workdir={dirs['primary'][2]}", *PRIMARY_FLAGS]),
        "sae_1": one_process("sae_jax.train", [f"--workdir={dirs['sae'][1]}", *SAE_FLAGS,
                                               f"--primary_dir={PRIMARY_MODEL}", "--noanalyze"]),
        "sae_2": two_processes("sae_jax.train", [f"--workdir={dirs['sae'][2]}", *SAE_FLAGS,
                                                 f"--primary_dir={PRIMARY_MODEL}", "--analyze"]),
    }, base)
    return dirs, out


def metrics(workdir: Path) -> dict:
    return json.loads((workdir / "metrics.json").read_text())


def log_rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_close(a, b, what):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=RTOL, atol=ATOL, err_msg=what)


def assert_params_close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, what
    scale = max(float(np.abs(b).max()), 1e-12)
    assert float(np.abs(a - b).max()) <= PARAM_TOL * scale, (
        f"{what}: {float(np.abs(a - b).max()):.3g} apart, more than {PARAM_TOL} x {scale:.3g}")


def assert_same_numbers(one: dict, two: dict, *, skip=("seconds",), where=""):
    """Same keys; equal non-float values; floats (nested too) within the tolerance."""
    assert sorted(one) == sorted(two), where
    for key in one:
        a, b = one[key], two[key]
        if key in skip:
            continue
        if isinstance(a, dict):
            assert_same_numbers(a, b, skip=skip, where=f"{where}{key}.")
        elif isinstance(a, float) or isinstance(b, float):
            assert_close(a, b, f"{where}{key}")
        else:
            assert a == b, f"{where}{key}: {a!r} vs {b!r}"


def test_the_launcher_ran_two_joined_processes(runs):
    dirs, out = runs
    for kind in ("primary", "sae"):
        assert metrics(dirs[kind][1])["num_processes"] == 1
        assert metrics(dirs[kind][1])["num_devices"] == 1
        assert metrics(dirs[kind][2])["num_processes"] == 2
        assert metrics(dirs[kind][2])["num_devices"] == 2
        lines = out[f"{kind}_2"].splitlines()
        assert any(line.startswith("[0] ") for line in lines)
        assert any(line.startswith("[1] ") for line in lines)


def test_commands_writing_to_a_file_print_plain_progress_lines(runs):
    """The runs' output goes to log files: progress as plain lines, never a bar's
    carriage-return redraws, and only from the writing process."""
    dirs, out = runs
    done = {"primary": f"primary training: done, {PRIMARY_STEPS}/{PRIMARY_STEPS} step",
            "sae": "SAE run: done, 21/21 batch"}
    for name, text in out.items():
        # The file as written (the output read as text has its \r turned into \n).
        assert b"\r" not in (dirs["sae"][1].parent / f"{name}.log").read_bytes(), name
        kind, processes = name.split("_")
        shown = [line for line in text.splitlines() if done[kind] in line]
        assert len(shown) == 1, (name, shown)
        assert processes == "1" or shown[0].startswith("[0] ")


def test_primary_two_processes_match_one(runs):
    dirs, _ = runs
    one, two = metrics(dirs["primary"][1]), metrics(dirs["primary"][2])
    assert one["steps"] == two["steps"] == PRIMARY_STEPS
    assert_same_numbers(one, two, skip=("seconds", "num_devices", "num_processes"))
    p1, p2 = (nnx.state(load_primary(d / "model")[0], nnx.Param).to_pure_dict()
              for d in (dirs["primary"][1], dirs["primary"][2]))
    leaves = jax.tree_util.tree_leaves_with_path(p1)
    assert len(leaves) == len(jax.tree.leaves(p2))
    for (path, a), b in zip(leaves, jax.tree.leaves(p2)):
        name = f"primary parameter {jax.tree_util.keystr(path)}"
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if name.endswith("['in_proj']['bias']"):
            q, k, v = np.split(a, 3)
            q2, k2, v2 = np.split(b, 3)
            assert_params_close(np.concatenate([q, v]), np.concatenate([q2, v2]), name)
            assert np.abs(k - k2).max() <= KEY_BIAS_ATOL, f"{name} (key part)"
        else:
            assert_params_close(a, b, name)


def test_sae_two_processes_match_one(runs):
    dirs, _ = runs
    one, two = metrics(dirs["sae"][1]), metrics(dirs["sae"][2])
    assert one["steps"] == two["steps"] == SAE_STEPS
    assert_same_numbers(one, two, skip=("seconds", "num_devices", "num_processes"))
    s1, s2 = load_sae(dirs["sae"][1] / "sae"), load_sae(dirs["sae"][2] / "sae")
    for name, a in s1.params().items():
        assert_params_close(a, s2.params()[name], f"SAE parameter {name}")
    assert_params_close(s1.usage_ema[...], s2.usage_ema[...], "SAE usage_ema")
    # Process 0 analyzed the run on its own (the report exists) while process 1 waited.
    assert (dirs["sae"][2] / "report" / "index.html").exists()


@pytest.mark.parametrize("kind", ["primary", "sae"])
def test_only_process_0_logged_and_checkpoints_verify(runs, kind):
    dirs, _ = runs
    one, two = log_rows(dirs[kind][1]), log_rows(dirs[kind][2])
    # One line per logged step (a second writer would double every line), as in one process.
    steps = [(r["step"], tuple(sorted(r))) for r in two]
    assert len(steps) == len(set(steps)), "metrics.jsonl has duplicated lines"
    assert len(one) == len(two)
    for a, b in zip(one, two):
        assert_same_numbers(a, b, skip=("seconds",), where=f"metrics.jsonl step {a['step']}: ")
    ckpts = Checkpoints(dirs[kind][2] / "checkpoints")
    try:
        assert ckpts.steps() and ckpts.steps()[-1] == (PRIMARY_STEPS if kind == "primary"
                                                       else SAE_STEPS)
        for step in ckpts.steps():
            verify_manifest(ckpts.directory / str(step))
    finally:
        ckpts.close()
