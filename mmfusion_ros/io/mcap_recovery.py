"""Reading what is left of an MCAP file that was cut off.

A recorder that loses power or is killed leaves an MCAP file without its summary and footer; readers
that start from the footer (rosbags among them) then refuse the whole file. The data section is a
plain sequence of length-prefixed records, so every record written before the cut is still readable
by walking it from the start. This module does that walk, indexes the complete messages (inside
complete chunks, and the complete records of an uncompressed chunk that was cut) and reports how
many bytes after the last complete record could not be used.

Only the record kinds that carry messages are interpreted (schema, channel, message, chunk); the
rest are skipped by their length. Compressed chunks are decompressed with the codecs rosbags already
depends on.
"""

from __future__ import annotations

import mmap
import struct
import sys
from binascii import crc32
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    'MCAP_MAGIC',
    'McapChannel',
    'RecoveredMcap',
    'has_footer',
    'recover_mcap',
]

MCAP_MAGIC = b'\x89MCAP0\r\n'

_OP_HEADER = 0x01
_OP_FOOTER = 0x02
_OP_SCHEMA = 0x03
_OP_CHANNEL = 0x04
_OP_MESSAGE = 0x05
_OP_CHUNK = 0x06
_OP_DATA_END = 0x0F
_KNOWN_OPS = frozenset(range(0x01, 0x10))

_U16 = struct.Struct('<H')
_U32 = struct.Struct('<I')
_U64 = struct.Struct('<Q')
_MESSAGE_HEAD = struct.Struct('<HIQQ')  # channel_id, sequence, log_time, publish_time
_CHUNK_HEAD = struct.Struct('<QQQI')  # start, end, uncompressed_size, uncompressed_crc


class McapChannel(NamedTuple):
    """A channel as its record declares it; ``offered_qos`` is the raw YAML rosbag2 stores."""

    id: int
    topic: str
    msgtype: str  # the schema name, '' for schemaless channels
    message_encoding: str
    offered_qos: str


class _MessageRef(NamedTuple):
    """Where one message's payload lies: in the file (``chunk`` < 0) or in a decompressed chunk."""

    log_time: int
    order: int  # position in the file, keeps equal stamps in recorded order
    channel_id: int
    chunk: int  # index into RecoveredMcap.chunks, -1 for payloads read straight from the file
    offset: int
    length: int


class _ChunkRef(NamedTuple):
    offset: int  # file offset of the compressed records
    compressed_size: int
    uncompressed_size: int
    compression: str
    crc: int


