"""Read PyTorch's zip checkpoints (``torch.save``'s default format) without torch.

A ``.pth`` written by ``torch.save(state_dict)`` is a zip archive::

    <name>/data.pkl        pickle of the object; tensors refer to storages by persistent id
    <name>/data/<key>      raw bytes of storage <key>
    <name>/byteorder       "little" or "big" (absent in old files: little)
    <name>/version         format version

The pickle is read by :class:`RestrictedUnpickler`, which resolves only the
globals that rebuilding tensors and ordered dicts needs. Any other global
(``os.system``, ``builtins.eval``, ...) raises :class:`UnsafeCheckpointError`
before anything is called, so a hostile checkpoint cannot run code.

Storages become numpy arrays; tensors are views with the stored size, stride
and offset, copied into contiguous arrays. bfloat16 comes back as
``ml_dtypes.bfloat16``.

Every member's declared (uncompressed) size is checked against
:data:`MAX_MEMBER_BYTES`, and their sum against :data:`MAX_TOTAL_BYTES`, before
anything is read, so a zip bomb is refused instead of filling memory. Each tensor's
shape, strides and offset are checked against its storage's real length, and the bytes
its copy needs against the same caps, before it is copied, so a tiny file cannot claim a
huge tensor through zero strides. A file
that is not a readable checkpoint raises :class:`CheckpointFormatError` (a
``ValueError``) naming the file.
"""

from __future__ import annotations

import collections
import functools
import io
import math
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The checkpoint's pickle asks for a global that tensor rebuilding does not need.
    (A ``ValueError`` too: like any bad input file, commands report it as one line.)"""


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch zip checkpoint."""


# Caps on the sizes the zip's central directory declares, checked before any member is
# read. The published SplatNLP model (83 M float32 parameters, ~0.33 GB) and a
# 24,576-feature SAE over 512 inputs (~0.1 GB) are far below both.
MAX_MEMBER_BYTES = 4 << 30  # one member (one storage, or data.pkl)
MAX_TOTAL_BYTES = 8 << 30  # all members together

# torch's legacy typed-storage names, as written into every zip checkpoint.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class StorageType:
    """Marker standing in for ``torch.<Name>Storage``: only its dtype is used. Not callable."""

    name: str
    dtype: np.dtype

    def __setstate__(self, state):
        # Pickle's BUILD opcode could otherwise rewrite the marker's dtype.
        raise UnsafeCheckpointError(f"checkpoint tries to modify storage type {self.name}")


class TensorBudget:
    """Bytes the reader may still allocate for tensor copies. A copy is never larger than
    its storage (zero strides that repeat elements are refused), and all copies together
    stay under the total cap, so memory is bounded before a byte is copied."""

    def __init__(self, where: str, max_total_bytes: int):
        self.where = where
        self.left = max_total_bytes
        self.max_total_bytes = max_total_bytes

    def take(self, nbytes: int) -> None:
        if nbytes > self.left:
            raise CheckpointFormatError(
                f"{self.where}: its tensors need more than {self.max_total_bytes:,} bytes in "
                "all; refusing to allocate them")
        self.left -= nbytes


def _checked_layout(storage: np.ndarray, storage_offset, size, stride, where: str):
    """``(offset, size, stride)`` as ints once they fit the storage: same rank, nothing
    negative, and the last element read inside the storage's real length."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride):
        raise CheckpointFormatError(f"{where}: tensor size {size} and stride {stride} differ "
                                    "in rank")
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise CheckpointFormatError(
            f"{where}: negative size/stride/offset: {size} {stride} {offset}")
    if 0 in size:
        return offset, size, stride
    # A dimension of length 1 never steps, whatever its stride says.
    stride = tuple(0 if n == 1 else s for n, s in zip(size, stride))
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise CheckpointFormatError(
            f"{where}: tensor of size {size}, stride {stride}, offset {offset} reads element "
            f"{last} of a storage with {storage.size} elements"
        )
    return offset, size, stride


def _rebuild_tensor(budget: TensorBudget, storage, storage_offset, size, stride,
                    requires_grad=False, backward_hooks=None, metadata=None):
    """Our stand-in for ``torch._utils._rebuild_tensor_v2``: a strided view, checked, then
    copied."""
    if not isinstance(storage, np.ndarray):
        raise CheckpointFormatError(f"tensor storage is {type(storage).__name__}, not a storage")
    offset, size, stride = _checked_layout(storage, storage_offset, size, stride, budget.where)
    item = storage.dtype.itemsize
    numel = math.prod(size)
    if numel > storage.size:
        # Only zero strides let a view hold more elements than its storage; saved
        # parameters never do, and a copy would turn a few bytes into gigabytes.
        raise CheckpointFormatError(
            f"{budget.where}: a tensor of shape {size} and stride {stride} repeats its "
            f"storage's {storage.size:,} elements {numel:,} times over; refusing to expand it")
    budget.take(numel * item)
    if 0 in size:
        return np.zeros(size, storage.dtype)
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is just its data here."""
    return data


