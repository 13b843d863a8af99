"""Host memory of a run on your own activations: a 2 GB .npy is streamed, never loaded.

    python benchmarks/byo_memory.py [--rows=1048576] [--dim=512] [--small_rows=131072]
        [--scratch=/tmp/byo_memory] [--out=benchmarks/results/byo_memory.json]

Writes a float32 ``.npy`` of ``rows x dim`` random activations (1,048,576 x 512: 2 GiB)
into ``--scratch`` a chunk at a time, and a small one of ``small_rows`` rows, then runs
``python -m sae_jax.train --activations=FILE`` on each in its own process (CPU, JAX_PLATFORMS
=cpu): one epoch over every training row (the file's rows less the 20,000 held out), in
batches of 4,096 rows, one SAE step each, then the evaluation; no analysis. The activation
buffer holds ``--buffer_size`` rows (on the CPU backend it lives in host memory).

Measured per run: the process's peak resident memory (``VmHWM`` of ``/proc/self/status``,
read as the run exits: the kernel's high-water mark, file pages mapped in included; not
``ru_maxrss``, which for a vforked child also counts the parent's peak before the exec),
and, sampled every 0.1 s from ``/proc/PID/status``, the peaks of its anonymous
(``RssAnon``) and file-backed (``RssFile``) resident memory. Target: peak memory at most
1 GB beyond the buffer on the 2 GiB file; the small file's run shows what the same run
needs when the file is small. The scratch folder is deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.output import log, table, write_results  # noqa: E402
from benchmarks.timing import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_ROWS = flags.DEFINE_integer("rows", 1_048_576, "rows of the large file")
_SMALL = flags.DEFINE_integer("small_rows", 131_072, "rows of the small file")
_DIM = flags.DEFINE_integer("dim", 512, "values per row")
_BUFFER = flags.DEFINE_integer("buffer_size", 131_072, "activation buffer rows")
_SCRATCH = flags.DEFINE_string("scratch", "/tmp/byo_memory", "where the files and runs are "
                               "made (replaced, then deleted)")
_OUT = flags.DEFINE_string("out", str(ROOT / "benchmarks/results/byo_memory.json"),
                           "write the figures to this JSON file")
MiB = 2**20
CHUNK_ROWS = 65_536
# Runs the training command and, as it exits, prints its own peak resident memory.
WITH_PEAK = ("import atexit, runpy, sys\n"
             "def peak():\n"
             "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
             "    sys.stderr.write('peak ' + hwm[0])\n"
             "atexit.register(peak)\n"
             "sys.argv = ['sae_jax.train'] + sys.argv[1:]\n"
             "runpy.run_module('sae_jax.train', run_name='__main__', alter_sys=True)\n")


def write_npy(path: Path, rows: int, dim: int, seed: int = 0) -> None:
    """``rows x dim`` float32 random rows (a few dozen directions, scaled, plus noise),
    written a chunk at a time through a memory map of the new file."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(64, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - start)
        weights = rng.exponential(size=(n, 64)).astype(np.float32) * (rng.random((n, 64)) < 0.1)
        out[start:start + n] = weights @ atoms + 0.1 * rng.standard_normal((n, dim), np.float32)
    out.flush()
    del out


def _status_kib(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()
            if line.startswith(("RssAnon", "RssFile", "VmRSS"))}


def train_on(path: Path, workdir: Path) -> dict:
    """One ``sae_jax.train`` run on ``path`` in its own process: its peaks and seconds."""
    argv = [sys.executable, "-c", WITH_PEAK, f"--activations={path}",
            f"--workdir={workdir}", "--architecture=topk", "--k=32", "--resample_steps=",
            "--expansion_factor=4", "--lr=1e-3", f"--buffer_size={_BUFFER.value}",
            f"--min_buffer={_BUFFER.value // 2}", "--primary_batch_size=4096",
            "--sae_batch_size=1024", "--sae_steps_per_primary_step=1", "--epochs=1",
            "--data_fraction=1", "--eval_rows=20000", "--log_every=100",
            "--checkpoint_every=100000", "--noanalyze"]
    t0 = time.perf_counter()
    child = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu",
                                                   "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            for k, v in _status_kib(child.pid).items():
                peaks[k] = max(peaks[k], v)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = child.stdout.read()
    child.wait()
    done.set()
    sampler.join()
    if child.returncode:
        raise RuntimeError(f"sae_jax.train failed ({child.returncode}):\n{output[-3000:]}")
    peak = [line for line in output.splitlines() if line.startswith("peak VmHWM:")]
    return {"seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mib": round(int(peak[-1].split()[2]) / 1024, 1),  # kB
            "sampled_peak_anon_mib": round(peaks["RssAnon"] / 1024, 1),
            "sampled_peak_file_mib": round(peaks["RssFile"] / 1024, 1),
            "output_tail": output.strip().splitlines()[-4:]}


def main(argv) -> None:
    del argv
    t_start = time.perf_counter()
    scratch = Path(_SCRATCH.value)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    dim = _DIM.value
    buffer_mib = _BUFFER.value * dim * 4 / MiB
    results = {"machine": machine_info(), "dim": dim, "buffer_rows": _BUFFER.value,
               "buffer_mib": buffer_mib, "runs": {}}
    try:
        for name, rows in (("small", _SMALL.value), ("large", _ROWS.value)):
            path = scratch / f"{name}.npy"
            t0 = time.perf_counter()
            write_npy(path, rows, dim)
            log(f"wrote {path}: {rows:,} x {dim} float32, {path.stat().st_size / MiB:,.0f} MiB "
                f"in {time.perf_counter() - t0:.0f} s")
            run = train_on(path, scratch / f"run_{name}")
            run.update(rows=rows, file_mib=round(path.stat().st_size / MiB, 1),
                       beyond_buffer_mib=round(run["peak_rss_mib"] - buffer_mib, 1))
            results["runs"][name] = run
            log(f"{name}: peak RSS {run['peak_rss_mib']:,.0f} MiB ({run['seconds']} s)")
            path.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    large = results["runs"]["large"]
    results["target"] = "peak host memory <= 1 GB (953.7 MiB) beyond the buffer, 2 GiB file"
    results["met"] = bool(large["beyond_buffer_mib"] <= 1e9 / MiB)
    table(f"sae_jax.train --activations (buffer {buffer_mib:,.0f} MiB)",
          ["file", "file MiB", "peak RSS MiB", "beyond buffer", "peak anon", "peak file",
           "seconds"],
          [[name, r["file_mib"], r["peak_rss_mib"], r["beyond_buffer_mib"],
            r["sampled_peak_anon_mib"], r["sampled_peak_file_mib"], r["seconds"]]
           for name, r in results["runs"].items()])
    results["wall_s"] = time.perf_counter() - t_start
    write_results(results, _OUT.value)


if __name__ == "__main__":
    app.run(main)
