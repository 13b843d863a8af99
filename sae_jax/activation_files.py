"""Activations a user already has, read from disk a few rows at a time.

:func:`open_activations` opens a ``.npy`` file, a ``.safetensors`` file or a folder of
shards of either (every ``*.npy`` and ``*.safetensors`` in it, in name order, as one
table of rows). Each shard must hold one 2-d array ``(rows, d_in)`` of float16,
bfloat16, float32 or float64; a ``.safetensors`` shard holds one tensor, or names it
``activations``. Every shard is memory-mapped, never loaded whole:
:meth:`ActivationFiles.read` copies the rows asked for and hands the pages it touched
back to the kernel (``madvise(MADV_DONTNEED)``), so reading a file much larger than
memory keeps the process's resident memory at about the rows being read.

Both formats are parsed here (a ``.npy`` header through ``numpy.lib.format``; a
``.safetensors`` file is an 8-byte little-endian header length, a JSON header giving
each tensor's dtype, shape and byte range, then the raw bytes), so the reader needs no
other package. Any file it cannot use is an :class:`ActivationFileError` naming the
file and what is wrong (dtype, rank, no rows, a truncated file, shards that disagree).

:meth:`ActivationFiles.check_finite` scans every row in bounded chunks and names the
first row holding NaN or Inf; :meth:`ActivationFiles.fingerprint` is a cheap digest
(sizes, headers and a few sampled rows) that tells whether the data changed.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from runkit.errors import UserError

SUFFIXES = (".npy", ".safetensors")
# The float dtypes a shard may hold; rows come out of read() as float32.
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32),
                np.dtype(np.float64))
SAFETENSORS_DTYPES = {"F16": np.float16, "BF16": ml_dtypes.bfloat16, "F32": np.float32,
                      "F64": np.float64}
TENSOR_NAME = "activations"  # the tensor read from a .safetensors file holding several
MAX_SAFETENSORS_HEADER = 100 * 2**20  # as the safetensors format itself limits it
SCAN_BYTES = 32 * 2**20  # rows checked per step of check_finite
SAMPLED_ROWS = 16  # rows the fingerprint reads
FAULT_AROUND = 64 * 2**10


class ActivationFileError(UserError, ValueError):
    """An activations file that cannot be trained on (the message names it)."""


def _dtype_name(dtype: np.dtype) -> str:
    return "bfloat16" if dtype == ml_dtypes.bfloat16 else str(dtype)


ACCEPTED = ", ".join(_dtype_name(d) for d in FLOAT_DTYPES)


@dataclass(frozen=True)
class Shard:
    """One file's rows: ``rows`` is a read-only ``(n, d)`` view on the file's memory map,
    starting ``offset`` bytes into it; ``header`` is the file's header bytes (part of the
    fingerprint)."""

    path: Path
    rows: np.ndarray
    offset: int
    header: bytes
    memory_map: mmap.mmap

    @property
    def num_rows(self) -> int:
        return self.rows.shape[0]

    def release(self, start: int, stop: int) -> None:
        """Hand the pages of rows ``start..stop-1`` back to the kernel (they stay in the
        page cache; a later read faults them in again)."""
        if stop <= start or not hasattr(mmap, "MADV_DONTNEED"):
            return
        row_bytes = self.rows.strides[0]
        # A page fault maps the pages around it too (the kernel's fault-around, 64 KiB):
        # those are released with the rows' own.
        first = max(0, self.offset + start * row_bytes - FAULT_AROUND)
        end = min(self.offset + stop * row_bytes + FAULT_AROUND, len(self.memory_map))
        aligned = first - first % mmap.PAGESIZE
        self.memory_map.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)


def _map_file(path: Path, size: int) -> mmap.mmap:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)


def _check_array(path: Path, shape: tuple, dtype: np.dtype, what: str = "array") -> None:
    if dtype not in FLOAT_DTYPES:
        raise ActivationFileError(f"{path}: the {what} has dtype {_dtype_name(dtype)}; "
                                  f"activations must be one of {ACCEPTED}")
    if len(shape) != 2:
        raise ActivationFileError(f"{path}: the {what} has shape {tuple(shape)}; activations "
                                  "must be 2-d, (rows, d_in): flatten the leading axes")
    if shape[0] == 0 or shape[1] == 0:
        raise ActivationFileError(f"{path}: the {what} has shape {tuple(shape)}: no "
                                  "activations in it")


def _shard(path: Path, shape: tuple, dtype: np.dtype, offset: int, header: bytes,
           size: int) -> Shard:
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if size < need:
        raise ActivationFileError(f"{path}: the file is truncated: {size:,} bytes, its header "
                                  f"describes {need:,}")
    memory_map = _map_file(path, size)
    rows = np.frombuffer(memory_map, dtype=dtype, count=shape[0] * shape[1], offset=offset)
    return Shard(path, rows.reshape(shape), offset, header, memory_map)


def _open_npy(path: Path, size: int) -> Shard:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as e:
            raise ActivationFileError(f"{path}: not a readable .npy file ({e})") from None
        offset = f.tell()
        f.seek(0)
        header = f.read(offset)
    dtype = np.dtype(dtype)
    _check_array(path, shape, dtype)
    if fortran and shape[1] > 1:
        raise ActivationFileError(f"{path}: the array is stored column by column (Fortran "
                                  "order); save it row by row: np.save(path, "
                                  "np.ascontiguousarray(x))")
    return _shard(path, shape, dtype, offset, header, size)


def _safetensors_header(path: Path, size: int) -> tuple[dict, bytes]:
    with open(path, "rb") as f:
        head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if length is None or length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise ActivationFileError(f"{path}: not a .safetensors file (no valid header "
                                      "length in its first 8 bytes)")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ActivationFileError(f"{path}: the .safetensors header is not valid JSON "
                                  f"({e})") from None
    if not isinstance(header, dict):
        raise ActivationFileError(f"{path}: the .safetensors header is not a JSON object")
    return header, head + raw


def _open_safetensors(path: Path, size: int) -> Shard:
    header, raw = _safetensors_header(path, size)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(tensors) == 1:
        name = next(iter(tensors))
    elif TENSOR_NAME in tensors:
        name = TENSOR_NAME
    else:
        raise ActivationFileError(f"{path}: holds {len(tensors)} tensors "
                                  f"({', '.join(sorted(tensors)[:5]) or 'none'}); keep one "
                                  f"per file, or name the activations {TENSOR_NAME!r}")
    entry = tensors[name]
    what = f"tensor {name!r}"
    try:
        kind, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        shape, begin, end = tuple(int(s) for s in shape), int(begin), int(end)
    except (KeyError, TypeError, ValueError):
        raise ActivationFileError(f"{path}: the header entry of {what} lacks a dtype, shape "
                                  "or data_offsets") from None
    if kind not in SAFETENSORS_DTYPES:
        raise ActivationFileError(f"{path}: {what} has dtype {kind}; activations must be one "
                                  f"of {', '.join(SAFETENSORS_DTYPES)}")
    dtype = np.dtype(SAFETENSORS_DTYPES[kind])
    _check_array(path, shape, dtype, what)
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
        raise ActivationFileError(f"{path}: {what} spans bytes {begin}..{end}, which does not "
                                  f"match its shape {shape} of {kind}")
    return _shard(path, shape, dtype, len(raw) + begin, raw, size)


def _open_shard(path: Path) -> Shard:
    size = path.stat().st_size
    if size == 0:
        raise ActivationFileError(f"{path}: the file is empty (0 bytes)")
    if path.suffix == ".npy":
        return _open_npy(path, size)
    return _open_safetensors(path, size)


def shard_paths(path: Path) -> list[Path]:
    """The files ``path`` names: itself, or a folder's ``*.npy`` and ``*.safetensors`` files
    in name order (hidden files left out)."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))
        if not found:
            raise ActivationFileError(f"{path}: the folder holds no .npy or .safetensors "
                                      "files")
        return found
    if not path.exists():
        raise ActivationFileError(f"{path}: no such file or folder")
    if path.suffix not in SUFFIXES:
        raise ActivationFileError(f"{path}: not a .npy or .safetensors file (or a folder of "
                                  "them)")
    return [path]


