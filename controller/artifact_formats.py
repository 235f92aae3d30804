"""Is an uploaded file what its format says? Checked before it is stored under its digest.

An artifact is handed to devices, so the controller must not store a shared library labelled
"npz" or a text file labelled "onnx". The checks read the file's structure without loading it
whole (a model may be gigabytes):

- ``onnx``: a protobuf ``ModelProto``: every top-level field is well formed and ends inside the
  file, ``ir_version`` (1, varint) and ``graph`` (7, length-delimited) are present, and the
  known fields have their declared wire types;
- ``tflite``: a FlatBuffer with the ``TFL3`` identifier whose root table, vtable and
  ``subgraphs`` vector lie inside the file, ``version`` 3;
- ``npz``: a zip of ``.npy`` members, each read the way ``numpy.load(allow_pickle=False)`` reads
  it: a valid header, no Python objects (pickles), data exactly as long as the header says.

What a runtime finds wrong deeper inside a model still fails the job as ``artifact_invalid``.
"""
from __future__ import annotations

import mmap
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Tuple

from .errors import InvalidArgument

# Wire types of ModelProto's fields (onnx.proto): 0 varint, 2 length-delimited.
_ONNX_FIELDS: Dict[int, int] = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_TFLITE_SCHEMA_VERSION = 3
# Uncompressed bytes an .npz may expand to: the agent loads every member it names.
MAX_NPZ_UNCOMPRESSED_BYTES = 16 << 30


def check_format(path: Path, fmt: str, name: str) -> None:
    """Raise InvalidArgument saying what is wrong when ``path`` is not a ``fmt`` file."""
    check = _CHECKS.get(fmt)
    if check is None:
        raise InvalidArgument(f"artifact {name}: format {fmt!r} has no check; it cannot be stored")
    with open(path, "rb") as f:
        problem = check(f)
    if problem:
        raise InvalidArgument(f"artifact {name} is not a valid {fmt} file: {problem}")


def _varint(f: BinaryIO) -> Tuple[int, bool]:
    """(value, complete) of a base-128 varint at the file's position."""
    value = shift = 0
    for _ in range(10):
        byte = f.read(1)
        if not byte:
            return value, False
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value, True
        shift += 7
    return value, False


def _onnx(f: BinaryIO) -> str:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    seen = set()
    while f.tell() < size:
        at = f.tell()
        key, ok = _varint(f)
        if not ok:
            return f"a field key at byte {at} runs past the end of the file"
        number, wire = key >> 3, key & 7
        if number == 0:
            return f"field number 0 at byte {at} (not a protobuf message)"
        expected = _ONNX_FIELDS.get(number)
        if expected is not None and wire != expected:
            return f"ModelProto field {number} at byte {at} has wire type {wire}, not {expected}"
        if wire == 0:
            _, ok = _varint(f)
            if not ok:
                return f"field {number} at byte {at}: its value runs past the end of the file"
        elif wire == 1:
            f.seek(8, 1)
        elif wire == 2:
            length, ok = _varint(f)
            if not ok:
                return f"field {number} at byte {at}: its length runs past the end of the file"
            f.seek(length, 1)
        elif wire == 5:
            f.seek(4, 1)
        else:
            return f"byte {at} starts a field of wire type {wire}, which ModelProto does not use (not a protobuf message)"
        if f.tell() > size:
            return f"field {number} at byte {at} ends after the end of the file (truncated?)"
        seen.add(number)
    missing = [what for number, what in ((1, "ir_version"), (7, "graph")) if number not in seen]
    if missing:
        return f"no {' and no '.join(missing)} (an ONNX model has both)"
    return ""


def _tflite(f: BinaryIO) -> str:
    f.seek(0, 2)
    size = f.tell()
    if size < 16:
        return f"{size} bytes is too short for a FlatBuffer"
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[4:8] != b"TFL3":
            return "no TFL3 file identifier at bytes 4-7"

        def u32(at: int) -> int:
            return struct.unpack_from("<I", buf, at)[0]

        root = u32(0)
        if root + 4 > size:
            return f"the root table offset {root} lies outside the file"
        vtable = root - struct.unpack_from("<i", buf, root)[0]
        if vtable < 0 or vtable + 4 > size:
            return "the root table's vtable lies outside the file"
        vsize, tsize = struct.unpack_from("<HH", buf, vtable)
        if vsize < 4 or vsize % 2 or vtable + vsize > size or root + tsize > size:
            return "the root table's vtable is malformed"

        def field_at(index: int) -> int:
            slot = 4 + 2 * index
            return struct.unpack_from("<H", buf, vtable + slot)[0] if slot + 2 <= vsize else 0

        version_at = field_at(0)
        version = u32(root + version_at) if version_at else 0
        if version != _TFLITE_SCHEMA_VERSION:
            return f"schema version {version}, not {_TFLITE_SCHEMA_VERSION}"
        subgraphs_at = field_at(2)
        if not subgraphs_at or root + subgraphs_at + 4 > size:
            return "the model has no subgraphs"
        vector = root + subgraphs_at + u32(root + subgraphs_at)
        if vector + 4 > size:
            return "the subgraphs vector lies outside the file"
        count = u32(vector)
        if count == 0 or vector + 4 + 4 * count > size:
            return f"the subgraphs vector ({count} entries) does not fit in the file"
    return ""


def _npz(f: BinaryIO) -> str:
    import numpy as np

    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError) as exc:
        return f"not a zip archive ({exc})"
    with archive:
        members = archive.infolist()
        if not members:
            return "the archive is empty"
        total = sum(m.file_size for m in members)
        if total > MAX_NPZ_UNCOMPRESSED_BYTES:
            return f"it expands to {total} bytes; the limit is {MAX_NPZ_UNCOMPRESSED_BYTES}"
        for member in members:
            if not member.filename.endswith(".npy") or member.is_dir():
                return f"member {member.filename!r} is not an .npy array"
            try:
                with archive.open(member) as arr:
                    version = np.lib.format.read_magic(arr)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(arr)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(arr)
                    header = arr.tell()
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                return f"member {member.filename!r} is not a readable .npy array ({exc})"
            if dtype.hasobject:
                return (f"member {member.filename!r} holds Python objects (a pickle), which the farm never "
                        "loads (numpy.load(allow_pickle=False) refuses it)")
            expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if member.file_size != expected:
                return f"member {member.filename!r} holds {member.file_size} bytes; its header says {expected}"
    return ""


def _op_trace(f: BinaryIO) -> str:
    """A runtime's per-operator trace (op_traces.py): text the controller keeps and serves back,
    never loads or runs. Only the controller stores one; an upload cannot name this format."""
    block = f.read(1 << 20)
    while block:
        if b"\0" in block:
            return "a trace is text, and this holds a NUL byte"
        block = f.read(1 << 20)
    return ""


_CHECKS: Dict[str, Callable[[BinaryIO], str]] = {"onnx": _onnx, "tflite": _tflite, "npz": _npz,
                                                 "op-trace": _op_trace}
