"""One process per workdir: a live holder is named and refused, a dead one's lock taken over."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runkit.lock import WorkdirBusy, WorkdirLock

ROOT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys, time
    from runkit.lock import WorkdirLock
    lock = WorkdirLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(60)
""")


def hold_in_subprocess(workdir):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_is_refused_naming_the_holder(tmp_path):
    proc = hold_in_subprocess(tmp_path)
    try:
        start = time.perf_counter()
        with pytest.raises(WorkdirBusy, match=rf"in use by another run \(process {proc.pid}\)"):
            WorkdirLock(tmp_path).acquire()
        assert time.perf_counter() - start < 1.0  # refused at once, no waiting
    finally:
        proc.kill()
        proc.wait()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path, capsys):
    proc = hold_in_subprocess(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with WorkdirLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert f"left by process {proc.pid}" in capsys.readouterr().out


def test_released_lock_can_be_taken_again(tmp_path):
    with WorkdirLock(tmp_path):
        pass
    with WorkdirLock(tmp_path):
        pass
