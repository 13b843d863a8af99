"""SplatNLP checkpoint import: exact parity with the original's outputs, and clear errors.

Parity metric: max |ours - original| / max |original| over the whole array, < 1e-5.
"""

import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bridge.import_splatnlp import import_run
from bridge.splatnlp import (
    CheckpointMismatchError,
    abstract_primary,
    convert_primary_state,
    convert_sae_state,
    load_splatnlp,
)
from bridge.steering import HookMode, hooked_forward
from bridge.torch_pickle import load_state_dict
from primary.model import PrimaryConfig, count_params
from primary.model_dir import load_primary
from sae_jax.sae_dir import load_sae
from tests.fixture_paths import SPLATNLP_FIXTURE, rel_err
from tests.torch_zip_writer import write_state_dict

FIXTURE = SPLATNLP_FIXTURE
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def cases():
    return dict(np.load(FIXTURE / "cases.npz"))


@pytest.fixture(scope="module")
def run():
    return load_splatnlp(FIXTURE, FIXTURE / "sae.pth")


def batch(cases):
    return (jnp.asarray(cases["tokens"]), jnp.asarray(cases["weapons"]),
            jnp.asarray(cases["key_padding_mask"]))


@pytest.fixture(scope="module")
def ours(run, cases):
    """Every compared quantity, computed through our models and the steering hook (two jitted
    modes: each compile costs seconds on a small CPU)."""
    tokens, weapons, mask = batch(cases)
    recon = hooked_forward(run.primary, run.sae, tokens, weapons, mask, HookMode.RECON)
    feature = int(cases["edit_feature"])
    edit = hooked_forward(run.primary, run.sae, tokens, weapons, mask, HookMode.EDIT,
                          feature=feature, value=float(cases["edit_value"]))
    zero = hooked_forward(run.primary, run.sae, tokens, weapons, mask, HookMode.EDIT,
                          feature=feature, value=0.0)
    return {
        "pooled": edit.pooled,  # HookResult carries the unedited pooled vector
        "logits": run.primary.head(edit.pooled),
        "sae_pre": edit.sae_pre,  # ... and its SAE activations
        "sae_post": edit.sae_post,
        "sae_recon": run.sae(edit.pooled)[0],
        "recon_logits": recon.logits,
        "edit_logits": edit.logits,
        "zero_logits": zero.logits,
    }


QUANTITIES = ["pooled", "logits", "sae_pre", "sae_post", "sae_recon", "recon_logits",
              "edit_logits", "zero_logits"]


@pytest.mark.parametrize("name", QUANTITIES)
def test_parity_with_original(ours, cases, name):
    assert ours[name].shape == cases[name].shape
    assert rel_err(ours[name], cases[name]) < TOLERANCE, name


def test_edit_changes_the_logits(cases):
    # Guards the edit cases against being vacuous.
    assert rel_err(cases["edit_logits"], cases["recon_logits"]) > 1e-3


def test_run_metadata(run):
    assert run.config == PrimaryConfig.from_json(FIXTURE / "model_params.json")
    assert run.model_path.name == "model.pth"
    assert run.sae.config.input_dim == 32 and run.sae.hidden_dim == 128
    sd = load_state_dict(FIXTURE / "sae.pth")
    np.testing.assert_array_equal(np.asarray(run.sae.usage_ema[...]), sd["usage_ema"])
    np.testing.assert_array_equal(np.asarray(run.sae.W_dec[...]), sd["decoder.weight"].T)
    assert any("decoder.bias" in n for n in run.notes)


def copy_run_dir(tmp_path, *, model=True, sae=True) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    for name in ("model_params.json", "vocab.json", "weapon_vocab.json"):
        shutil.copy(FIXTURE / name, d / name)
    if model:
        shutil.copy(FIXTURE / "model.pth", d / "model.pth")
    if sae:
        shutil.copy(FIXTURE / "sae.pth", d / "sae.pth")
    return d