class _AllowedCall:
    """What an allowed global resolves to: calls through, and refuses pickle's BUILD opcode,
    which could otherwise set attributes (e.g. default arguments) on our functions."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn, name: str):
        self._fn = fn
        self._name = name

    def __call__(self, *args):
        return self._fn(*args)

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"checkpoint tries to modify {self._name}")


_ALLOWED_CALLABLES = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl``, resolving storages from the zip and refusing other globals."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, where: str,
                 budget: TensorBudget):
        super().__init__(file)
        self._budget = budget
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._where = where
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _AllowedCall(functools.partial(_rebuild_tensor, self._budget),
                                f"{module}.{name}")
        if (module, name) in _ALLOWED_CALLABLES:
            return _AllowedCall(_ALLOWED_CALLABLES[(module, name)], f"{module}.{name}")
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        raise UnsafeCheckpointError(
            f"{self._where}: refusing to load global {module}.{name}: a state-dict checkpoint "
            "needs only tensors and ordered dicts, so this file may run code when unpickled"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self._where}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise CheckpointFormatError(f"{self._where}: storage {key!r} has no storage type")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, storage_type.dtype, int(numel))
        return self._storages[key]

    def _read_storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        member = f"{self._prefix}data/{key}"
        try:
            raw = self._archive.read(member)
        except KeyError:
            missing = f"{self._where}: storage file {member} is missing"
            raise CheckpointFormatError(missing) from None
        need = numel * dtype.itemsize
        if numel < 0:
            raise CheckpointFormatError(f"{self._where}: storage {member} has {numel} elements")
        if len(raw) < need:
            raise CheckpointFormatError(
                f"{self._where}: storage {member} has {len(raw)} bytes, needs {need} "
                f"({numel} x {dtype})"
            )
        # Read-only view of the bytes; tensors are copied out of it.
        arr = np.frombuffer(raw, dtype=dtype, count=numel)
        if self._byteorder != sys.byteorder and dtype.itemsize > 1:
            # Swap through an unsigned view: extension dtypes (bfloat16) have no byte order.
            arr = arr.view(f"u{dtype.itemsize}").byteswap().view(dtype)
        return arr


def _archive_prefix(archive: zipfile.ZipFile, where: str) -> str:
    pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointFormatError(
            f"{where}: expected one data.pkl in the archive, found {len(pickles) or 'none'}"
        )
    return pickles[0][: -len("data.pkl")]


def _starts_like_a_zip(path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def check_declared_sizes(archive: zipfile.ZipFile, where: str, *,
                         max_member_bytes: int = MAX_MEMBER_BYTES,
                         max_total_bytes: int = MAX_TOTAL_BYTES) -> None:
    """Refuse an archive whose central directory declares a member over
    ``max_member_bytes`` uncompressed, or members over ``max_total_bytes`` together.
    Reading never yields more than the declared size, so this bounds memory."""
    total = 0
    for info in archive.infolist():
        if info.file_size > max_member_bytes:
            raise CheckpointFormatError(
                f"{where}: zip member {info.filename} declares {info.file_size:,} bytes "
                f"uncompressed, over the cap of {max_member_bytes:,} bytes per member; "
                "refusing to read it (a damaged file or a zip bomb)")
        total += info.file_size
    if total > max_total_bytes:
        raise CheckpointFormatError(
            f"{where}: zip members declare {total:,} bytes uncompressed in all, over the cap "
            f"of {max_total_bytes:,} bytes; refusing to read them (a damaged file or a zip "
            "bomb)")


def load_torch_pickle(path: str | os.PathLike, *, max_member_bytes: int = MAX_MEMBER_BYTES,
                      max_total_bytes: int = MAX_TOTAL_BYTES):
    """The object a ``torch.save`` zip holds, with tensors as numpy arrays.

    ``max_member_bytes``, ``max_total_bytes``: caps on the declared uncompressed sizes
    (:func:`check_declared_sizes`), and on the tensors' copies: one tensor, and all
    together (:class:`TensorBudget`)."""
    where = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint file at {where}")
    if not zipfile.is_zipfile(path):
        if _starts_like_a_zip(path):
            raise CheckpointFormatError(
                f"{where} is truncated or damaged: it starts as a zip checkpoint but its zip "
                "directory (at the end of the file) is missing; copy or download it again")
        raise CheckpointFormatError(
            f"{where} is not a zip checkpoint; only torch.save's default (zip) format is read. "
            "Re-save it with torch >= 1.6 without _use_new_zipfile_serialization=False"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            check_declared_sizes(archive, where, max_member_bytes=max_member_bytes,
                                 max_total_bytes=max_total_bytes)
            prefix = _archive_prefix(archive, where)
            byteorder = "little"
            if f"{prefix}byteorder" in archive.namelist():
                byteorder = archive.read(f"{prefix}byteorder").decode(errors="replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointFormatError(f"{where}: unknown byteorder {byteorder[:40]!r}")
            data = archive.read(f"{prefix}data.pkl")
            budget = TensorBudget(where, max_total_bytes)
            unpickler = RestrictedUnpickler(io.BytesIO(data), archive, prefix, byteorder, where,
                                            budget)
            return unpickler.load()
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as e:
        # damaged archive (bad CRC, truncated), or an unsupported compression/encryption
        raise CheckpointFormatError(f"{where}: unreadable zip checkpoint: {e}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, UnicodeDecodeError) as e:
        raise CheckpointFormatError(
            f"{where}: data.pkl is not a readable state-dict pickle "
            f"({type(e).__name__}: {str(e)[:200]})") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flat ``{name: array}`` state dict from a ``.pth`` file (``torch.save(sd)``)."""
    obj = load_torch_pickle(path)
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{path} holds a {type(obj).__name__}, not a state dict (name -> tensor mapping)"
        )
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointFormatError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        out[str(key)] = value
    return out
