"""The torch-free .pth reader: fixture checkpoints, dtypes, strides, byte order, refusals."""

import collections
import json
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest

from bridge.torch_pickle import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_state_dict,
    load_torch_pickle,
)
from tests.fixture_paths import SPLATNLP_FIXTURE
from tests.torch_zip_writer import write_archive, write_state_dict

FIXTURE = SPLATNLP_FIXTURE


def test_fixture_model_keys_and_shapes():
    params = json.loads((FIXTURE / "model_params.json").read_text())
    sd = load_state_dict(FIXTURE / "model.pth")
    V, W = params["vocab_size"], params["weapon_vocab_size"]
    E, D, m = params["embedding_dim"], params["hidden_dim"], params["num_inducing_points"]
    assert sd["ability_embedding.weight"].shape == (V, E)
    assert sd["weapon_embedding.weight"].shape == (W, E)
    assert sd["input_proj.weight"].shape == (D, E)
    assert sd["output_layer.weight"].shape == (V, D)
    st = "transformer_layers.1.set_transformer"
    assert sd[f"{st}.enc_layer2.inducing_points"].shape == (m, D)
    assert sd[f"{st}.dec_layer1.mab.mha.in_proj_weight"].shape == (3 * D, D)
    assert sd["transformer_layers.0.feedforward.0.weight"].shape == (4 * D, D)
    assert all(v.dtype == np.float32 for v in sd.values())
    assert all(k.startswith(("ability_", "weapon_", "input_proj", "transformer_layers.",
                             "output_layer")) for k in sd)
    # padding_idx row of the ability embedding is zero in the original
    assert not sd["ability_embedding.weight"][params["pad_token_id"]].any()


def test_fixture_sae_keys_and_shapes():
    sd = load_state_dict(FIXTURE / "sae.pth")
    assert {k: v.shape for k, v in sd.items()} == {
        "decoder_bias": (32,), "usage_ema": (128,), "encoder.weight": (128, 32),
        "encoder.bias": (128,), "decoder.weight": (32, 128), "decoder.bias": (32,),
    }


def test_fixture_rewritten_by_test_writer_reads_back_identically(tmp_path):
    sd = load_state_dict(FIXTURE / "sae.pth")
    back = load_state_dict(write_state_dict(tmp_path / "copy.pth", sd))
    assert list(back) == list(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_dtypes_round_trip(tmp_path, byteorder):
    rng = np.random.default_rng(0)
    state = {
        "f32": rng.normal(size=(3, 5)).astype(np.float32),
        "f64": rng.normal(size=(4,)),
        "f16": rng.normal(size=(2, 2)).astype(np.float16),
        "bf16": rng.normal(size=(6,)).astype(ml_dtypes.bfloat16),
        "i64": rng.integers(-5, 5, size=(7,)),
        "i32": rng.integers(-5, 5, size=(2, 3)).astype(np.int32),
        "bool": rng.random(5) > 0.5,
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }
    back = load_state_dict(write_state_dict(tmp_path / "m.pth", state, byteorder=byteorder))
    for k, v in state.items():
        assert back[k].dtype == v.dtype, k
        assert back[k].dtype.isnative, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_big_endian_storage_bytes_are_swapped(tmp_path):
    state = {"f32": np.array([1.5, -2.0], np.float32),
             "bf16": np.array([1.5], ml_dtypes.bfloat16)}
    path = write_state_dict(tmp_path / "be.pth", state, byteorder="big")
    with zipfile.ZipFile(path) as z:  # the bytes on disk really are big-endian
        assert z.read("archive/data/0") == struct.pack(">2f", 1.5, -2.0)
        assert z.read("archive/data/1") == bytes([0x3F, 0xC0])
    back = load_state_dict(path)
    np.testing.assert_array_equal(back["f32"], state["f32"])
    assert float(back["bf16"][0]) == 1.5


def test_strided_views_share_storage(tmp_path):
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    views = {
        "transposed": ("base", 0, (4, 3), (1, 4)),
        "row1": ("base", 4, (4,), (1,)),
        "col2": ("base", 2, (3,), (4,)),
    }
    back = load_state_dict(write_state_dict(tmp_path / "v.pth", {"base": base}, views=views,
                                            storage_pad=3))
    np.testing.assert_array_equal(back["base"], base)
    np.testing.assert_array_equal(back["transposed"], base.T)
    np.testing.assert_array_equal(back["row1"], base[1])
    np.testing.assert_array_equal(back["col2"], base[:, 2])
    back["transposed"][0, 0] = 99.0  # copies, not views into one buffer
    assert back["base"][0, 0] == 0.0


def test_view_past_end_of_storage_is_an_error(tmp_path):
    base = np.arange(6, dtype=np.float32)
    path = write_state_dict(tmp_path / "bad.pth", {"base": base},
                            views={"over": ("base", 4, (3,), (1,))})
    with pytest.raises(CheckpointFormatError, match="reads element 6"):
        load_state_dict(path)


def test_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointFormatError, match="not a zip"):
        load_state_dict(path)


