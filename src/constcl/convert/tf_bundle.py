"""Read a TensorFlow checkpoint (a "tensor bundle") without TensorFlow.

A TF2 checkpoint ``ckpt-N`` is two kinds of files (``tensorflow/core/util/tensor_bundle``):

- ``ckpt-N.index``: a LevelDB-format SSTable (sorted string table). Its keys are the variable
  names; its values are ``BundleEntryProto`` protobuf records (dtype, shape, shard_id, offset,
  size, crc32c); the empty key ``""`` holds a ``BundleHeaderProto`` (num_shards, endianness).
- ``ckpt-N.data-SSSSS-of-NNNNN``: the shards, raw tensor bytes in the header's byte order
  (little-endian on every machine TF supports) at each entry's offset.

SSTable layout (LevelDB ``table_format.md``): data blocks, a meta-index block, an index block
and a 48-byte footer (meta-index handle, index handle, padding, 8-byte magic). A block handle
is (varint64 offset, varint64 size); every block is followed by a 5-byte trailer (compression
type, masked crc32c). A block is a run of prefix-compressed entries (varint32 shared key bytes,
varint32 unshared key bytes, varint32 value size, the unshared key bytes, the value) followed
by the restart-point offsets (uint32 each) and their count (uint32). TF's ``BundleWriter``
writes uncompressed blocks; a snappy-compressed block raises a clear error.

Only what a weight conversion needs is implemented: numeric dense tensors. String tensors
(e.g. ``_CHECKPOINTABLE_OBJECT_GRAPH``) and partitioned variables (entries with slices) are
listed but cannot be read.
"""

from __future__ import annotations

import gzip
import lzma
import struct
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from constcl.errors import ConstclError

__all__ = ["BundleEntry", "TensorBundle", "checkpoints_in", "crc32c", "find_checkpoint",
           "is_archive", "unpack_archive"]

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5

