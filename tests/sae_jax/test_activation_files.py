"""Reading activations from .npy and .safetensors files and folders of shards: memory-mapped
rows, the checks that refuse unusable files, the non-finite scan, the fingerprint, and the
held-out split and epoch order of the rows."""

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from sae_jax.activation_files import ActivationFileError, open_activations
from sae_jax.row_split import PIECE_ROWS, EpochOrder, hold_out


def table(n=50, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_npy_rows_are_a_memory_map_and_read_back_exactly(tmp_path):
    x = table()
    np.save(tmp_path / "a.npy", x)
    files = open_activations(tmp_path / "a.npy")
    assert (files.num_rows, files.d_in) == x.shape
    rows = files.shards[0].rows
    assert not rows.flags.owndata and not rows.flags.writeable  # a view on the file's map
    np.testing.assert_array_equal(files.read([7, 8, 9, 3, 40]), x[[7, 8, 9, 3, 40]])
    np.testing.assert_array_equal(files.read_range(0, 50), x)


def test_a_folder_of_safetensors_and_npy_shards_is_one_table(tmp_path):
    x = table(70, 4).astype(np.float16)
    save_file({"activations": x[:30], "other": np.zeros(3, np.float32)},
              str(tmp_path / "s0.safetensors"))
    np.save(tmp_path / "s1.npy", x[30:55])
    save_file({"acts": x[55:]}, str(tmp_path / "s2.safetensors"))
    (tmp_path / "notes.txt").write_text("not a shard")
    files = open_activations(tmp_path)
    assert [s.path.name for s in files.shards] == ["s0.safetensors", "s1.npy", "s2.safetensors"]
    assert files.num_rows == 70 and files.dtype == np.float16
    rows = [28, 29, 30, 31, 54, 55, 69, 0]  # runs that cross the shards' ends
    np.testing.assert_array_equal(files.read(rows), x[rows].astype(np.float32))
    assert files.where(31) == "s1.npy row 1"


def test_bfloat16_safetensors_read_as_float32(tmp_path):
    x = table(10, 3).astype(ml_dtypes.bfloat16)
    header = json.dumps({"x": {"dtype": "BF16", "shape": [10, 3],
                               "data_offsets": [0, x.nbytes]}}).encode()
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", len(header)) + header
                                             + x.tobytes())
    files = open_activations(tmp_path / "b.safetensors")
    np.testing.assert_array_equal(files.read_range(0, 10), x.astype(np.float32))


@pytest.mark.parametrize("make, message", [
    (lambda p: np.save(p / "a.npy", np.zeros((5, 3), np.int64)), r"a\.npy: the array has "
     r"dtype int64; activations must be one of float16, bfloat16, float32, float64"),
    (lambda p: np.save(p / "a.npy", np.zeros((2, 5, 3), np.float32)),
     r"a\.npy: the array has shape \(2, 5, 3\); activations must be 2-d"),
    (lambda p: np.save(p / "a.npy", np.zeros((0, 3), np.float32)),
     r"a\.npy: the array has shape \(0, 3\): no activations"),
    (lambda p: (p / "a.npy").write_bytes(b""), r"a\.npy: the file is empty"),
    (lambda p: (p / "a.npy").write_bytes(np.lib.format.magic(1, 0) + b"junk"),
     r"a\.npy: not a readable \.npy file"),
    (lambda p: save_file({"a": np.zeros((4, 2), np.int32)}, str(p / "a.safetensors")),
     r"tensor 'a' has dtype I32"),
    (lambda p: save_file({"a": np.zeros(4, np.float32), "b": np.zeros(4, np.float32)},
                         str(p / "a.safetensors")), r"holds 2 tensors \(a, b\)"),
    (lambda p: (p / "a.safetensors").write_bytes(b"\xff" * 16), r"not a \.safetensors file"),
    (lambda p: p.joinpath("empty").mkdir(), r"empty: the folder holds no \.npy"),
])
def test_unusable_files_are_refused_naming_the_file(tmp_path, make, message):
    make(tmp_path)
    target = tmp_path / "empty" if (tmp_path / "empty").exists() else next(
        p for p in tmp_path.iterdir() if p.is_file())
    with pytest.raises(ActivationFileError, match=message):
        open_activations(target)