def test_two_pth_files_without_sae_flag_is_ambiguous():
    with pytest.raises(ValueError, match="several .pth files"):
        load_splatnlp(FIXTURE)


def test_ddp_prefix_is_stripped(tmp_path, run):
    d = copy_run_dir(tmp_path, model=False, sae=False)
    for name in ("model.pth", "sae.pth"):
        sd = load_state_dict(FIXTURE / name)
        write_state_dict(d / f"ddp_{name}", {f"module.{k}": v for k, v in sd.items()})
    prefixed = load_splatnlp(d, "ddp_sae.pth", model_file="ddp_model.pth")
    jax.tree.map(np.testing.assert_array_equal, nnx.state(prefixed.primary, nnx.Param),
                 nnx.state(run.primary, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, prefixed.sae.params(), run.sae.params())


def test_mixed_ddp_prefix_is_an_error():
    sd = load_state_dict(FIXTURE / "model.pth")
    sd = {(f"module.{k}" if i % 2 else k): v for i, (k, v) in enumerate(sd.items())}
    cfg = PrimaryConfig.from_json(FIXTURE / "model_params.json")
    with pytest.raises(CheckpointMismatchError, match="some keys carry the DDP prefix"):
        convert_primary_state(sd, cfg)


def test_model_not_matching_model_params_names_tensor_and_shapes(tmp_path):
    d = copy_run_dir(tmp_path)
    params = json.loads((d / "model_params.json").read_text())
    params["hidden_dim"] = 64
    (d / "model_params.json").write_text(json.dumps(params))
    with pytest.raises(CheckpointMismatchError) as err:
        load_splatnlp(d, "sae.pth")
    msg = str(err.value)
    assert "'input_proj.weight'" in msg
    assert "(32, 8)" in msg and "(64, 8)" in msg and "hidden_dim=64" in msg


@pytest.mark.parametrize("drop", ["transformer_layers.1.layer_norm2.bias",
                                  "output_layer.weight"])
def test_missing_tensor_is_named(drop):
    sd = load_state_dict(FIXTURE / "model.pth")
    del sd[drop]
    cfg = PrimaryConfig.from_json(FIXTURE / "model_params.json")
    with pytest.raises(CheckpointMismatchError, match=f"missing 1 tensor.*{drop}"):
        convert_primary_state(sd, cfg)


def test_extra_tensor_is_named():
    sd = load_state_dict(FIXTURE / "model.pth")
    sd["transformer_layers.2.feedforward.0.weight"] = np.zeros((128, 32), np.float32)
    cfg = PrimaryConfig.from_json(FIXTURE / "model_params.json")
    with pytest.raises(CheckpointMismatchError,
                       match=r"unexpected 1 tensor.*transformer_layers\.2\.feedforward"):
        convert_primary_state(sd, cfg)


def test_sae_input_dim_must_match_primary(tmp_path):
    d = copy_run_dir(tmp_path, sae=False)
    sd = load_state_dict(FIXTURE / "sae.pth")
    sd["encoder.weight"] = sd["encoder.weight"][:, :16]
    write_state_dict(d / "small_sae.pth", sd)
    with pytest.raises(CheckpointMismatchError, match="input dim 16 .* hidden_dim 32"):
        load_splatnlp(d, "small_sae.pth")


def test_sae_without_unused_decoder_bias_still_imports():
    sd = load_state_dict(FIXTURE / "sae.pth")
    del sd["decoder.bias"]
    config, params, usage_ema, notes = convert_sae_state(sd, expected_input_dim=32)
    assert (config.input_dim, config.hidden_dim) == (32, 128) and notes == []
    np.testing.assert_array_equal(params["W_enc"], sd["encoder.weight"].T)
    np.testing.assert_array_equal(params["b_dec"], sd["decoder_bias"])
    del sd["usage_ema"]
    with pytest.raises(CheckpointMismatchError, match="missing 1 tensor.*usage_ema"):
        convert_sae_state(sd)


def test_import_cli_round_trip(tmp_path, cases):
    out = tmp_path / "imported"
    _, info = import_run(str(FIXTURE), str(out), sae="sae.pth")
    saved = json.loads((out / "run.json").read_text())
    assert saved == info
    assert saved["primary_model_dir"] == "model"  # relative: the import can move
    assert saved["data_source"] == "synthetic" and saved["imported_from"] == str(FIXTURE)
    primary, vocab, weapon_vocab = load_primary(out / "model")
    sae = load_sae(out / "sae")
    assert vocab.pad_id == 139 and len(weapon_vocab) == 12
    tokens, weapons, mask = batch(cases)
    result = hooked_forward(primary, sae, tokens, weapons, mask, HookMode.RECON)
    assert rel_err(result.pooled, cases["pooled"]) < TOLERANCE
    assert rel_err(result.logits, cases["recon_logits"]) < TOLERANCE


# --- full size, shapes only ----------------------------------------------------------------

FULL = PrimaryConfig(vocab_size=140, weapon_vocab_size=130, embedding_dim=32, hidden_dim=512,
                     num_layers=3, num_heads=8, num_inducing_points=32, use_layer_norm=True)


def torch_layout(c: PrimaryConfig) -> dict[str, tuple[int, ...]]:
    """The original's state-dict keys and shapes (docs/original.md §3), written out independently
    of the importer's name map."""
    D, m = c.hidden_dim, c.num_inducing_points
    lin = lambda p, o, i: {f"{p}.weight": (o, i), f"{p}.bias": (o,)}
    ln = lambda p: {f"{p}.weight": (D,), f"{p}.bias": (D,)}

    def mab(p):
        out = {f"{p}.mha.in_proj_weight": (3 * D, D), f"{p}.mha.in_proj_bias": (3 * D,),
               **lin(f"{p}.mha.out_proj", D, D), **lin(f"{p}.feedforward.0", 4 * D, D),
               **lin(f"{p}.feedforward.2", D, 4 * D)}
        if c.use_layer_norm:
            out |= ln(f"{p}.layer_norm1") | ln(f"{p}.layer_norm2")
        return out

    sd = {"ability_embedding.weight": (c.vocab_size, c.embedding_dim),
          "weapon_embedding.weight": (c.weapon_vocab_size, c.embedding_dim),
          **lin("input_proj", D, c.embedding_dim)}
    for i in range(c.num_layers):
        t = f"transformer_layers.{i}"
        s = f"{t}.set_transformer"
        for e in ("enc_layer1", "enc_layer2"):
            sd |= {f"{s}.{e}.inducing_points": (m, D)} | mab(f"{s}.{e}.mab1")
            sd |= mab(f"{s}.{e}.mab2") | ln(f"{s}.{e}.layer_norm")
        sd |= {f"{s}.dec_layer1.seed_vectors": (m, D)} | mab(f"{s}.dec_layer1.mab")
        sd |= lin(f"{s}.dec_layer1.out_proj", D, D)
        sd |= mab(f"{s}.dec_layer2.mab") | mab(f"{s}.dec_layer3.mab")
        sd |= mab(f"{t}.cross_attention") | lin(f"{t}.feedforward.0", 4 * D, D)
        sd |= lin(f"{t}.feedforward.2", D, 4 * D)
        if c.use_layer_norm:
            sd |= ln(f"{t}.layer_norm1") | ln(f"{t}.layer_norm2")
    return sd | lin("output_layer", c.output_dim, D)


def test_full_size_name_map_shapes_only():
    layout = torch_layout(FULL)
    assert round(sum(math.prod(s) for s in layout.values()) / 1e6, 1) == 83.0
    shape_only = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in layout.items()}
    converted = jax.eval_shape(lambda sd: convert_primary_state(sd, FULL), shape_only)
    model = abstract_primary(FULL)  # nnx.eval_shape of create_model, cached
    want = nnx.state(model, nnx.Param).to_pure_dict()
    assert jax.tree.structure(converted) == jax.tree.structure(want)
    got_shapes = jax.tree.map(lambda x: x.shape, converted)
    assert got_shapes == jax.tree.map(lambda x: x.shape, want)
    assert count_params(model) == sum(math.prod(s) for s in layout.values())
    mha = converted["transformer_layers"][2]["cross_attention"]["mha"]["in_proj"]["kernel"]
    assert mha.shape == (512, 1536)  # (3D, D) transposed