# tensorflow/core/framework/types.proto -> numpy (little-endian)
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"),
    5: np.dtype("<i2"), 6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"),
    17: np.dtype("<u2"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
_DTYPE_NAMES = {7: "string", 14: "bfloat16", 20: "resource", 21: "variant"}


# ---------------------------------------------------------------------------- low-level codecs

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``: (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Parse one protobuf message into (field number, value) pairs: varints and fixed ints as
    int, length-delimited fields as bytes. Enough for the bundle protos; no schema needed."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value = bytes(buf[pos:pos + size])
            pos += size
        elif wire == 5:
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    if pos != len(buf):
        raise ValueError("truncated protobuf message")
    return fields


def _make_crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TF stores for each tensor's bytes. Pure Python
    (about 10 MB/s): ``google_crc32c`` is used instead when it is installed."""
    try:
        import google_crc32c  # type: ignore[import-not-found]

        return int(google_crc32c.value(bytes(data)))
    except ImportError:
        pass
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask_crc(masked: int) -> int:
    """TF stores ``rotate_right(crc, 15) + 0xa282ead8`` (``crc32c::Mask``)."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---------------------------------------------------------------------------- SSTable

def _read_block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    """The contents of the block at (offset, size), trailer checked."""
    end = offset + size
    if end + _BLOCK_TRAILER > len(data):
        raise ConstclError(f"{path}: block at offset {offset} runs past the end of the file "
                           "(truncated index?)")
    kind = data[end]
    if kind == 1:
        raise ConstclError(f"{path}: snappy-compressed blocks are not supported (TF's checkpoint "
                           "writer stores them uncompressed; this index was written otherwise)")
    if kind != 0:
        raise ConstclError(f"{path}: unknown block compression type {kind}")
    block = data[offset:end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if crc32c(block + bytes([kind])) != _unmask_crc(stored):
        raise ConstclError(f"{path}: checksum mismatch in the block at offset {offset}")
    return block


def _block_entries(block: bytes, path: Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of one block, in order (prefix compression undone)."""
    if len(block) < 4:
        raise ConstclError(f"{path}: block too short")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise ConstclError(f"{path}: bad restart count {num_restarts}")
    restarts = set(struct.unpack_from(f"<{num_restarts}I", block, limit))
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < limit:
        start = pos
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_size, pos = _varint(block, pos)
        if start in restarts and shared != 0:
            raise ConstclError(f"{path}: restart point at {start} shares a key prefix")
        if shared > len(key) or pos + unshared + value_size > limit:
            raise ConstclError(f"{path}: corrupt block entry at {start}")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_size]))
        pos += value_size
    return entries


def read_sstable(path: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB-format table file, in key order."""
    data = path.read_bytes()
    if len(data) < _FOOTER_SIZE:
        raise ConstclError(f"{path}: too short to be a TF checkpoint index")
    footer = data[-_FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, 40)
    if magic != _TABLE_MAGIC:
        raise ConstclError(f"{path}: not a TF checkpoint index (no SSTable magic number)")
    pos = 0
    for _ in range(2):  # skip the meta-index handle; the index handle follows it
        _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(_read_block(data, index_offset, index_size, path), path):
        offset, hpos = _varint(handle, 0)
        size, _ = _varint(handle, hpos)
        entries.extend(_block_entries(_read_block(data, offset, size, path), path))
    return entries


# ---------------------------------------------------------------------------- bundle

@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives: dtype code (types.proto), shape, shard, byte range, masked crc32c
    (as TF stores it: ``crc32c::Mask``)."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    sliced: bool

    @property
    def dtype_name(self) -> str:
        if self.dtype in _DTYPES:
            return str(_DTYPES[self.dtype].name)
        return _DTYPE_NAMES.get(self.dtype, f"dtype {self.dtype}")


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, value in _proto_fields(buf):
        if number == 2:  # repeated Dim { int64 size = 1; string name = 2; }
            size = 0
            for n, v in _proto_fields(value):  # type: ignore[arg-type]
                if n == 1:
                    size = v  # type: ignore[assignment]
            dims.append(int(size))
        elif number == 3 and value:
            raise ValueError("tensor of unknown rank")
    return tuple(dims)


def _parse_entry(buf: bytes) -> BundleEntry:
    values: dict[str, object] = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0,
                                 "crc32c": 0, "sliced": False}
    names = {1: "dtype", 3: "shard_id", 4: "offset", 5: "size", 6: "crc32c"}
    for number, value in _proto_fields(buf):
        if number == 2:
            values["shape"] = _parse_shape(value)  # type: ignore[arg-type]
        elif number == 7:
            values["sliced"] = True
        elif number in names:
            values[names[number]] = value
    return BundleEntry(**values)  # type: ignore[arg-type]


class TensorBundle:
    """A TF checkpoint opened for reading: ``entries`` (name -> :class:`BundleEntry`) and
    ``read(name)`` (a numpy array in TF's layout, e.g. conv kernels (kT, kH, kW, C_in, C_out)).

    Args:
        prefix: the checkpoint prefix, e.g. ``/path/ckpt-25`` (``ckpt-25.index`` and
            ``ckpt-25.data-00000-of-00001`` next to it).
        verify: check each tensor's crc32c when it is read.
    """

    def __init__(self, prefix: str | Path, verify: bool = True) -> None:
        self.prefix = Path(prefix)
        self.verify = verify
        index = Path(f"{self.prefix}.index")
        if not index.is_file():
            raise FileNotFoundError(f"TF checkpoint index {str(index)!r} does not exist")
        self.index_path = index
        self.entries: dict[str, BundleEntry] = {}
        self.num_shards = 1
        try:
            for key, value in read_sstable(index):
                if key == b"":
                    self.num_shards = self._parse_header(value)
                    continue
                self.entries[key.decode("utf-8")] = _parse_entry(value)
        except (ValueError, struct.error, UnicodeDecodeError) as err:
            raise ConstclError(f"{index}: cannot parse the checkpoint index ({err})") from err
        self._shards: dict[int, bytes] = {}

    def _parse_header(self, buf: bytes) -> int:
        num_shards, endianness = 1, 0
        for number, value in _proto_fields(buf):
            if number == 1:
                num_shards = int(value)  # type: ignore[arg-type]
            elif number == 2:
                endianness = int(value)  # type: ignore[arg-type]
        if endianness != 0:
            raise ConstclError(f"{self.index_path}: big-endian checkpoints are not supported")
        return num_shards

    def shard_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def _shard(self, shard_id: int) -> bytes:
        if shard_id not in self._shards:
            path = self.shard_path(shard_id)
            if not path.is_file():
                raise FileNotFoundError(f"TF checkpoint data shard {str(path)!r} does not exist")
            self._shards[shard_id] = path.read_bytes()
        return self._shards[shard_id]

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array of its stored shape and dtype."""
        if name not in self.entries:
            raise KeyError(f"{self.prefix}: no variable {name!r}")
        entry = self.entries[name]
        if entry.sliced:
            raise ConstclError(f"{self.prefix}: variable {name!r} is partitioned (sliced); "
                               "not supported")
        if entry.dtype not in _DTYPES:
            raise ConstclError(f"{self.prefix}: variable {name!r} has type {entry.dtype_name}, "
                               "which cannot be read as a numeric array")
        shard = self._shard(entry.shard_id)
        raw = shard[entry.offset:entry.offset + entry.size]
        if len(raw) != entry.size:
            raise ConstclError(f"{self.shard_path(entry.shard_id)}: variable {name!r} runs past "
                               "the end of the shard (truncated file?)")
        if self.verify and crc32c(raw) != _unmask_crc(entry.crc32c):
            raise ConstclError(f"{self.shard_path(entry.shard_id)}: checksum mismatch for "
                               f"variable {name!r} (corrupt file?)")
        dtype = _DTYPES[entry.dtype]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise ConstclError(f"{self.prefix}: variable {name!r} has {entry.size} bytes for shape "
                               f"{entry.shape} of {dtype.name}")
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))


def find_checkpoint(path: str | Path, workdir: str | Path | None = None) -> Path:
    """The checkpoint prefix that ``path`` names: a prefix (``.../ckpt-25``), its ``.index`` or
    ``.data-*`` file, a folder holding exactly one checkpoint (the newest ``ckpt-N`` when it
    holds several), or a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive of such a folder (unpacked
    into ``workdir``, or a new temporary folder)."""
    path = Path(path)
    name = path.name
    if name.endswith(".index"):
        return path.with_name(name[: -len(".index")])
    if ".data-" in name:
        return path.with_name(name.split(".data-")[0])
    if Path(f"{path}.index").is_file():
        return path
    if path.is_file() and is_archive(path):
        target = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="tfckpt-"))
        unpack_archive(path, target)
        return find_checkpoint(target)
    if path.is_dir():
        found = checkpoints_in(path)
        if not found:
            raise FileNotFoundError(f"no TF checkpoint (*.index) under {str(path)!r}")
        return found[-1]
    raise FileNotFoundError(f"TF checkpoint {str(path)!r} does not exist (give the ckpt-N "
                            "prefix, its .index file, its folder or a .tar.gz of it)")


def is_archive(path: str | Path) -> bool:
    """Whether ``path`` names a tar archive (``.tar.gz``, ``.tgz``, ``.tar``) by its name."""
    return Path(path).name.endswith((".tar.gz", ".tgz", ".tar"))


def checkpoints_in(folder: str | Path) -> list[Path]:
    """The checkpoint prefixes under ``folder`` (recursively), oldest first: by the step N of
    ``ckpt-N``, then by path."""
    indexes = sorted(Path(folder).rglob("*.index"), key=_checkpoint_order)
    return [p.with_name(p.name[: -len(".index")]) for p in indexes]


def unpack_archive(path: str | Path, target: str | Path) -> None:
    """Unpack the tar archive ``path`` into ``target`` (:func:`_safe_extract`); a truncated or
    corrupt archive (e.g. a half-finished download) raises ConstclError naming it."""
    try:
        with tarfile.open(path) as tar:
            _safe_extract(tar, Path(target))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConstclError(f"{path}: not a readable tar archive ({reason}); a truncated or "
                           "corrupt download? Download it again, or unpack it and give the "
                           "folder") from err


def _safe_extract(tar: tarfile.TarFile, target: Path) -> None:
    """Extract regular files and folders only, each inside ``target`` (no links, no absolute
    or ``..`` paths): ConstclError naming the first member that is not."""
    root = target.resolve()
    for member in tar.getmembers():
        dest = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not dest.is_relative_to(root):
            raise ConstclError(f"{tar.name}: archive member {member.name!r} is not a plain file "
                               "inside the archive's folder; refusing to unpack it")
    # every member checked above; Python's own "data" filter as well where it exists
    tar.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def _checkpoint_order(index: Path) -> tuple[int, str]:
    """Sort key: the step number N of ``ckpt-N.index`` (-1 when there is none), then the path."""
    stem = index.name[: -len(".index")]
    tail = stem.rsplit("-", 1)[-1]
    return (int(tail) if tail.isdigit() else -1, str(index))
