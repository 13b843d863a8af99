"""Start a multi-process run on this machine: N processes joined by ``jax.distributed``.

    python -m runkit.launch --num_processes=2 -- sae_jax.train --flagfile=configs/demo.flags \\
        --workdir=runs/demo_2p

runs ``python -m <module> <flags>`` N times, process ``i`` with the environment a
cluster would give it (``JAX_COORDINATOR_ADDRESS=127.0.0.1:<port>``,
``JAX_NUM_PROCESSES=N``, ``JAX_PROCESS_ID=i``; see :mod:`runkit.hosts`), so a
multi-host run can be tried on one box: on CPU the processes exchange gradients
through JAX's CPU collectives (gloo over TCP). Every line a process prints is
prefixed with ``[i] ``. When one process fails the others are stopped (SIGINT, as
JAX takes SIGTERM for a preemption notice; SIGKILL after a grace period) and the
launcher exits with the first failing status; Ctrl-C (or SIGTERM) stops them all, a
second one at once.

Options (before ``--``): ``--num_processes`` (N, required), ``--devices_per_process``
(K forced host CPU devices per process, default 1: ``XLA_FLAGS`` gets
``--xla_force_host_platform_device_count=K``), ``--port`` (the coordinator's port,
default a free one), ``--cpu`` (set ``JAX_PLATFORMS=cpu`` for the processes; without
it they inherit the launcher's ``JAX_PLATFORMS``, and on a machine with GPUs each
process would see every GPU).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from runkit.hosts import COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV

GRACE_SECONDS = 10.0
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
USAGE = ("python -m runkit.launch --num_processes=N [--devices_per_process=K] [--port=P] "
         "[--cpu] -- MODULE [FLAGS...]")


class UsageError(Exception):
    """Bad command line: reported as one ``error:`` line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, str, list[str]]:
    """``(options, module, module_flags)`` from the launcher's arguments (after the
    program name)."""
    if "--" in argv:
        cut = argv.index("--")
        own, rest = argv[:cut], argv[cut + 1:]
    else:
        own, rest = argv, []
    parser = _Parser(prog="python -m runkit.launch", usage=USAGE, allow_abbrev=False,
                     description="Run MODULE in N local processes joined by jax.distributed.")
    parser.add_argument("--num_processes", type=int, required=True,
                        help="number of processes to start (N >= 1); required")
    parser.add_argument("--devices_per_process", type=int, default=1,
                        help="forced host CPU devices per process (default 1)")
    parser.add_argument("--port", type=int, default=0,
                        help="coordinator port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--cpu", action="store_true",
                        help="run the processes on CPU (JAX_PLATFORMS=cpu; default: they "
                        "inherit the launcher's JAX_PLATFORMS)")
    options, unknown = parser.parse_known_args(own)
    if unknown:
        raise UsageError(f"unknown launcher arguments {unknown}; the module and its flags go "
                         "after --")
    if options.num_processes < 1:
        raise UsageError(f"--num_processes must be at least 1, got {options.num_processes}")
    if options.devices_per_process < 1:
        raise UsageError("--devices_per_process must be at least 1, got "
                         f"{options.devices_per_process}")
    if not 0 <= options.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {options.port}")
    if not rest:
        raise UsageError("no module given: put the module to run and its flags after --, "
                         "e.g. -- sae_jax.train --flagfile=configs/demo.flags --workdir=DIR")
    module, flags = rest[0], rest[1:]
    if not _MODULE.match(module):
        raise UsageError(f"{module!r} is not a module name; give one like sae_jax.train "
                         "(what python -m takes)")
    if not _module_exists(module):
        raise UsageError(f"no module {module!r} to run (python -m {module} would fail); give "
                         "one like sae_jax.train")
    return options, module, flags


