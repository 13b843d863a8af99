"""Fetching SplatNLP's published files from a local HTTP server (with Range support), then
importing them: resume, skip, size checks, network errors, and the imported runs load."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bridge.download import DownloadError, download, part_path
from bridge.fetch_splatnlp import (
    IMPORTED,
    IMPORTED_ULTRA,
    download_artifacts,
    fetch_splatnlp,
    import_fetched,
)
from bridge.splatnlp import CheckpointMismatchError, convert_sae_state
from bridge.splatnlp_published import (
    Selection,
    apply_sae_config,
    consolidated_to_labels,
    ultra_model_params,
)
from bridge.torch_pickle import load_state_dict
from primary.model_dir import load_primary
from runkit.run_dir import RunDir
from sae_jax.feature_labels import read_labels
from sae_jax.model import sae_from_params
from sae_jax.sae_dir import load_sae
from tests.fixture_paths import SPLATNLP_FIXTURE

PREFIX = "/dataset_v2/"
NUM_FEATURES = 128  # the fixture SAE: 32 -> 128
SAE_CONFIG = {"input_dim": 32, "expansion_factor": 4.0, "l1_coefficient": 5e-6,
              "primary_hidden_dim": 32, "primary_num_layers": 2, "primary_num_heads": 4}
LABELS = {"3": {"name": "Swim swimmer", "category": "tactical", "notes": "fires on SSU",
                "timestamp": "2026-01-01T00:00:00+00:00"},
          "7": {"name": "Stamper", "category": "mechanical", "notes": "", "timestamp": ""}}
CONSOLIDATED = {"a": {"feature_id": 7, "display_name": "not used: 7 is labelled"},
                "b": {"feature_id": 9, "dashboard_name": "Ink economy",
                      "dashboard_category": "strategic", "dashboard_notes": "ISM + ISS"}}


def published_files() -> dict[str, bytes]:
    """The published names, made from the SplatNLP fixture (the Ultra model is the same
    checkpoint; the SAE is the fixture's)."""
    fx = SPLATNLP_FIXTURE
    vocab = json.loads((fx / "vocab.json").read_text())
    weapons = json.loads((fx / "weapon_vocab.json").read_text())
    rows = [(["swim_speed_up_3", "swim_speed_up_6", "ninja_squid"], "weapon_id_40"),
            (["ink_saver_main_3"], "weapon_id_11"), (["<NULL>"], "weapon_id_30")]
    data = "ability_tags\tweapon_id\n" + "".join(
        f"{json.dumps([vocab[t] for t in tokens])}\t{weapons[w]}\n" for tokens, w in rows)
    return {
        "model.pth": (fx / "model.pth").read_bytes(),
        "model_ultra.pth": (fx / "model.pth").read_bytes(),
        "model_params.json": (fx / "model_params.json").read_bytes(),
        "vocab.json": (fx / "vocab.json").read_bytes(),
        "weapon_vocab.json": (fx / "weapon_vocab.json").read_bytes(),
        "model_info.json": json.dumps({"name": "fixture", "trained_on": "dataset_v2"}).encode(),
        "sae_config_ultra.json": json.dumps(SAE_CONFIG).encode(),
        "sae_model_ultra.pth": (fx / "sae.pth").read_bytes(),
        "feature_labels_ultra.json": json.dumps(LABELS).encode(),
        "consolidated_ultra.json": json.dumps(CONSOLIDATED).encode(),
        "tokenized_data.csv": data.encode(),
    }


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.files`` under :data:`PREFIX`, honouring ``Range: bytes=N-``; records
    every request; ``server.announce`` overrides a file's Content-Length (a lying server)."""

    def do_GET(self):
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        body = self.server.files.get(self.path[len(PREFIX):]) if self.path.startswith(
            PREFIX) else None
        if body is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").removesuffix("-")) if rng else 0
        if start >= len(body) and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        length = self.server.announce.get(self.path[len(PREFIX):], len(body)) - start
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body[start:])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files, httpd.requests, httpd.announce = published_files(), [], {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def srv(server):
    """The server with its request log and lies cleared for one test."""
    server.requests.clear()
    server.announce.clear()
    server.files = published_files()
    return server


def base_url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ALL = Selection(labels=True, data=True)


@pytest.fixture(scope="module")
def fetched(server, tmp_path_factory):
    """One full fetch (every group) + import; ``(out dir, summary, requests)``."""
    server.requests.clear()
    out = tmp_path_factory.mktemp("fetch") / "splatnlp"
    summary = fetch_splatnlp(out, ALL, base_url=base_url(server), progress=False)
    return out, summary, list(server.requests)


def test_full_fetch_downloads_every_file_once(fetched, server):
    out, summary, requests = fetched
    names = [a.name for a in ALL.artifacts()]
    assert sorted(names) == sorted(server.files)  # every published file is selected
    assert sorted(p for p, _ in requests) == sorted(PREFIX + n for n in names)
    assert all(rng is None for _, rng in requests)
    for name in names:
        assert (out / name).read_bytes() == server.files[name], name
        assert not part_path(out / name).exists()
    assert {f.action for f in summary.fetched} == {"downloaded"}
    assert sum(f.received for f in summary.fetched) == sum(map(len, server.files.values()))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no scratch left


def test_imported_runs_load_with_the_checkpoint_values(fetched):
    out, summary, _ = fetched
    assert summary.imported == {IMPORTED: out / IMPORTED, IMPORTED_ULTRA: out / IMPORTED_ULTRA}
    state = load_state_dict(SPLATNLP_FIXTURE / "model.pth")
    model, vocab, weapon_vocab = load_primary(out / IMPORTED_ULTRA / "model")
    np.testing.assert_array_equal(np.asarray(model.output_layer.kernel[...]),
                                  state["output_layer.weight"].T)
    assert len(vocab) == 140 and len(weapon_vocab) == 12
    # The base import is the same checkpoint (loading a model costs seconds: one is enough).
    assert ((out / IMPORTED / "model" / "config.json").read_text()
            == (out / IMPORTED_ULTRA / "model" / "config.json").read_text())
    for name in (IMPORTED, IMPORTED_ULTRA):
        run = json.loads((out / name / "run.json").read_text())
        # Recorded relative to the import, so the fetched run directory can move.
        assert run["primary_model_dir"] == "model"
        assert (run["data_source"], run["data_path"]) == ("splatnlp_tsv",
                                                          "../tokenized_data.csv")
        assert RunDir(out / name).data_path() == str(out / "tokenized_data.csv")
    assert not (out / IMPORTED / "sae").exists()
    sae = load_sae(out / IMPORTED_ULTRA / "sae")
    assert (sae.config.input_dim, sae.config.hidden_dim) == (32, NUM_FEATURES)
    sae_state = load_state_dict(SPLATNLP_FIXTURE / "sae.pth")
    np.testing.assert_array_equal(np.asarray(sae.W_enc[...]), sae_state["encoder.weight"].T)
    run = json.loads((out / IMPORTED_ULTRA / "run.json").read_text())
    assert run["splatnlp"]["sae_config"] == SAE_CONFIG


def test_labels_imported_and_consolidated_fills_the_gaps(fetched):
    out, summary, _ = fetched
    labels = read_labels(RunDir(out / IMPORTED_ULTRA).labels_path, num_features=NUM_FEATURES)
    assert sorted(labels) == [3, 7, 9]
    assert labels[3].name == "Swim swimmer" and labels[3].category == "tactical"
    assert labels[7].name == "Stamper"  # feature_labels_ultra.json wins over consolidated
    assert (labels[9].name, labels[9].category, labels[9].notes) == ("Ink economy",
                                                                     "strategic", "ISM + ISS")
    text = "\n".join(summary.findings)
    assert "labels: 2 from feature_labels_ultra.json" in text
    assert "labels: 1 more from consolidated_ultra.json (1 already labelled)" in text
    assert "model_info.json: no Ultra hyperparameters" in text


def test_second_fetch_skips_complete_files_without_a_request(fetched, srv):
    out, _, _ = fetched
    got = download_artifacts(base_url(srv), out, ALL, progress=False)
    assert srv.requests == []
    assert [f.action for f in got] == ["skipped"] * len(got)
    assert [f.size for f in got] == [len(srv.files[f.path.name]) for f in got]


def test_part_file_is_resumed_with_a_range_request(srv, tmp_path):
    body = srv.files["model.pth"]
    part_path(tmp_path / "model.pth").write_bytes(body[:1000])
    got = download(base_url(srv) + "model.pth", tmp_path / "model.pth", progress=False)
    assert srv.requests == [(PREFIX + "model.pth", "bytes=1000-")]
    assert (got.action, got.received, got.size) == ("resumed", len(body) - 1000, len(body))
    assert (tmp_path / "model.pth").read_bytes() == body
    assert not part_path(tmp_path / "model.pth").exists()


def test_complete_part_file_is_finished_from_a_416(srv, tmp_path):
    body = srv.files["vocab.json"]
    part_path(tmp_path / "vocab.json").write_bytes(body)
    got = download(base_url(srv) + "vocab.json", tmp_path / "vocab.json", progress=False)
    assert (got.action, got.received) == ("resumed", 0)
    assert (tmp_path / "vocab.json").read_bytes() == body


def test_short_download_is_an_error_naming_the_file_and_can_resume(srv, tmp_path):
    body = srv.files["model.pth"]
    srv.announce["model.pth"] = len(body) + 100  # the connection closes 100 bytes early
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="short download") as e:
        download(base_url(srv) + "model.pth", dest, progress=False)
    message = str(e.value)
    assert str(part_path(dest)) in message
    assert f"{len(body):,} bytes on disk, the server announced {len(body) + 100:,}" in message
    assert "\n" not in message and not dest.exists()
    assert part_path(dest).stat().st_size == len(body)
    srv.announce.clear()  # the next run fetches only what is missing (here nothing)
    assert download(base_url(srv) + "model.pth", dest, progress=False).received == 0
    assert dest.read_bytes() == body