class RecoveredMcap(NamedTuple):
    """The readable part of a cut MCAP file, indexed by log time."""

    path: Path
    channels: dict[int, McapChannel]
    messages: list[_MessageRef]  # sorted by (log_time, order)
    chunks: list[_ChunkRef]
    file_size: int
    readable_bytes: int  # up to the end of the last complete record
    reached_data_end: bool  # the cut fell in the summary: no message was lost

    @property
    def lost_bytes(self) -> int:
        """Bytes of message data after the last complete record (0 when only the index was cut)."""
        return 0 if self.reached_data_end else self.file_size - self.readable_bytes

    def payloads(self, channel_ids: frozenset[int] | None = None) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(log_time, channel_id, data)`` in time order, one decompressed chunk cached."""
        cached_index, cached = -1, b''
        with self.path.open('rb') as bio:
            for ref in self.messages:
                if channel_ids is not None and ref.channel_id not in channel_ids:
                    continue
                if ref.chunk < 0:
                    bio.seek(ref.offset)
                    data = bio.read(ref.length)
                else:
                    if ref.chunk != cached_index:
                        chunk = self.chunks[ref.chunk]
                        bio.seek(chunk.offset)
                        cached = _decompress(bio.read(chunk.compressed_size), chunk)
                        cached_index = ref.chunk
                    data = cached[ref.offset:ref.offset + ref.length]
                yield ref.log_time, ref.channel_id, data


def has_footer(path: Path) -> bool:
    """Whether an MCAP file ends with its closing magic (it was closed, not cut)."""
    size = path.stat().st_size
    if size < 2 * len(MCAP_MAGIC):
        return False
    with path.open('rb') as bio:
        bio.seek(size - len(MCAP_MAGIC))
        return bio.read(len(MCAP_MAGIC)) == MCAP_MAGIC


def recover_mcap(path: Path) -> RecoveredMcap:
    """Index every complete message of ``path``; raises ``ValueError`` if it is not MCAP at all."""
    with path.open('rb') as bio:
        if bio.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise ValueError('does not start with the MCAP magic')
        # Mapped, not read: a cut recording can be gigabytes and only its record headers are needed.
        with mmap.mmap(bio.fileno(), 0, access=mmap.ACCESS_READ) as data:
            state = _Scan(data)
            readable, reached_end = state.walk(len(MCAP_MAGIC), len(data), chunk=-1, top_level=True)
            size = len(data)
    state.data = b''
    state.messages.sort(key=lambda ref: (ref.log_time, ref.order))
    return RecoveredMcap(path, state.channels, state.messages, state.chunks, size, readable,
                         reached_end)


class _Scan:
    """Walks records, collecting schemas, channels and message references."""

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data = data
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, McapChannel] = {}
        self.messages: list[_MessageRef] = []
        self.chunks: list[_ChunkRef] = []

    def walk(self, start: int, end: int, *, chunk: int, top_level: bool,
             base: bytes | None = None) -> tuple[int, bool]:
        """Parse records in ``[start, end)`` of the file (or of ``base``, a decompressed chunk).

        Returns the offset after the last complete record and whether a DataEnd record was met.
        """
        buf = self.data if base is None else base
        pos = start
        while pos + 9 <= end:
            op = buf[pos]
            (length,) = _U64.unpack_from(buf, pos + 1)
            body = pos + 9
            if op not in _KNOWN_OPS:
                return pos, False  # garbage: nothing after it can be trusted
            if top_level and op in (_OP_DATA_END, _OP_FOOTER):
                return pos, True
            if body + length > end:
                if top_level and op == _OP_CHUNK:
                    return max(pos, self._partial_chunk(body, end)), False
                return pos, False
            try:
                self._record(op, buf, body, body + length, chunk=chunk, top_level=top_level)
            except (struct.error, UnicodeDecodeError, IndexError):
                return pos, False
            pos = body + length
        return pos, False

    def _record(self, op: int, buf: bytes | mmap.mmap, body: int, end: int, *, chunk: int,
                top_level: bool) -> None:
        if op == _OP_SCHEMA:
            (schema_id,) = _U16.unpack_from(buf, body)
            name, _ = _string(buf, body + 2)
            self.schemas[schema_id] = name
        elif op == _OP_CHANNEL:
            channel_id, schema_id = struct.unpack_from('<HH', buf, body)
            topic, pos = _string(buf, body + 4)
            encoding, pos = _string(buf, pos)
            metadata = _string_map(buf, pos)
            self.channels[channel_id] = McapChannel(channel_id, topic, self.schemas.get(schema_id, ''),
                                                    encoding, metadata.get('offered_qos_profiles', ''))
        elif op == _OP_MESSAGE:
            channel_id, _, log_time, _ = _MESSAGE_HEAD.unpack_from(buf, body)
            payload = body + _MESSAGE_HEAD.size
            if payload > end:
                raise struct.error('message record shorter than its header')
            self.messages.append(_MessageRef(log_time, len(self.messages), channel_id, chunk, payload,
                                             end - payload))
        elif op == _OP_CHUNK and top_level:
            self._chunk(body, end)

    def _chunk_header(self, body: int) -> tuple[_ChunkRef, int]:
        _, _, uncompressed_size, crc = _CHUNK_HEAD.unpack_from(self.data, body)
        compression, pos = _string(self.data, body + _CHUNK_HEAD.size)
        (compressed_size,) = _U64.unpack_from(self.data, pos)
        pos += 8
        return _ChunkRef(pos, compressed_size, uncompressed_size, compression, crc), pos

    def _chunk(self, body: int, end: int) -> None:
        ref, records = self._chunk_header(body)
        if records + ref.compressed_size > end:
            raise struct.error('chunk records exceed the chunk record')
        if not ref.compression:
            self.walk(records, records + ref.compressed_size, chunk=-1, top_level=False)
            return
        try:
            raw = _decompress(self.data[records:records + ref.compressed_size], ref)
        except ValueError:
            return  # a damaged chunk loses its own messages only
        self.chunks.append(ref)
        self.walk(0, len(raw), chunk=len(self.chunks) - 1, top_level=False, base=raw)

    def _partial_chunk(self, body: int, end: int) -> int:
        """Index the records of a cut uncompressed chunk that were written completely.

        Returns the file offset after the last of them (0 when none could be used).
        """
        try:
            ref, records = self._chunk_header(body)
        except (struct.error, UnicodeDecodeError):
            return 0
        if ref.compression or records >= end:
            return 0  # a compressed chunk cannot be decoded from a prefix
        complete, _ = self.walk(records, min(end, records + ref.compressed_size), chunk=-1,
                                top_level=False)
        return complete if complete > records else 0


def _string(buf: bytes | mmap.mmap, pos: int) -> tuple[str, int]:
    (length,) = _U32.unpack_from(buf, pos)
    pos += 4
    if pos + length > len(buf):
        raise struct.error('string runs past its record')
    return bytes(buf[pos:pos + length]).decode(), pos + length


def _string_map(buf: bytes | mmap.mmap, pos: int) -> dict[str, str]:
    (length,) = _U32.unpack_from(buf, pos)
    pos += 4
    end = pos + length
    out = {}
    while pos < end:
        key, pos = _string(buf, pos)
        out[key], pos = _string(buf, pos)
    return out


def _zstd(compressed: bytes) -> bytes:
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
    return bytes(zstd.decompress(compressed))


def _lz4(compressed: bytes) -> bytes:
    from lz4.frame import decompress  # type: ignore[import-untyped]
    return bytes(decompress(compressed))


_CODECS = {'': bytes, 'zstd': _zstd, 'lz4': _lz4}


def _decompress(compressed: bytes, ref: _ChunkRef) -> bytes:
    """Decompress one chunk and check its size and CRC; ``ValueError`` when they disagree."""
    if ref.compression not in ('', 'zstd', 'lz4'):
        raise ValueError(f'unsupported chunk compression {ref.compression!r}')
    try:
        raw = _CODECS[ref.compression](compressed)
    except Exception as err:  # each codec has its own error types; all mean a damaged chunk here
        raise ValueError(f'{ref.compression} chunk does not decompress: {err}') from err
    if len(raw) != ref.uncompressed_size or (ref.crc and crc32(raw) != ref.crc):
        raise ValueError('chunk size or checksum mismatch')
    return raw
