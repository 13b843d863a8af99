"""The workbench over a run trained on activation files: the list, a feature's page with its
top rows and bands by row index, labels, and a clear 404 for what needs a primary model."""

import json

import numpy as np
import pytest
from starlette.testclient import TestClient

from apps.workbench.server import create_app
from apps.workbench.warmup import warm_up
from runkit.run_dir import RunDir
from sae_jax.activation_files import open_activations
from sae_jax.config import SAETrainConfig
from sae_jax.model import SAEConfig, create_sae
from sae_jax.row_split import evaluation_split
from sae_jax.sae_dir import save_sae

ROWS, D = 3000, 6
CFG = SAETrainConfig(architecture="relu_l1", expansion_factor=4.0, seed=2, eval_rows=250)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A run directory as sae_jax.train leaves it on a .npy file (an untrained SAE: the pages
    show whatever it does)."""
    root = tmp_path_factory.mktemp("byo_run")
    x = np.random.default_rng(0).normal(size=(ROWS, D)).astype(np.float32)
    np.save(root / "acts.npy", x)
    workdir = root / "run"
    workdir.mkdir()
    cfg = SAETrainConfig(**{**CFG.__dict__, "activations": str(root / "acts.npy")})
    (workdir / "train_config.json").write_text(json.dumps(cfg.to_dict()))
    run = RunDir(workdir)
    run.write_run(run.new_activations_record(
        root / "acts.npy", seed=cfg.seed, num_rows=ROWS, d_in=D, eval_rows=250,
        activations_sha256=open_activations(root / "acts.npy").fingerprint()))
    save_sae(workdir / "sae", create_sae(SAEConfig(D, 4.0), seed=1))
    app = create_app(workdir)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app.state.workbench, x


def test_the_list_and_a_feature_page_speak_of_rows(served):
    client, bench, x = served
    info = client.get("/api/run").json()
    assert info["on_activations"] and info["missing"] == []
    listed = client.get("/api/features", params={"scope": "all", "sort": "frequency"}).json()
    assert listed["total"] == 4 * D
    top = listed["features"][0]
    assert top["tokens"] == [] and top["frequency"] > 0
    doc = client.get(f"/api/features/{top['id']}").json()
    page = doc["page"]
    held_out = evaluation_split(ROWS, CFG.eval_rows, CFG.seed).held_out
    sae = bench.run.models()[3]
    h = np.asarray(sae.encode(x[held_out])[1])[:, top["id"]]
    best = page["top_examples"][0]
    strongest = int(held_out[np.argmax(h)])
    assert best["table_row"] == strongest and best["where"] == f"row {strongest}"
    assert best["activation"] == pytest.approx(h.max(), rel=1e-5)
    assert page["bands"] and all(ex["table_row"] in set(held_out.tolist())
                                 for band in page["bands"] for ex in band["examples"])
    assert page["frequency"] == pytest.approx((h > 0.01).mean())
    html = client.get(f"/feature/{top['id']}").text
    assert "build lab" not in html and "rung curves" not in html
    assert f"row {best['table_row']}" in html and "analysis rows" in html
    listing = client.get("/").text
    assert "promotes" not in listing and "analysis rows" in listing


def test_what_needs_a_primary_model_is_not_found_saying_why(served):
    client, _, _ = served
    for response in (client.get("/lab"), client.get("/api/lab"),
                     client.post("/api/complete", json={"weapon": 1, "abilities": {}}),
                     client.get("/api/features/0/rung_curves")):
        assert response.status_code == 404
        assert "needs a primary model; this run trained on the activations in" in response.text


def test_labels_and_the_warm_up_work_without_a_primary(served):
    client, bench, _ = served
    saved = client.post("/api/features/3/label", json={"name": "rows with a big x0"})
    assert saved.status_code == 200
    assert client.get("/api/features/3").json()["label"]["name"] == "rows with a big x0"
    seconds = warm_up(bench.run, bench.table)
    assert set(seconds) <= {"feature table", "feature page"} and "feature table" in seconds