def _module_exists(module: str) -> bool:
    """Whether ``python -m module`` finds it (checked before any process starts)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_device_count(xla_flags: str, count: int) -> str:
    """``xla_flags`` with the forced host device count set to ``count`` (any earlier
    setting removed)."""
    kept = [f for f in xla_flags.split() if not f.startswith(_DEVICE_COUNT_FLAG)]
    return " ".join(kept + [f"{_DEVICE_COUNT_FLAG}={count}"])


def child_env(base: dict, *, index: int, count: int, port: int, devices: int,
              cpu: bool) -> dict:
    """The environment of process ``index`` of ``count``."""
    env = dict(base)
    env[COORDINATOR_ENV] = f"127.0.0.1:{port}"
    env[NUM_PROCESSES_ENV] = str(count)
    env[PROCESS_ID_ENV] = str(index)
    env["XLA_FLAGS"] = with_device_count(env.get("XLA_FLAGS", ""), devices)
    env["PYTHONUNBUFFERED"] = "1"
    if cpu:
        env["JAX_PLATFORMS"] = "cpu"
    return env


class _Relay:
    """Copies a child's output to ours, each line prefixed; whole lines only, so lines of
    different processes never mix (a carriage return also ends a line, for progress bars)."""

    _lock = threading.Lock()

    def __init__(self, source, sink, prefix: bytes):
        self.source, self.sink, self.prefix = source, sink, prefix
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _emit(self, line: bytes) -> None:
        with self._lock:
            try:
                self.sink.write(self.prefix + line)
                self.sink.flush()
            except (BrokenPipeError, ValueError):
                pass

    def _run(self) -> None:
        pending = b""
        fd = self.source.fileno()
        while chunk := os.read(fd, 65536):
            pending += chunk
            while (cut := _line_end(pending)) >= 0:
                self._emit(pending[:cut + 1])
                pending = pending[cut + 1:]
        if pending:
            self._emit(pending + b"\n")
        self.source.close()


def _line_end(data: bytes) -> int:
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(ends) if ends else -1


def _exit_status(returncode: int) -> int:
    """A child's status as a shell reports it (128 + signal for one killed by a signal)."""
    return 128 - returncode if returncode < 0 else returncode


def _stop(procs: list[subprocess.Popen], grace: float = GRACE_SECONDS) -> None:
    """Interrupt every running child (SIGINT, as Ctrl-C would: JAX takes SIGTERM for a
    preemption notice and keeps running), then SIGKILL those still running after ``grace``
    seconds, or at once on a second interrupt."""
    try:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    except KeyboardInterrupt:
        pass  # interrupted again: stop waiting
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()


def launch(num_processes: int, module: str, flags: list[str], *, devices_per_process: int = 1,
           port: int = 0, cpu: bool = False, env: dict | None = None) -> int:
    """Run ``python -m module flags`` in ``num_processes`` joined processes; returns the exit
    status (0, or that of the first process to fail)."""
    port = port or free_port()
    base = dict(os.environ if env is None else env)
    print(f"launching {num_processes} process(es) of {module} (coordinator 127.0.0.1:{port}, "
          f"{devices_per_process} host CPU device(s) each)", flush=True)
    procs, relays = [], []
    status = 0
    try:
        for i in range(num_processes):
            p = subprocess.Popen(
                [sys.executable, "-m", module, *flags], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=child_env(base, index=i, count=num_processes, port=port,
                              devices=devices_per_process, cpu=cpu))
            procs.append(p)
            prefix = f"[{i}] ".encode()
            relays += [_Relay(p.stdout, sys.stdout.buffer, prefix),
                       _Relay(p.stderr, sys.stderr.buffer, prefix)]
        running = set(range(num_processes))
        while running:
            for i in sorted(running):
                code = procs[i].poll()
                if code is None:
                    continue
                running.discard(i)
                if code != 0 and status == 0:
                    status = _exit_status(code)
                    print(f"process {i} exited with status {status}; stopping the others",
                          file=sys.stderr, flush=True)
                    _stop(procs)
            time.sleep(0.05)
    except KeyboardInterrupt:
        print("interrupted; stopping every process", file=sys.stderr, flush=True)
        _stop(procs)
        status = 130
    finally:
        _stop(procs)
        for r in relays:
            r.thread.join(timeout=5.0)
    return status


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options, module, flags = parse_args(argv)
    except UsageError as e:
        print(f"error: {e}\nusage: {USAGE}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    return launch(options.num_processes, module, flags,
                  devices_per_process=options.devices_per_process, port=options.port,
                  cpu=options.cpu)


if __name__ == "__main__":
    sys.exit(main())
