"""SAELens export: the safetensors reproduce our SAE below the clip, cfg.json has v6's fields."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from bridge.export_saelens import export_workdir
from sae_jax.model import SAEConfig, create_sae, sae_from_params
from sae_jax.store import save_sae


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny SAE with non-unit atoms and non-zero biases, saved as an SAE workdir, exported."""
    config = SAEConfig(input_dim=8, expansion_factor=3)
    key = jax.random.key(7)
    params = create_sae(config, seed=1).params()
    params["W_dec"] = params["W_dec"] * jax.random.uniform(key, (24, 1), minval=0.5, maxval=3.0)
    params["b_enc"] = 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (24,))
    params["b_dec"] = 0.2 * jax.random.normal(jax.random.fold_in(key, 2), (8,))
    sae = sae_from_params(config, params, usage_ema=jnp.full((24,), 0.05))
    workdir = tmp_path_factory.mktemp("sae_run")
    save_sae(workdir / "sae", sae)
    (workdir / "run.json").write_text(json.dumps({"primary_model_dir": "/some/model"}))
    out = export_workdir(workdir, workdir / "saelens", hook_name="pooled", model_name="tiny")
    return sae, out


def test_tensors_reproduce_encode_and_decode_below_clip(exported):
    sae, out = exported
    t = load_file(str(out / "sae_weights.safetensors"))
    assert {k: v.shape for k, v in t.items()} == {
        "W_enc": (8, 24), "b_enc": (24,), "W_dec": (24, 8), "b_dec": (8,)}
    assert all(v.dtype == np.float32 for v in t.values())
    np.testing.assert_allclose(np.linalg.norm(t["W_dec"], axis=1), 1.0, rtol=1e-6)

    x = 0.3 * np.asarray(jax.random.normal(jax.random.key(3), (64, 8)))
    pre, post = sae.encode(jnp.asarray(x))
    assert 0 < float(post.max()) < sae.config.clip_max  # below the clip, and not all zero
    saelens_post = np.maximum((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 0.0)
    np.testing.assert_allclose(saelens_post, post, rtol=1e-5, atol=1e-6)
    saelens_recon = saelens_post @ t["W_dec"] + t["b_dec"]
    np.testing.assert_allclose(saelens_recon, sae.decode(post), rtol=1e-5, atol=1e-6)


def test_clip_is_where_the_two_differ(exported):
    sae, out = exported
    t = load_file(str(out / "sae_weights.safetensors"))
    # An input along a feature's encoder direction, scaled until that feature exceeds the clip.
    x = 50.0 * t["W_enc"][:, 0] / np.linalg.norm(t["W_enc"][:, 0]) + t["b_dec"]
    _, post = sae.encode(jnp.asarray(x[None]))
    saelens_post = np.maximum((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 0.0)
    assert float(post[0, 0]) == sae.config.clip_max
    assert saelens_post[0] > sae.config.clip_max


def test_cfg_json_fields(exported):
    sae, out = exported
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "standard"
    assert (cfg["d_in"], cfg["d_sae"]) == (8, 24)
    assert cfg["dtype"] == "float32" and cfg["device"] == "cpu"
    assert cfg["apply_b_dec_to_input"] is True
    assert cfg["normalize_activations"] == "none" and cfg["reshape_activations"] == "none"
    assert cfg["hook_name"] == "pooled" and cfg["model_name"] == "tiny"
    meta = cfg["metadata"]
    major = int(meta["sae_lens_version"].split(".")[0])
    assert major >= 6
    assert meta["hook_name"] == "pooled" and meta["model_name"] == "tiny"
    assert meta["activation_clip_max"] == sae.config.clip_max
    assert meta["primary_model_dir"] == "/some/model"


def test_workdir_without_sae_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sae/ directory"):
        export_workdir(tmp_path, tmp_path / "out")
