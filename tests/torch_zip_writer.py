"""Test helper: write PyTorch zip checkpoints without torch.

Emits ``data.pkl`` opcode by opcode (pickle protocol 2, storages as persistent
ids), the layout ``torch.save(state_dict)`` produces, so tests can build
prefixed, truncated, strided, big-endian or malicious checkpoints.
"""

from __future__ import annotations

import struct
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.bool_): "BoolStorage",
}


class _Pickle:
    """Minimal protocol-2 opcode emitter."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")

    def op(self, code: bytes):
        self.out += code

    def global_(self, module: str, name: str):
        self.out += b"c" + f"{module}\n{name}\n".encode()

    def str_(self, s: str):
        raw = s.encode()
        self.out += b"X" + struct.pack("<I", len(raw)) + raw

    def int_(self, v: int):
        v = int(v)
        if -(2**31) <= v < 2**31:
            self.out += b"J" + struct.pack("<i", v)
        else:  # LONG1: a little-endian two's-complement integer of any length
            raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(raw)]) + raw

    def int_tuple(self, values):
        self.op(b"(")
        for v in values:
            self.int_(v)
        self.op(b"t")

    def empty_ordered_dict(self):
        self.global_("collections", "OrderedDict")
        self.op(b")R")  # EMPTY_TUPLE, REDUCE

    def tensor(self, key: str, dtype: np.dtype, numel: int, offset: int, size, stride):
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.op(b"((")  # args tuple, then the persistent-id tuple
        self.str_("storage")
        self.global_("torch", STORAGE_NAMES[np.dtype(dtype)])
        self.str_(key)
        self.str_("cpu")
        self.int_(numel)
        self.op(b"tQ")  # TUPLE, BINPERSID
        self.int_(offset)
        self.int_tuple(size)
        self.int_tuple(stride)
        self.op(b"\x89")  # requires_grad False
        self.empty_ordered_dict()  # backward hooks
        self.op(b"tR")  # TUPLE, REDUCE


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(strides))


def write_state_dict(path, state: dict[str, np.ndarray], *, views=None, archive="archive",
                     byteorder="little", storage_pad: int = 0) -> Path:
    """Write ``state`` as ``torch.save`` would.

    ``views``: ``{name: (base_name, offset, size, stride)}`` extra tensors sharing the
    storage of ``state[base_name]`` (element offset and strides). ``byteorder`` sets
    both the byteorder record and the storage bytes. ``storage_pad`` adds trailing
    elements to every storage (tensors then cover only part of it).
    """
    views = views or {}
    p = _Pickle()
    p.empty_ordered_dict()
    p.op(b"(")  # MARK for SETITEMS
    storages: dict[str, bytes] = {}
    keys = {}
    for i, (name, arr) in enumerate(state.items()):
        arr = np.ascontiguousarray(arr)
        key = str(i)
        keys[name] = key
        flat = np.concatenate([arr.reshape(-1), np.zeros(storage_pad, arr.dtype)])
        if byteorder != sys.byteorder and flat.dtype.itemsize > 1:
            flat = flat.view(f"u{flat.dtype.itemsize}").byteswap()
        storages[key] = flat.tobytes()
        p.str_(name)
        p.tensor(key, arr.dtype, flat.size, 0, arr.shape, _contiguous_strides(arr.shape))
    for name, (base, offset, size, stride) in views.items():
        arr = np.asarray(state[base])
        p.str_(name)
        p.tensor(keys[base], arr.dtype, arr.size + storage_pad, offset, size, stride)
    p.op(b"u.")  # SETITEMS, STOP
    return write_archive(path, bytes(p.out), storages, archive=archive, byteorder=byteorder)


def write_archive(path, data_pkl: bytes, storages: dict[str, bytes] | None = None, *,
                  archive="archive", byteorder="little") -> Path:
    """A zip in torch's layout around an arbitrary ``data.pkl``."""
    path = Path(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        z.writestr(f"{archive}/byteorder", byteorder)
        for key, raw in (storages or {}).items():
            z.writestr(f"{archive}/data/{key}", raw)
        z.writestr(f"{archive}/version", "3\n")
    return path