def test_truncated_file_and_disagreeing_shards_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", table(20, 4))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-8])
    with pytest.raises(ActivationFileError, match=r"cut\.npy: the file is truncated"):
        open_activations(tmp_path / "cut.npy")
    (tmp_path / "cut.npy").unlink()
    np.save(tmp_path / "b.npy", table(20, 5))
    with pytest.raises(ActivationFileError, match=r"b\.npy: rows of 5 values, but .*a\.npy "
                                                  r"has rows of 4"):
        open_activations(tmp_path)
    np.save(tmp_path / "b.npy", table(20, 4).astype(np.float64))
    with pytest.raises(ActivationFileError, match=r"b\.npy: dtype float64, but"):
        open_activations(tmp_path)


def test_the_first_non_finite_row_is_named(tmp_path, monkeypatch):
    import sae_jax.activation_files as activation_files

    monkeypatch.setattr(activation_files, "SCAN_BYTES", 64)  # several chunks per shard
    x = table(40, 4)
    np.save(tmp_path / "s0.npy", x[:20])
    bad = x[20:].copy()
    bad[13, 2], bad[17, 0] = np.inf, np.nan
    np.save(tmp_path / "s1.npy", bad)
    open_activations(tmp_path / "s0.npy").check_finite()  # the good shard alone passes
    with pytest.raises(ActivationFileError, match=r"s1\.npy: row 13 holds a non-finite value "
                                                  r"\(NaN or Inf\) \(row 33 of "):
        open_activations(tmp_path).check_finite()


def test_the_fingerprint_changes_with_the_data_not_with_a_reopen(tmp_path):
    x = table(1000, 4)
    np.save(tmp_path / "a.npy", x)
    first = open_activations(tmp_path / "a.npy").fingerprint()
    assert open_activations(tmp_path / "a.npy").fingerprint() == first
    x[999, 0] += 1  # the last row is always sampled
    np.save(tmp_path / "a.npy", x)
    assert open_activations(tmp_path / "a.npy").fingerprint() != first


def test_held_out_rows_are_seeded_pieces_and_training_rows_skip_them():
    n = 5 * PIECE_ROWS + 40
    split = hold_out(n, 300, seed=4)
    assert len(split.held_out) == 300 and split.num_train == n - 300
    assert np.array_equal(split.held_out, hold_out(n, 300, seed=4).held_out)
    assert not np.array_equal(split.held_out, hold_out(n, 300, seed=5).held_out)
    # Whole pieces and part of one: a few runs of consecutive rows, not 300 scattered rows.
    assert np.sum(np.diff(split.held_out) != 1) <= 2
    train = split.table_rows(np.arange(split.num_train))
    assert np.array_equal(np.sort(np.concatenate([train, split.held_out])), np.arange(n))


def test_an_epoch_order_permutes_the_full_pieces_and_keeps_the_short_one_last():
    n = 3 * PIECE_ROWS + 10
    order = EpochOrder(n, seed=1)
    rows = order.rows(0, 0, n)
    assert np.array_equal(np.sort(rows), np.arange(n))
    assert np.array_equal(rows[-10:], np.arange(3 * PIECE_ROWS, n))
    starts = rows[:3 * PIECE_ROWS:PIECE_ROWS]
    assert sorted(starts.tolist()) == [0, PIECE_ROWS, 2 * PIECE_ROWS]
    assert np.array_equal(order.rows(0, 100, 300), rows[100:300])  # any window of it
    epochs = [EpochOrder(n, seed=1).rows(e, 0, n)[:3 * PIECE_ROWS:PIECE_ROWS] for e in range(6)]
    assert len({tuple(e) for e in epochs}) > 1  # each epoch draws its own order
