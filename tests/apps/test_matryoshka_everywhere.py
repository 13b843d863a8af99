"""Matryoshka, the architecture the sweep benchmark once refused, through every command on a
tiny primary: a single run and a sweep (each evaluated and analyzed), the SAELens export
and its reading back, and the workbench."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from starlette.testclient import TestClient

from apps.sweep import parse_members
from apps.training.single_run import train_sae
from apps.training.sweep_run import train_sweep
from apps.workbench.server import create_app
from bridge.export_saelens import export_workdir, load_saelens_export
from primary.model_dir import save_primary
from sae_jax.config import SAETrainConfig
from sae_jax.model import encode
from sae_jax.sae_dir import load_sae
from tests.tiny_setup import primary_for, tiny_world

# Slow (a matryoshka run and sweep through every command):
# run by `pytest -m slow`; .ci/run runs both passes.
pytestmark = pytest.mark.slow

# 60 builds, 16 -> 32 features in nested groups of 4, 4, 8, 16.
CFG = SAETrainConfig(
    architecture="matryoshka", k=3, matryoshka_groups=(4, 4, 8, 16), expansion_factor=2.0,
    lr=3e-3, buffer_size=128, min_buffer=64, primary_batch_size=16, sae_batch_size=32,
    sae_steps_per_primary_step=1, epochs=1, data_fraction=1.0, resample_steps=(),
    dead_after_rows=64, num_builds=60, seed=0, log_every=5, checkpoint_every=5,
    eval_builds=20)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("matryoshka")
    _, vocab, weapon_vocab = tiny_world(CFG.num_builds, CFG.seed)
    primary_dir = save_primary(root / "primary", primary_for(vocab, weapon_vocab), vocab,
                               weapon_vocab)
    single = train_sae(CFG, root / "single", primary_dir=primary_dir, analyze=True)
    members = parse_members('[{"grid": {"aux_coeff": [0.03, 0.1]}}]', ["0"], CFG)
    swept = train_sweep(CFG, members, root / "sweep", primary_dir=primary_dir, analyze=True)
    return root, single, members, swept


def _assert_a_matryoshka_run(workdir, metrics):
    assert metrics["architecture"] == "matryoshka" and np.isfinite(metrics["fve"])
    assert metrics["final_train"]["prefix_mse"] >= metrics["final_train"]["mse"]
    sae = load_sae(workdir / "sae")
    assert sae.config.architecture == "matryoshka" and float(sae.params()["threshold"]) > 0
    assert (workdir / "explanations.json").is_file()  # analyzed


def test_a_single_run_and_a_sweep_train_evaluate_and_analyze(runs):
    root, single, members, swept = runs
    _assert_a_matryoshka_run(root / "single", single)
    assert [m.name for m in members] == ["matryoshka.aux_coeff-0.03.seed-0",
                                         "matryoshka.aux_coeff-0.1.seed-0"]
    for m in members:
        assert swept[m.name]["trained_in_stack_of"] == 2
        _assert_a_matryoshka_run(root / "sweep" / "members" / m.name, swept[m.name])


def test_the_export_reads_back_as_the_same_sae(runs, tmp_path):
    root = runs[0]
    out = export_workdir(root / "single", tmp_path / "export")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"
    assert cfg["metadata"]["sae_jax_architecture"] == "matryoshka"
    sae, back = load_sae(root / "single" / "sae"), load_saelens_export(out)
    assert back.config == sae.config
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, sae.config.input_dim)),
                    jnp.float32)
    np.testing.assert_array_equal(encode(back.params(), x, back.config)[1],
                                  encode(sae.params(), x, sae.config)[1])


def test_the_workbench_serves_a_matryoshka_run(runs):
    root, _, members, _ = runs
    workdir = root / "sweep" / "members" / members[0].name
    with TestClient(create_app(workdir, num_builds=20)) as client:
        info = client.get("/api/run").json()
        assert info["architecture"] == "matryoshka" and info["num_features"] == 32
        listed = client.get("/api/features?scope=all&arch=matryoshka&limit=5").json()
        assert listed["total"] == 32
        feature = listed["features"][0]["id"]
        assert client.get(f"/api/features/{feature}").status_code == 200
        assert client.get(f"/feature/{feature}").status_code == 200