def test_over_long_part_file_is_an_error_naming_it(srv, tmp_path):
    body = srv.files["vocab.json"]
    part_path(tmp_path / "vocab.json").write_bytes(body + b"extra")
    with pytest.raises(DownloadError, match="over-long") as e:
        download(base_url(srv) + "vocab.json", tmp_path / "vocab.json", progress=False)
    assert str(part_path(tmp_path / "vocab.json")) in str(e.value)
    assert f"{len(body) + 5:,} bytes on disk" in str(e.value)
    assert not (tmp_path / "vocab.json").exists()


def test_404_is_an_error_naming_the_url_and_nothing_is_imported(srv, tmp_path):
    del srv.files["model_info.json"]
    with pytest.raises(DownloadError) as e:
        fetch_splatnlp(tmp_path / "out", Selection(), base_url=base_url(srv), progress=False)
    assert str(e.value) == f"GET {base_url(srv)}model_info.json: HTTP 404 Not Found"
    assert not (tmp_path / "out" / IMPORTED).exists()


def test_optional_file_missing_is_reported_not_fatal(srv, tmp_path):
    del srv.files["consolidated_ultra.json"]
    got = download_artifacts(base_url(srv), tmp_path, Selection(labels=True), progress=False)
    actions = {f.path.name: f.action for f in got}
    assert actions["consolidated_ultra.json"] == "missing"
    assert actions["feature_labels_ultra.json"] == "downloaded"
    assert not (tmp_path / "consolidated_ultra.json").exists()