def test_full_size_mismatch_names_model_params_value():
    layout = torch_layout(FULL)
    layout["transformer_layers.1.set_transformer.enc_layer2.inducing_points"] = (16, 512)
    shape_only = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in layout.items()}
    with pytest.raises(CheckpointMismatchError, match=r"num_inducing_points=32.*\(32, 512\)"):
        jax.eval_shape(lambda sd: convert_primary_state(sd, FULL), shape_only)


@pytest.mark.parametrize("use_layer_norm, embedding_dim", [(False, 16), (True, 32), (False, 32)])
def test_name_map_variants_shapes_only(use_layer_norm, embedding_dim):
    """No layer norms (their tensors absent), and no input_proj when embedding_dim == hidden_dim."""
    cfg = PrimaryConfig(vocab_size=20, weapon_vocab_size=5, embedding_dim=embedding_dim,
                        hidden_dim=32, num_layers=1, num_heads=4, num_inducing_points=4,
                        use_layer_norm=use_layer_norm)
    layout = torch_layout(cfg)
    if embedding_dim == cfg.hidden_dim:
        del layout["input_proj.weight"], layout["input_proj.bias"]
    assert any("layer_norm1" in k for k in layout) == use_layer_norm
    shape_only = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in layout.items()}
    converted = jax.eval_shape(lambda sd: convert_primary_state(sd, cfg), shape_only)
    want = nnx.state(abstract_primary(cfg), nnx.Param).to_pure_dict()
    assert jax.tree.map(lambda x: x.shape, converted) == jax.tree.map(lambda x: x.shape, want)
    assert ("input_proj" in converted) == (embedding_dim != cfg.hidden_dim)