class _SystemCall:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvalCall:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (eval, (f"open({str(self.target)!r}, 'w').close()",))


@pytest.mark.parametrize("payload, refused", [
    (_SystemCall, f"{os.system.__module__}.system"),
    (_EvalCall, "eval"),
    (lambda t: collections.OrderedDict(weight=_SystemCall(t)), "system"),
])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload, refused):
    victim = tmp_path / "pwned_x"
    data = pickle.dumps(payload(victim), protocol=2)
    path = write_archive(tmp_path / "evil.pth", data)
    # The same bytes do run code through the standard unpickler (the test is meaningful).
    pickle.loads(data)
    assert victim.exists()
    victim.unlink()
    with pytest.raises(UnsafeCheckpointError, match=refused):
        load_torch_pickle(path)
    assert not victim.exists()


def test_non_state_dict_object_is_refused(tmp_path):
    data = pickle.dumps([1, 2, 3], protocol=2)
    with pytest.raises(CheckpointFormatError, match="not a state dict"):
        load_state_dict(write_archive(tmp_path / "list.pth", data))


def test_build_opcode_cannot_alter_the_readers_functions(tmp_path):
    import bridge.torch_pickle as tp

    defaults = tp._rebuild_tensor.__defaults__
    # GLOBAL rebuild fn; state (None, {"__defaults__": (1,)}); BUILD; STOP
    data = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__"
            b"(K\x01ts\x86b.")
    with pytest.raises(UnsafeCheckpointError, match="modify torch._utils._rebuild_tensor_v2"):
        load_torch_pickle(write_archive(tmp_path / "build.pth", data))
    assert tp._rebuild_tensor.__defaults__ == defaults
    marker = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x01\x00\x00\x00Osb."
    with pytest.raises(UnsafeCheckpointError, match="modify storage type"):
        load_torch_pickle(write_archive(tmp_path / "marker.pth", marker))


@pytest.mark.parametrize("size, stride, refused", [
    ((2**16, 2**13), (0, 0), "repeats its storage's 1 elements"),  # 2 GiB from 4 bytes
    ((2**30, 2**30), (0, 0), "repeats"),                # 4 EiB
    ((2, 3), (2**62, 1), "reads element"),              # a stride far past the storage
    ((3,), (-1,), "negative"),
    ((4,), (1,), "reads element 3 of a storage with 1"),  # a view past the end
])
def test_hostile_tensor_layouts_are_refused_before_any_copy(tmp_path, size, stride, refused):
    path = write_state_dict(tmp_path / "hostile.pth", {"base": np.ones(1, np.float32)},
                            views={"bad": ("base", 0, size, stride)})
    with pytest.raises(CheckpointFormatError, match=refused):
        load_state_dict(path)


def test_tensor_copies_count_against_the_caps(tmp_path):
    # Views of one 1024-element storage: each copy fits the cap alone, not all together.
    views = {f"v{i}": ("base", 0, (1024,), (1,)) for i in range(4)}
    path = write_state_dict(tmp_path / "many.pth", {"base": np.ones(1024, np.float32)},
                            views=views)
    assert set(load_torch_pickle(path, max_total_bytes=1 << 20)) == {"base", *views}
    with pytest.raises(CheckpointFormatError, match="more than 12,288 bytes in all"):
        load_torch_pickle(path, max_member_bytes=4096, max_total_bytes=12288)


def test_a_length_one_dimension_ignores_its_stride(tmp_path):
    base = np.arange(6, dtype=np.float32)
    path = write_state_dict(tmp_path / "one.pth", {"base": base},
                            views={"row": ("base", 2, (1, 3), (2**40, 1))})
    np.testing.assert_array_equal(load_state_dict(path)["row"], base[None, 2:5])


def test_a_truncated_checkpoint_is_called_truncated(tmp_path):
    path = write_state_dict(tmp_path / "whole.pth", {"w": np.arange(64, dtype=np.float32)})
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match="cut.pth is truncated or damaged"):
        load_state_dict(cut)