def test_connection_refused_is_one_error_line_from_the_command(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/dataset_v2/"
    proc = subprocess.run([sys.executable, "-m", "bridge.fetch_splatnlp", f"--out={tmp_path}",
                           f"--base_url={url}"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: GET {url}model.pth: connection refused"], proc.stderr
    assert not (tmp_path / IMPORTED).exists() and not (tmp_path / "model.pth").exists()


def test_failed_import_leaves_no_output(fetched, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(fetched[0], out, ignore=shutil.ignore_patterns(IMPORTED, IMPORTED_ULTRA))
    (out / "sae_config_ultra.json").write_text(json.dumps({"expansion_factor": 8.0}))
    with pytest.raises(CheckpointMismatchError, match=r"expansion_factor 8.0 x input dim 32 "
                       r"= 256 features, but .*sae_model_ultra.pth encoder.weight shape "
                       r"\(128, 32\) holds 128"):
        import_fetched(out, Selection(sae=True))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == []


@pytest.fixture(scope="module")
def fixture_sae():
    config, params, ema, _ = convert_sae_state(load_state_dict(SPLATNLP_FIXTURE / "sae.pth"))
    return sae_from_params(config, params, ema)


@pytest.mark.parametrize("cfg, message", [
    ({"input_dim": 64}, "input_dim 64 does not match the SAE input dim 32"),
    ({"sae_input_dim": 16}, "sae_input_dim 16 does not match"),
    ({"sae_hidden_dim": 100}, "sae_hidden_dim 100 does not match the 128 features"),
    ({"expansion_factor": "4"}, "expansion_factor must be a positive number"),
])
def test_sae_config_mismatch_is_a_clear_error(fixture_sae, cfg, message):
    with pytest.raises(ValueError, match=message):
        apply_sae_config(fixture_sae, cfg, source="sae_config_ultra.json", checkpoint="x.pth")


def test_sae_config_clip_is_applied(fixture_sae):
    sae, findings = apply_sae_config(fixture_sae, {**SAE_CONFIG, "clip_max": 2.5},
                                     source="sae_config_ultra.json", checkpoint="x.pth")
    assert sae.config.clip_max == 2.5 and fixture_sae.config.clip_max == 6.0
    np.testing.assert_array_equal(np.asarray(sae.W_dec[...]), np.asarray(fixture_sae.W_dec[...]))
    assert "features clipped at 2.5" in findings[-1]
    assert findings[0] == ("sae_config_ultra.json: input_dim=32, primary_hidden_dim=32, "
                           "expansion_factor=4.0 agree with the checkpoint (32 -> 128 features)")


def run_dir_with(tmp_path, model_info) -> Path:
    shutil.copyfile(SPLATNLP_FIXTURE / "model_params.json", tmp_path / "model_params.json")
    (tmp_path / "model_info.json").write_text(json.dumps(model_info))
    return tmp_path


def test_ultra_params_come_from_model_info_when_it_describes_them(tmp_path):
    run_dir = run_dir_with(tmp_path, {"model_ultra": {"hyperparameters": {
        "hidden_dim": 64, "num_heads": 8, "learning_rate": 1e-4}}})
    params, source, findings = ultra_model_params(run_dir)
    assert (params["hidden_dim"], params["num_heads"], params["num_layers"]) == (64, 8, 2)
    assert "learning_rate" not in params
    assert source == "model_info.json 'model_ultra.hyperparameters' over model_params.json"
    assert "Ultra hyperparameters under 'model_ultra.hyperparameters': hidden_dim=64, " \
           "num_heads=8" in findings[0]


def test_ultra_params_default_to_model_params_and_say_so(tmp_path):
    run_dir = run_dir_with(tmp_path, {"hidden_dim": 32, "embedding_dim": 16})
    params, source, findings = ultra_model_params(run_dir, {"primary_hidden_dim": 32})
    assert params == json.loads((SPLATNLP_FIXTURE / "model_params.json").read_text())
    assert source.startswith("model_params.json")
    assert findings[1] == ("model_info.json: top-level settings differ from model_params.json "
                           "(model.pth): embedding_dim 16 vs 8")
    assert findings[2] == ("sae_config_ultra.json: the SAE's primary_* settings agree with "
                           "the Ultra parameters used")


def test_ultra_params_follow_the_sae_config_primary_settings(tmp_path):
    run_dir = run_dir_with(tmp_path, {})
    params, source, _ = ultra_model_params(run_dir, {"primary_num_heads": 8})
    assert params["num_heads"] == 8
    assert "sae_config_ultra.json's primary_* settings" in source and "num_heads=8" in source


def test_consolidated_labels_conversion():
    out = consolidated_to_labels({**CONSOLIDATED, "c": {"feature_id": 4, "display_name": " "},
                                  "12": {"dashboard_name": "x", "dashboard_category": "odd"}},
                                 source="c.json")
    assert sorted(out, key=int) == ["7", "9", "12"]
    assert out["12"]["category"] == "none" and out["12"]["dashboard_category"] == "odd"
    with pytest.raises(ValueError, match="c.json: entry 'z': feature id 'q' is not an integer"):
        consolidated_to_labels({"z": {"feature_id": "q", "display_name": "n"}}, source="c.json")


def test_ultra_import_uses_model_info_params_and_names_them_on_mismatch(fetched, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(fetched[0], out, ignore=shutil.ignore_patterns(IMPORTED, IMPORTED_ULTRA))
    # num_heads shows in no tensor shape: the import takes it from model_info.json.
    (out / "model_info.json").write_text(json.dumps({"ultra": {"num_heads": 2}}))
    summary = import_fetched(out, Selection(ultra=True))
    ultra = json.loads((out / IMPORTED_ULTRA / "model" / "config.json").read_text())
    base = json.loads((out / IMPORTED / "model" / "config.json").read_text())
    assert (ultra["num_heads"], base["num_heads"]) == (2, 4)
    assert any("Ultra model parameters from model_info.json 'ultra'" in f
               for f in summary.findings)
    (out / "model_info.json").write_text(json.dumps({"ultra": {"hidden_dim": 64}}))
    with pytest.raises(CheckpointMismatchError, match=r"implies \(64, 8\).*\(Ultra model "
                       r"parameters from model_info.json 'ultra' over model_params.json\)"):
        import_fetched(out, Selection(ultra=True))
    (out / "model_info.json").write_text(json.dumps({"ultra": {"num_layers": 2.5}}))
    with pytest.raises(ValueError, match="Ultra model parameters from model_info.json 'ultra' "
                       "over model_params.json: .*num_layers"):
        import_fetched(out, Selection(ultra=True))
    assert base == json.loads((out / IMPORTED / "model" / "config.json").read_text())
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as listener:  # connections queue in the backlog, nothing answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/dataset_v2/model.pth"
        with pytest.raises(DownloadError) as e:
            download(url, tmp_path / "model.pth", timeout=0.3, progress=False)
    assert str(e.value) == f"GET {url}: timed out"
