"""The workbench's startup: it answers at once, says "loading" while it compiles and loads
(apps.workbench.warmup), and afterwards a request compiles nothing."""

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import numpy as np
import pytest
from jax import monitoring
from starlette.testclient import TestClient

import apps.workbench.server as server
from apps.workbench.lab import complete_labs, lab_request
from apps.workbench.server import create_app
from sae_jax.activity import live_mask
from tests.apps.workbench.workbench_fixture import ANALYSIS_BUILDS, make_run

GATED_GET = ["/api/features", "/api/features/3", "/api/features/3/rung_curves", "/api/lab"]
GATED_PAGES = ["/", "/feature/3", "/lab", "/lab?feature=3"]


def test_pages_and_api_say_loading_until_the_warm_up_is_done(tmp_path, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def held_warm_up(run, table, **_):
        started.set()
        assert release.wait(60)
        return {"held": 0.0}

    monkeypatch.setattr(server, "warm_up", held_warm_up)
    app = create_app(make_run(tmp_path / "run"), num_builds=ANALYSIS_BUILDS, warm=True)
    bench = app.state.workbench
    client = TestClient(app)
    assert started.wait(30)
    assert client.get("/api/status").json() == {"status": "loading"}
    assert client.get("/api/run").status_code == 200  # what needs no model answers
    for r in [client.get(u) for u in GATED_GET] + [
            client.post("/api/complete", json={"weapon": 40}),
            client.post("/api/features/3/label", json={"name": "x"})]:
        assert r.status_code == 503 and r.json() == {"status": "loading"}, r.url
        assert r.headers["retry-after"] == str(server.RETRY_SECONDS)
    for url in GATED_PAGES:
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 503 and "Loading the model" in r.text, url
        assert f'http-equiv="refresh" content="{server.RETRY_SECONDS}"' in r.text
    assert bench.run._models is None  # nothing ran behind the loading answers
    release.set()
    assert bench.ready.wait(30)
    assert client.get("/api/status").json() == {"status": "ready", "warm_seconds": {"held": 0.0}}
    assert client.get("/api/features").status_code == 200
    assert client.get("/").status_code == 200


def test_a_failed_warm_up_still_serves_and_says_why(tmp_path, monkeypatch):
    def broken(run, table, **_):
        raise RuntimeError("no memory left")

    monkeypatch.setattr(server, "warm_up", broken)
    app = create_app(make_run(tmp_path / "run"), num_builds=ANALYSIS_BUILDS, warm=True)
    assert app.state.workbench.ready.wait(30)
    client = TestClient(app)
    assert client.get("/api/status").json() == {"status": "ready",
                                                "error": "RuntimeError: no memory left"}
    assert client.get("/api/run").status_code == 200


def test_without_warming_the_server_is_ready_at_once(tmp_path):
    app = create_app(make_run(tmp_path / "run"))
    assert TestClient(app).get("/api/status").json() == {"status": "ready"}


_traced: list[str] = []
_listening = threading.Event()


def _on_event(name, _seconds, **_):
    if _listening.is_set() and name.endswith("jaxpr_trace_duration"):
        _traced.append(name)


@contextmanager
def _traces():
    """The programs jax traces (compiles, or reads from the compilation cache) inside."""
    _traced.clear()
    _listening.set()
    try:
        yield _traced
    finally:
        _listening.clear()


@pytest.mark.slow
def test_after_the_warm_up_requests_compile_nothing(tmp_path):
    monitoring.register_event_duration_secs_listener(_on_event)
    app = create_app(make_run(tmp_path / "run"), num_builds=ANALYSIS_BUILDS, warm=True)
    bench = app.state.workbench
    client = TestClient(app)
    assert bench.ready.wait(600) and "error" not in bench.status(), bench.status()
    assert set(bench.status()["warm_seconds"]) == {
        "feature table", "completion", "steered completion, 1 edit",
        "steered completion, 2 edits", "feature page", "rung curves",
        "batched completions, 2 builds", "batched completions, 4 builds",
        "batched completions, 8 builds", "batched completions, 16 builds"}
    run = bench.run
    freq = run.index()["frequency"]
    warmed = {p for p in run._pages}
    # features firing on enough builds for a full top-builds table, not the warmed one
    others = [int(f) for f in np.argsort(-freq, kind="stable")
              if live_mask(freq)[f] and freq[f] * ANALYSIS_BUILDS >= 8 and f not in warmed][:2]
    body = {"weapon": "Splattershot", "abilities": {"swim_speed_up": 10, "ink_saver_main": 6}}
    with _traces() as traced:
        assert client.post("/api/complete", json=body).status_code == 200
        for edits in ([{"feature": others[0], "value": 1.5}],
                      [{"feature": others[0], "value": 0}, {"feature": others[1], "value": 2}]):
            assert client.post("/api/complete", json=dict(body, edits=edits)).status_code == 200
        for f in others:
            assert client.get(f"/feature/{f}").status_code == 200
            assert client.get(f"/api/features/{f}/rung_curves").status_code == 200
        # batches of every size the batcher makes, each mixing plain builds (not cached)
        # with one and two edits
        for size in (2, 3, 5, 8):
            reqs = [lab_request({"weapon": "Splattershot",
                                 "abilities": {"run_speed_up": 3 * size + i},
                                 "edits": [{"feature": f, "value": 1.0}
                                           for f in others[:i % 3]]}, run)
                    for i in range(size)]
            complete_labs(run, reqs)
    assert traced == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


@pytest.mark.slow
def test_serve_answers_at_once_and_keeps_compiled_programs(tmp_path):
    """``python -m apps.serve``: /api/status answers while loading, and the compiled
    programs land in the persistent compilation cache (what a restart reads)."""
    workdir = make_run(tmp_path / "run")
    # The command's own cache folder (runkit.compile_cache) under a fresh XDG_CACHE_HOME; no
    # JAX_COMPILATION_CACHE_DIR, which jax would follow by itself.
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PLATFORMS="cpu")
    cache = tmp_path / "xdg" / "splat-sae-jax" / "jax"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "apps.serve", f"--workdir={workdir}",
                             f"--port={port}", f"--num_builds={ANALYSIS_BUILDS}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        seen, deadline = [], time.time() + 600
        while time.time() < deadline:
            status, text = _get(base + "/api/status")
            if status == 200:
                seen.append(text)
                if '"ready"' in text:
                    break
            time.sleep(0.5)
        assert seen and '"loading"' in seen[0], seen[:1]  # answered before it was ready
        assert '"ready"' in seen[-1] and '"error"' not in seen[-1], seen[-1]
        assert any(cache.rglob("*")), "nothing was written to the compilation cache"
        assert _get(base + "/api/features")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
