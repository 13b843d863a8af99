"""``python -m apps.serve`` in a subprocess for the workbench benchmarks: started, timed until
it answers and until it is ready, asked, stopped."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The workbench on ``workdir`` (``args``: more ``apps.serve`` flags; ``env``: its
    environment, default this one's; ``root``: the checkout whose ``apps.serve`` runs, default
    this one); ``startup_s`` until ``/api/run`` answers, ``ready_s`` until ``/api/status``
    says ready (the warm-up done)."""

    def __init__(self, workdir: Path, *, args=(), env=None, root: Path = ROOT):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apps.serve", f"--workdir={workdir}",
             f"--port={self.port}", *args], cwd=root, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        while True:
            try:
                self.get("/api/run")
                break
            except OSError:
                if self.proc.poll() is not None or time.perf_counter() - t0 > 120:
                    raise RuntimeError(f"the server for {workdir} did not start") from None
                time.sleep(0.05)
        self.startup_s = time.perf_counter() - t0
        while self.get("/api/status")["status"] != "ready":  # feature requests answer 503
            if self.proc.poll() is not None or time.perf_counter() - t0 > 1800:
                raise RuntimeError(f"the server for {workdir} did not get ready") from None
            time.sleep(0.1)
        self.ready_s = time.perf_counter() - t0

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=600) as r:
            return json.loads(r.read())

    def post(self, path: str, body) -> dict:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    def timed(self, fn, *args) -> tuple[float, dict]:
        t0 = time.perf_counter()
        out = fn(*args)
        return time.perf_counter() - t0, out

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