class ActivationFiles:
    """The rows of one or more shards as one table (row ``i`` of the table is row
    ``i - starts[s]`` of shard ``s``)."""

    def __init__(self, path: Path, shards: list[Shard]):
        self.path = path
        self.shards = tuple(shards)
        first = shards[0]
        for shard in shards[1:]:
            if shard.rows.shape[1] != first.rows.shape[1]:
                raise ActivationFileError(
                    f"{shard.path}: rows of {shard.rows.shape[1]} values, but {first.path} "
                    f"has rows of {first.rows.shape[1]}: every shard must have the same d_in")
            if shard.rows.dtype != first.rows.dtype:
                raise ActivationFileError(
                    f"{shard.path}: dtype {_dtype_name(shard.rows.dtype)}, but {first.path} "
                    f"has {_dtype_name(first.rows.dtype)}: every shard must have the same dtype")
        self.starts = np.cumsum([0] + [s.num_rows for s in shards])

    @property
    def num_rows(self) -> int:
        return int(self.starts[-1])

    @property
    def d_in(self) -> int:
        return int(self.shards[0].rows.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.shards[0].rows.dtype

    def describe(self) -> str:
        shards = f" in {len(self.shards)} shards" if len(self.shards) > 1 else ""
        return (f"{self.num_rows:,} rows of {self.d_in} {_dtype_name(self.dtype)} values"
                f"{shards} ({self.path})")

    def locate(self, row: int) -> tuple[Shard, int]:
        """The shard holding table row ``row`` and the row's index in it."""
        if not 0 <= row < self.num_rows:
            raise IndexError(f"row {row} is outside the {self.num_rows} rows of {self.path}")
        s = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.shards[s], row - int(self.starts[s])

    def where(self, row: int) -> str:
        """Where a table row lies, for people: ``shard.npy row 12`` (the file alone when
        there is one shard)."""
        shard, local = self.locate(row)
        return f"{shard.path.name} row {local}" if len(self.shards) > 1 else f"row {row}"

    def read(self, rows) -> np.ndarray:
        """``(len(rows), d_in)`` float32: the table rows ``rows`` (any order), copied out of
        the memory maps run by run of consecutive rows; the pages read are released."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), self.d_in), np.float32)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= self.num_rows:
            raise IndexError(f"rows outside 0..{self.num_rows - 1} of {self.path}")
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(shard_of) != 0)) + 1
        for a, b in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])):
            s = int(shard_of[a])
            shard, lo = self.shards[s], int(rows[a] - self.starts[s])
            out[a:b] = shard.rows[lo:lo + (b - a)]
            shard.release(lo, lo + (b - a))
        return out

    def read_range(self, start: int, stop: int) -> np.ndarray:
        return self.read(np.arange(start, stop))

    def check_finite(self) -> None:
        """Raise :class:`ActivationFileError` naming the first row that holds NaN or Inf
        (read in chunks of about :data:`SCAN_BYTES`, each released once checked)."""
        for s, shard in enumerate(self.shards):
            step = max(1, SCAN_BYTES // shard.rows.strides[0])
            for lo in range(0, shard.num_rows, step):
                chunk = shard.rows[lo:lo + step]
                ok = np.isfinite(chunk).all(axis=1)
                shard.release(lo, lo + len(chunk))
                if not ok.all():
                    bad = lo + int(np.argmin(ok))
                    whole = (f" (row {int(self.starts[s]) + bad} of {self.path})"
                             if len(self.shards) > 1 else "")
                    raise ActivationFileError(
                        f"{shard.path}: row {bad} holds a non-finite value (NaN or Inf){whole}; "
                        "activations must be finite: nothing was trained")

    def fingerprint(self) -> str:
        """A sha256 of each shard's name, size and header and of :data:`SAMPLED_ROWS` rows
        spread over it: cheap to compute, and changed by any re-export of the data."""
        digest = hashlib.sha256()
        for shard in self.shards:
            digest.update(f"{shard.path.name}\0{shard.path.stat().st_size}\0".encode())
            digest.update(shard.header)
            picks = np.unique(np.linspace(0, shard.num_rows - 1, SAMPLED_ROWS).astype(np.int64))
            for i in picks:
                digest.update(np.ascontiguousarray(shard.rows[i]).tobytes())
            shard.release(0, shard.num_rows)
        return digest.hexdigest()


def open_activations(path: str | os.PathLike) -> ActivationFiles:
    """The activations at ``path`` (a file or a folder of shards), memory-mapped."""
    path = Path(os.path.abspath(path))
    return ActivationFiles(path, [_open_shard(p) for p in shard_paths(path)])
