"""Streaming safetensors: memory-mapped reading and tensor-by-tensor writing.

The `safetensors` package materialises whole tensors and has no numpy bfloat16; a memory map lets the loader
read just the slices a device shard needs (a 70B checkpoint never sits in host memory twice), and lets us name
the file and the tensor when a download was truncated. Format: 8-byte little-endian header length, a JSON
header {name: {dtype, shape, data_offsets}}, then the raw little-endian bytes.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

import ml_dtypes
import numpy as np

from jaxadapt.errors import UserError

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}


class CheckpointError(UserError):
    """A checkpoint file that cannot be read as expected; the message names the file."""


class SafetensorsFile:
    """Lazily readable tensors of one .safetensors file: `f[name]` is a read-only np.memmap view."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{self.path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(f"{self.path}: truncated safetensors file (header of {n} bytes, file {size})")
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{self.path}: corrupt safetensors header ({e})") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self.header = header
        self._base = 8 + n
        end = max((h["data_offsets"][1] for h in header.values()), default=0)
        if self._base + end > size:
            raise CheckpointError(
                f"{self.path}: truncated safetensors file: tensors need {self._base + end} bytes, file has {size}"
            )
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r") if size else None

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        code = self.header[name]["dtype"]
        if code not in DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {code}")
        return np.dtype(DTYPES[code])

    def __getitem__(self, name: str) -> np.ndarray:
        h = self.header[name]
        start, stop = h["data_offsets"]
        raw = self._mm[self._base + start: self._base + stop]
        return raw.view(self.dtype(name)).reshape(h["shape"])

    def read(self, name: str) -> np.ndarray:
        """A private, writable copy of one tensor, read with plain file reads. Pages of the memory map that a whole
        tensor is copied from stay resident (and count in the RSS) until the kernel needs them; a pass over every
        tensor of a large checkpoint would hold the whole file that way."""
        h = self.header[name]
        dtype = self.dtype(name)
        with open(self.path, "rb") as fh:
            fh.seek(self._base + h["data_offsets"][0])
            return np.fromfile(fh, dtype=dtype, count=int(np.prod(h["shape"], dtype=np.int64))).reshape(h["shape"])


def open_checkpoint(model_dir: Path) -> dict[str, SafetensorsFile]:
    """tensor name -> the file holding it, for a single file or a sharded (index.json) checkpoint."""
    index = model_dir / "model.safetensors.index.json"
    single = model_dir / "model.safetensors"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a safetensors index ({e})") from None
        files = {f: SafetensorsFile(model_dir / f) for f in sorted(set(weight_map.values()))}
        out = {}
        for name, f in weight_map.items():
            if name not in files[f].header:
                raise CheckpointError(f"{model_dir / f}: tensor {name!r} listed in {index.name} is missing")
            out[name] = files[f]
        return out
    if single.exists():
        f = SafetensorsFile(single)
        return {k: f for k in f.keys()}
    found = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if len(found) == 1:
        f = SafetensorsFile(model_dir / found[0])
        return {k: f for k in f.keys()}
    raise CheckpointError(
        f"{model_dir}: no model.safetensors or model.safetensors.index.json"
        + (f" (found {found})" if found else "")
    )


def write_safetensors(path: Path, tensors: Iterable[tuple[str, tuple[int, ...], np.dtype]], produce) -> None:
    """Write one file; `produce(name)` returns each tensor's array when its turn comes (one in memory at a time)."""
    specs = list(tensors)
    header, offset = {}, 0
    for name, shape, dtype in specs:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": CODES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape, dtype in specs:
            arr = np.ascontiguousarray(produce(name), dtype=dtype)
            if arr.shape != tuple(shape):
                raise CheckpointError(f"{path}: tensor {name!r} has shape {arr.shape}, expected {tuple(shape)}")
            fh.write(arr.reshape(-1).view(np.uint8).data)  # no copy: a big tensor is not held twice


def plan_shards(specs: list[tuple[str, tuple[int, ...], np.dtype]], max_bytes: int) -> Iterator[list]:
    """Split tensor specs, in order, into groups of at most max_bytes (a larger tensor gets its own group)."""
    group, size = [], 0
    for spec in specs:
        n = int(np.prod(spec[1], dtype=np.int64)) * np.dtype(spec[2]).itemsize
        if group and size + n > max_bytes:
            yield group
            group, size = [], 0
        group.append(spec)
        size += n
    if group:
        yield group
