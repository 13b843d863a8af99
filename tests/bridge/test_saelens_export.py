"""SAELens export: the safetensors reproduce our SAE below the clip, cfg.json has v6's fields."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from bridge.export_saelens import (
    ClipWarning,
    clipped_fraction,
    export_saelens,
    export_workdir,
    load_saelens_export,
)
from sae_jax.model import SAEConfig, create_sae, sae_from_params
from sae_jax.sae_dir import save_sae


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
    with pytest.warns(ClipWarning, match="was not measured"):  # no metrics.json, no inputs
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


# ---------------------------------------------------------------- every architecture

ARCH_CASES = {  # ours -> (SAELens architecture, extra tensors)
    "relu_l1": ("standard", set()),
    "topk": ("topk", set()),
    "batchtopk": ("jumprelu", {"threshold"}),
    "matryoshka": ("jumprelu", {"threshold"}),
    "jumprelu": ("jumprelu", {"threshold"}),
}


def _arch_sae(arch):
    d, f = 8, 24
    config = (SAEConfig(d, f / d) if arch == "relu_l1" else
              SAEConfig(d, f / d, 6.0, arch, 0 if arch == "jumprelu" else 4, clip=False))
    key = jax.random.key(11)
    params = create_sae(config, seed=2).params()
    params["b_enc"] = 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (f,))
    params["b_dec"] = 0.2 * jax.random.normal(jax.random.fold_in(key, 2), (d,))
    if arch == "jumprelu":
        params["log_threshold"] = jnp.log(jax.random.uniform(key, (f,), minval=0.05, maxval=0.5))
    if arch in ("batchtopk", "matryoshka"):
        params["threshold"] = jnp.asarray(0.21)
    return sae_from_params(config, params)


def _saelens_encode(cfg, t, x):
    """SAELens v6's encoders, written from its documented forward passes."""
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    if cfg["architecture"] == "standard":
        return np.maximum(pre, 0)
    if cfg["architecture"] == "jumprelu":
        return np.maximum(pre, 0) * (pre > t["threshold"])
    top = np.argsort(-pre, axis=1)[:, : cfg["k"]]
    out = np.zeros_like(pre)
    np.put_along_axis(out, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    return out


@pytest.mark.parametrize("arch", list(ARCH_CASES))
def test_export_and_reload_round_trip(arch, tmp_path):
    sae = _arch_sae(arch)
    x = 0.5 * np.asarray(jax.random.normal(jax.random.key(4), (32, 8)), np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export_saelens(sae, tmp_path / "out", hook_name="pooled", model_name="tiny",
                             activations=x)
    assert [w.category for w in caught] == ([ClipWarning] if arch == "relu_l1" else [])
    cfg = json.loads((out / "cfg.json").read_text())
    name, extra = ARCH_CASES[arch]
    assert cfg["architecture"] == name
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (8, 24, "float32")
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    assert cfg.get("k") == (4 if arch == "topk" else None)
    t = load_file(str(out / "sae_weights.safetensors"))
    assert set(t) == {"W_enc", "b_enc", "W_dec", "b_dec"} | extra
    if extra:
        assert t["threshold"].shape == (24,) and t["threshold"].dtype == np.float32
    want = np.asarray(sae.encode(jnp.asarray(x))[1])
    assert (want > 0).any() and (want == 0).any()
    np.testing.assert_allclose(_saelens_encode(cfg, t, x), want, rtol=1e-5, atol=1e-6)

    back = load_saelens_export(out)
    assert back.config == sae.config
    np.testing.assert_allclose(np.asarray(back.encode(jnp.asarray(x))[1]), want, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(back.decode(jnp.asarray(want)), sae.decode(jnp.asarray(want)),
                               rtol=1e-5, atol=1e-6)


def test_relu_l1_export_warns_with_the_measured_clip_share(tmp_path):
    sae = _arch_sae("relu_l1")
    x = 8.0 * np.asarray(jax.random.normal(jax.random.key(5), (64, 8)), np.float32)
    h = np.asarray(sae.encode(jnp.asarray(x))[1])
    share = float(((h > 0.01) & (h >= 6.0)).sum() / (h > 0.01).sum())
    assert 0 < share < 1
    assert clipped_fraction(sae, x) == pytest.approx(share)
    with pytest.warns(ClipWarning, match=f"{100 * share:.3g}% of active feature activations"):
        out = export_saelens(sae, tmp_path / "out", activations=x)
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["clipped_fraction"] == pytest.approx(share)
    with pytest.raises(ValueError, match=r"activations have shape \(64, 3\)"):
        clipped_fraction(sae, x[:, :3])


def test_non_finite_activations_are_refused_naming_the_first_bad_row(tmp_path):
    sae = _arch_sae("relu_l1")
    x = np.ones((10, 8), np.float32)
    x[3, 2], x[7] = np.inf, np.nan
    with pytest.raises(ValueError, match="non-finite .* in 2 of 10 rows, the first at row 3"):
        clipped_fraction(sae, x)
    with pytest.raises(ValueError, match="in 10 of 10 rows, the first at row 0"):
        export_saelens(sae, tmp_path / "out", activations=np.full((10, 8), np.nan, np.float32))
    assert not (tmp_path / "out").exists()


def test_an_sae_with_non_finite_weights_is_not_exported(tmp_path):
    sae = _arch_sae("topk")
    params = sae.params()
    params["b_dec"] = params["b_dec"].at[1].set(jnp.nan)
    broken = sae_from_params(sae.config, params, usage_ema=sae.usage_ema)
    with pytest.raises(ValueError, match="b_dec hold non-finite values"):
        export_saelens(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_workdir_export_takes_the_share_from_the_run_evaluation(tmp_path):
    save_sae(tmp_path / "sae", _arch_sae("relu_l1"))
    (tmp_path / "metrics.json").write_text(json.dumps({"clipped_fraction": 0.0123}))
    with pytest.warns(ClipWarning, match=r"1.23% of active feature activations on the run's"):
        out = export_workdir(tmp_path, tmp_path / "out")
    assert json.loads((out / "cfg.json").read_text())["metadata"]["clipped_fraction"] == 0.0123