def test_load_splatnlp_is_importable_from_the_package():
    import bridge
    from bridge.splatnlp import load_splatnlp as defined

    assert bridge.load_splatnlp is defined


def test_import_brings_splatnlp_labels_into_the_run_store(tmp_path):
    from runkit.run_dir import RunDir
    from sae_jax.feature_labels import LabelError, read_labels

    labels = {"5": {"name": "SCU stacker", "category": "tactical", "notes": "",
                    "timestamp": "2025-06-01T12:00:00", "source": "manual"},
              "127": {"name": "Edge", "category": "none", "notes": "", "timestamp": ""}}
    src = tmp_path / "feature_labels_ultra.json"
    src.write_text(json.dumps(labels))
    out = tmp_path / "imported"
    import_run(str(FIXTURE), str(out), sae="sae.pth", labels=str(src))
    stored = read_labels(RunDir(out).labels_path)
    assert sorted(stored) == [5, 127] and stored[5].extra == {"source": "manual"}
    assert json.loads((out / "feature_labels.json").read_text()) == labels
    # Checked against the SAE's 128 features before anything is written; --sae is needed.
    src.write_text(json.dumps({"128": labels["5"]}))
    with pytest.raises(LabelError, match="feature 128 is out of range"):
        import_run(str(FIXTURE), str(tmp_path / "never"), sae="sae.pth", labels=str(src))
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="--sae"):
        import_run(str(FIXTURE), str(tmp_path / "never"), labels=str(src))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        import_run(str(FIXTURE), str(tmp_path / "never"), sae="sae.pth", labels="nope.json")
