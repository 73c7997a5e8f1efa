"""rosbag2 recordings in and out, as raw CDR bytes: the bag transport's byte source and sink.

Messages stay serialized here; turning bytes into typed samples is the msgs layer's job, so a bag
with a type this package cannot decode can still be listed, filtered and copied.

Reading goes through rosbags' storage readers, one per bag (or per storage file), merged here rather
than through ``AnyReader``: raw reading needs no typestore (``AnyReader`` refuses bags whose message
definitions are missing or mismatched), equal stamps get one order whatever the storage, and a
directory without ``metadata.yaml`` or an MCAP file that was cut off can still be read.

Writing produces rosbag2 metadata version 8, the newest whose QoS block ROS 2 Humble still parses
(version 9 changed it to a structured list).
"""

from __future__ import annotations

import heapq
import itertools
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, Protocol

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.metadata import parse_qos

from mmfusion_ros.errors import BagError
from mmfusion_ros.io.mcap_recovery import MCAP_MAGIC, RecoveredMcap, has_footer, recover_mcap

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.typesys.store import Typestore

__all__ = [
    'QOS_PRESETS',
    'STORAGES',
    'BagMessage',
    'BagReader',
    'BagWriter',
    'QosProfile',
    'TopicInfo',
    'TruncatedFile',
]

STORAGES = ('mcap', 'sqlite3')
_SUFFIX_STORAGE = {'.mcap': 'mcap', '.db3': 'sqlite3'}


class QosProfile(NamedTuple):
    """The QoS a publisher offered, as rosbag2 records it (the parts that decide compatibility)."""

    reliability: str  # 'reliable' | 'best_effort' (or 'system_default', 'unknown', 'best_available')
    durability: str  # 'volatile' | 'transient_local' (or the same extra values)
    history: str = 'keep_last'  # 'keep_last' | 'keep_all'
    depth: int = 10


# What each kind of topic offers when written by BagWriter. Sensors offer *reliable*: a reliable
# offer matches both reliable and best-effort subscribers, so a replay of the bag reaches every
# subscriber, whereas a best-effort offer is ignored by reliable ones. /tf_static is latched the way
# tf2's StaticTransformBroadcaster latches it: reliable, transient_local, keep_last 1.
QOS_PRESETS: dict[str, QosProfile] = {
    'default': QosProfile('reliable', 'volatile', 'keep_last', 10),
    'sensor_data': QosProfile('best_effort', 'volatile', 'keep_last', 5),
    'static': QosProfile('reliable', 'transient_local', 'keep_last', 1),
}

_STATIC_TOPICS = frozenset({'/tf_static'})


class BagMessage(NamedTuple):
    """One recorded message, still serialized."""

    topic: str
    msgtype: str  # e.g. 'sensor_msgs/msg/PointCloud2'
    stamp_ns: int  # when it was recorded (the bag's log time), not its header stamp
    raw: bytes  # CDR bytes, encapsulation header included
    bag_index: int  # which of BagReader.paths it came from


class TopicInfo(NamedTuple):
    """One topic summed over every bag opened together."""

    name: str
    msgtype: str
    count: int
    rate_hz: float  # (count - 1) / (last - first), 0.0 below two messages or over zero time
    qos: tuple[QosProfile, ...]  # one per distinct offering recorded; empty when none was
    first_ns: int  # 0 when the topic has no message
    last_ns: int


class TruncatedFile(NamedTuple):
    """An MCAP file that was cut off and read up to its last complete record."""

    path: Path
    file_size: int
    lost_bytes: int  # bytes after the last complete record (0 as well when cut between two records)
    messages_complete: bool  # the cut fell in the index after the data: no message is missing


@dataclass(frozen=True)
class _Connection:
    topic: str
    msgtype: str
    qos: tuple[QosProfile, ...]


class _Source(Protocol):
    """One storage (a bag directory, or one storage file) yielding ``(stamp, topic, msgtype, raw)``."""

    path: Path
    storage: str
    connections: list[_Connection]
    start_ns: int | None  # None when it holds no message
    end_ns: int | None

    def messages(self, topics: frozenset[str] | None) -> Iterator[tuple[int, str, str, bytes]]: ...

    def close(self) -> None: ...


class _RosbagsSource:
    """A bag directory with metadata.yaml, or a bare .mcap / .db3 file, through rosbags."""

    def __init__(self, path: Path, storage: str) -> None:
        self.path = path
        self.storage = storage
        reader = Reader(path)
        reader.open()
        try:
            self.connections = [
                _Connection(conn.topic, conn.msgtype, tuple(dict.fromkeys(
                    _qos_from_rosbags(q) for q in conn.ext.offered_qos_profiles)))
                for conn in reader.connections
            ]
            count = reader.message_count
            self.start_ns = reader.start_time if count else None
            self.end_ns = reader.end_time - 1 if count else None  # rosbags' end is exclusive
        except BaseException:
            reader.close()
            raise
        self.reader = reader

    def messages(self, topics: frozenset[str] | None) -> Iterator[tuple[int, str, str, bytes]]:
        wanted: list[Connection] = [c for c in self.reader.connections
                                    if topics is None or c.topic in topics]
        if not wanted:
            return
        for conn, stamp, raw in self.reader.messages(connections=wanted):
            yield stamp, conn.topic, conn.msgtype, raw

    def close(self) -> None:
        self.reader.close()


class _RecoveredSource:
    """The complete records of a cut MCAP file."""

    storage = 'mcap'

    def __init__(self, recovered: RecoveredMcap) -> None:
        self.path = recovered.path
        self.recovered = recovered
        self.by_channel: dict[int, _Connection] = {}
        for channel in recovered.channels.values():
            if channel.message_encoding != 'cdr':
                raise BagError(f'{recovered.path}: channel {channel.topic!r} is encoded as '
                               f'{channel.message_encoding!r}; only CDR is supported')
            qos = tuple(dict.fromkeys(_qos_from_rosbags(q) for q in parse_qos(channel.offered_qos)))
            self.by_channel[channel.id] = _Connection(channel.topic, channel.msgtype, qos)
        self.connections = list(self.by_channel.values())
        stamps = [ref.log_time for ref in recovered.messages if ref.channel_id in self.by_channel]
        self.start_ns = min(stamps) if stamps else None
        self.end_ns = max(stamps) if stamps else None

    def messages(self, topics: frozenset[str] | None) -> Iterator[tuple[int, str, str, bytes]]:
        ids = frozenset(cid for cid, conn in self.by_channel.items()
                        if topics is None or conn.topic in topics)
        for stamp, channel_id, raw in self.recovered.payloads(ids):
            conn = self.by_channel[channel_id]
            yield stamp, conn.topic, conn.msgtype, raw

    def close(self) -> None:
        """Nothing to release: the index lives in memory and each read opens the file for itself."""


class BagReader:
    """One or several rosbag2 recordings read as one, in recorded-time order.

    Each path is a bag directory (sqlite3 or mcap, with or without ``metadata.yaml``) or a bare
    ``.mcap`` / ``.db3`` file. Messages with equal stamps come in bag order, then topic name, then
    recorded order, so a bag reads the same in either storage.

    An MCAP file that was cut off (no footer) is refused unless ``recover=True``; then its complete
    records are read and the cut is reported in ``truncated``.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], *, recover: bool = False) -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.paths: tuple[Path, ...] = tuple(Path(p) for p in paths)
        if not self.paths:
            raise BagError('BagReader: no bag path given')
        self.recover = recover
        self._sources: list[tuple[int, _Source]] = []
        self._truncated: list[TruncatedFile] = []
        self._topics: list[TopicInfo] | None = None
        self._open = False

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> BagReader:
        if self._open:
            raise BagError(f'{self._name()}: already open')
        try:
            for index, path in enumerate(self.paths):
                for source in self._open_bag(path):
                    self._sources.append((index, source))
            self._check_types()
        except BaseException:
            self._close_sources()
            raise
        self._open = True
        return self

    def close(self) -> None:
        self._close_sources()
        self._open = False

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- what the recording holds ----------------------------------------------------------------

    @property
    def storage(self) -> str:
        """'sqlite3' or 'mcap', or 'mixed' when the bags opened together differ."""
        kinds = {source.storage for _, source in self._checked_sources()}
        return kinds.pop() if len(kinds) == 1 else 'mixed'

    @property
    def start_ns(self) -> int:
        """Stamp of the earliest message (0 for an empty recording)."""
        stamps = [s.start_ns for _, s in self._checked_sources() if s.start_ns is not None]
        return min(stamps) if stamps else 0

    @property
    def end_ns(self) -> int:
        """Stamp of the latest message (inclusive; 0 for an empty recording)."""
        stamps = [s.end_ns for _, s in self._checked_sources() if s.end_ns is not None]
        return max(stamps) if stamps else 0

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def truncated(self) -> tuple[TruncatedFile, ...]:
        """The cut MCAP files read with ``recover=True`` (empty when every file was complete)."""
        self._checked_sources()
        return tuple(self._truncated)

    @property
    def topics(self) -> list[TopicInfo]:
        """Every topic, sorted by name, with counts and rates over all bags.

        The first access reads the recording once: rates need each topic's first and last stamp,
        which rosbag2 metadata does not keep.
        """
        sources = self._checked_sources()
        if self._topics is None:
            self._topics = self._summarize(sources)
        return list(self._topics)

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) in stamp order across topics and bags.

        Asking for a topic no bag holds raises ``BagError`` naming the topics that exist, since a
        misspelt name would otherwise read as an empty stream.
        """
        sources = self._checked_sources()
        wanted: frozenset[str] | None = None
        if topics is not None:
            wanted = frozenset([topics] if isinstance(topics, str) else topics)
            known = {conn.topic for _, source in sources for conn in source.connections}
            if unknown := sorted(wanted - known):
                raise BagError(f'{self._name()}: no topic {", ".join(map(repr, unknown))}; the bag '
                               f'has {", ".join(sorted(known)) or "no topics"}')
        streams = [self._stream(index, source, wanted) for index, source in sources]
        # heapq.merge keeps stream order among equal stamps; the groupby pass then orders each
        # group of equal stamps by (bag, topic), stable within a topic.
        merged = heapq.merge(*streams, key=lambda message: message.stamp_ns)
        for _, group in itertools.groupby(merged, key=lambda message: message.stamp_ns):
            batch = list(group)
            if len(batch) > 1:
                batch.sort(key=lambda message: (message.bag_index, message.topic))
            yield from batch

    # -- internals -------------------------------------------------------------------------------

    def _name(self) -> str:
        return ', '.join(str(p) for p in self.paths)

    def _checked_sources(self) -> list[tuple[int, _Source]]:
        if not self._open:
            raise BagError(f'{self._name()}: bag is not open (use "with BagReader(...) as bag")')
        return self._sources

    def _close_sources(self) -> None:
        sources, self._sources = self._sources, []
        for _, source in sources:
            try:
                source.close()
            except Exception:  # closing a half-opened reader must not hide the original error
                pass
        self._truncated.clear()
        self._topics = None

    def _stream(self, index: int, source: _Source,
                wanted: frozenset[str] | None) -> Iterator[BagMessage]:
        path = source.path
        iterator = source.messages(wanted)
        while True:
            try:
                stamp, topic, msgtype, raw = next(iterator)
            except StopIteration:
                return
            except BagError:
                raise
            except Exception as err:  # storage backends leak apsw, struct, codec and OS errors
                raise BagError(f'{path}: cannot read messages: {_one_line(err)}') from err
            yield BagMessage(topic, msgtype, stamp, bytes(raw), index)

    def _open_bag(self, path: Path) -> list[_Source]:
        if not path.exists():
            raise BagError(f'{path}: no such bag (the path does not exist)')
        if path.is_dir():
            if (path / 'metadata.yaml').is_file():
                return self._open_directory(path)
            files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIX_STORAGE and p.is_file())
            if not files:
                raise BagError(f'{path}: not a rosbag2 bag (no metadata.yaml and no .mcap or .db3 '
                               'file in it)')
            # rosbag2 needs metadata.yaml; its content (topics, types, QoS) is also in the storage
            # files themselves, so read those directly rather than refusing the bag.
            return [self._open_file(p) for p in files]
        if path.suffix not in _SUFFIX_STORAGE:
            raise BagError(f'{path}: not a rosbag2 bag (expected a bag directory, a .mcap or a .db3 '
                           'file)')
        return [self._open_file(path)]

    def _open_directory(self, path: Path) -> list[_Source]:
        mcaps = sorted(p for p in path.glob('*.mcap') if p.is_file())
        for mcap in mcaps:
            self._check_mcap(mcap)
        if self.recover and any(not has_footer(m) for m in mcaps):
            return [self._open_file(m) for m in mcaps]  # metadata.yaml describes the uncut files
        return [self._rosbags_source(path, 'mcap' if mcaps else 'sqlite3')]

    def _open_file(self, path: Path) -> _Source:
        storage = _SUFFIX_STORAGE[path.suffix]
        if storage == 'mcap':
            self._check_mcap(path)
            if not has_footer(path):
                return self._recovered_source(path)
        return self._rosbags_source(path, storage)

    def _check_mcap(self, path: Path) -> None:
        """Refuse what is not MCAP, and a cut file unless recovery was asked for."""
        with path.open('rb') as bio:
            head = bio.read(len(MCAP_MAGIC))
        if head != MCAP_MAGIC:
            what = 'is empty' if not head else 'does not start with the MCAP magic'
            raise BagError(f'{path}: not an MCAP file (it {what})')
        if not has_footer(path) and not self.recover:
            raise BagError(f'{path}: MCAP file is truncated (no footer: the recording was cut off); '
                           'read it with recovery (--recover; recover=True) to keep the messages '
                           'written before the cut')

    def _rosbags_source(self, path: Path, storage: str) -> _Source:
        try:
            return _RosbagsSource(path, storage)
        except Exception as err:  # rosbags raises its own, apsw, YAML, struct and OS errors here
            raise BagError(f'{path}: cannot open {storage} bag: {_one_line(err)}') from err

    def _recovered_source(self, path: Path) -> _Source:
        try:
            recovered = recover_mcap(path)
            source = _RecoveredSource(recovered)
        except BagError:
            raise
        except Exception as err:  # OS errors, and the QoS YAML of a channel that does not parse
            raise BagError(f'{path}: cannot recover the cut MCAP file: {_one_line(err)}') from err
        self._truncated.append(TruncatedFile(path, recovered.file_size, recovered.lost_bytes,
                                             recovered.reached_data_end))
        return source

    def _check_types(self) -> None:
        types: dict[str, set[str]] = {}
        for _, source in self._sources:
            for conn in source.connections:
                types.setdefault(conn.topic, set()).add(conn.msgtype)
        if mixed := {topic: kinds for topic, kinds in types.items() if len(kinds) > 1}:
            topic, kinds = sorted(mixed.items())[0]
            raise BagError(f'{self._name()}: topic {topic!r} is recorded with several types '
                           f'({", ".join(sorted(kinds))}); one type per topic is supported')

    def _summarize(self, sources: list[tuple[int, _Source]]) -> list[TopicInfo]:
        msgtypes: dict[str, str] = {}
        qos: dict[str, dict[QosProfile, None]] = {}
        for _, source in sources:
            for conn in source.connections:
                msgtypes[conn.topic] = conn.msgtype
                qos.setdefault(conn.topic, {}).update(dict.fromkeys(conn.qos))
        counts = dict.fromkeys(msgtypes, 0)
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for index, source in sources:
            for message in self._stream(index, source, None):
                counts[message.topic] += 1
                first[message.topic] = min(first.get(message.topic, message.stamp_ns), message.stamp_ns)
                last[message.topic] = max(last.get(message.topic, message.stamp_ns), message.stamp_ns)
        infos = []
        for name in sorted(msgtypes):
            count, span = counts[name], last.get(name, 0) - first.get(name, 0)
            rate = (count - 1) / (span / 1e9) if count > 1 and span > 0 else 0.0
            infos.append(TopicInfo(name, msgtypes[name], count, rate, tuple(qos[name]),
                                   first.get(name, 0), last.get(name, 0)))
        return infos


class BagWriter:
    """Writes a rosbag2 bag of raw CDR messages, atomically.

    The bag is built under a temporary name beside ``path`` and renamed into place by ``close()``;
    an error (or an exception inside the ``with`` block) removes it, so ``path`` never holds half a
    bag. An existing bag at ``path`` is replaced only with ``overwrite=True``.

    ``typestore`` supplies the message definitions stored with each topic; by default it is the
    package's (``mmfusion_ros.msgs.typestore.typestore()``: ROS 2 Humble plus vision_msgs and
    radar_msgs).
    """

    def __init__(self, path: str | Path, storage: str = 'mcap', *, overwrite: bool = False,
                 typestore: Typestore | None = None) -> None:
        self.path = Path(path)
        if storage not in STORAGES:
            raise BagError(f'{self.path}: unknown storage {storage!r}; expected one of '
                           f'{", ".join(STORAGES)}')
        self.storage = storage
        self.overwrite = overwrite
        if self.path.exists() or self.path.is_symlink():
            if not overwrite:
                raise BagError(f'{self.path}: already exists; not overwriting (pass overwrite=True '
                               'to replace it)')
            if not _looks_like_bag(self.path):
                raise BagError(f'{self.path}: exists and is not a rosbag2 bag directory; refusing to '
                               'replace it')
        self._typestore = typestore
        self._writer: Writer | None = None
        self._workdir: Path | None = None
        self._connections: dict[str, tuple[Connection, str, QosProfile]] = {}
        self._count = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> BagWriter:
        if self._writer is not None:
            raise BagError(f'{self.path}: writer already open')
        if self._typestore is None:
            self._typestore = _package_typestore(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._workdir = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.', suffix='.partial',
                                                  dir=self.path.parent))
            plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
            writer = Writer(self._workdir / self.path.name, version=8, storage_plugin=plugin)
            writer.open()
        except Exception as err:
            self._remove_workdir()
            raise BagError(f'{self.path}: cannot create bag: {_one_line(err)}') from err
        self._writer = writer
        return self

    def close(self) -> None:
        """Finish the bag and move it into place."""
        writer = self._require_open()
        workdir = self._workdir
        assert workdir is not None
        try:
            writer.close()
            _replace_directory(workdir / self.path.name, self.path, workdir / 'replaced',
                               overwrite=self.overwrite)
        except BagError:
            self.abort()
            raise
        except Exception as err:
            self.abort()
            raise BagError(f'{self.path}: cannot finish bag: {_one_line(err)}') from err
        self._writer = None
        self._remove_workdir()

    def abort(self) -> None:
        """Drop everything written; ``path`` is left as it was."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # the files go anyway; the caller's error is the one that matters
                pass
        self._remove_workdir()

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- content ---------------------------------------------------------------------------------

    @property
    def message_count(self) -> int:
        return self._count

    def add_topic(self, name: str, msgtype: str, *, qos: str | QosProfile | None = None) -> None:
        """Declare ``name`` with its type and offered QoS before writing to it.

        ``qos`` is a preset name (``'default'``, ``'sensor_data'``, ``'static'``) or a
        ``QosProfile``; None picks ``'static'`` for /tf_static and ``'default'`` otherwise.
        /tf_static must be transient_local: tf2 listeners that start after the recording began
        get the static tree only through the latched sample.
        """
        writer = self._require_open()
        if not name.startswith('/') or name.endswith('/') or ' ' in name:
            raise BagError(f'{self.path}: invalid topic name {name!r} (expected an absolute name '
                           "such as '/lidar/points')")
        profile = _resolve_qos(self.path, name, qos)
        if name in self._connections:
            _, known_type, known_qos = self._connections[name]
            if (known_type, known_qos) == (msgtype, profile):
                return
            raise BagError(f'{self.path}: topic {name!r} already declared as {known_type} with '
                           f'{known_qos}; cannot redeclare it as {msgtype} with {profile}')
        typestore = self._typestore
        assert typestore is not None
        if msgtype not in typestore.fielddefs:
            raise BagError(f'{self.path}: unknown message type {msgtype!r} for topic {name!r} (not '
                           "in the typestore; names look like 'sensor_msgs/msg/PointCloud2')")
        try:
            connection = writer.add_connection(name, msgtype, typestore=typestore,
                                               offered_qos_profiles=[_qos_to_rosbags(profile)])
        except Exception as err:
            raise BagError(f'{self.path}: cannot add topic {name!r} ({msgtype}): '
                           f'{_one_line(err)}') from err
        self._connections[name] = (connection, msgtype, profile)

    def write(self, topic: str, stamp_ns: int, raw: bytes | bytearray | memoryview) -> None:
        """Append one serialized message; stamps need not arrive in order."""
        writer = self._require_open()
        if topic not in self._connections:
            raise BagError(f'{self.path}: topic {topic!r} was not declared with add_topic(); '
                           f'declared: {", ".join(sorted(self._connections)) or "none"}')
        try:
            stamp = int(stamp_ns.__index__())
        except (AttributeError, TypeError):
            raise BagError(f'{self.path}: {topic}: stamp_ns must be an integer count of '
                           f'nanoseconds, got {stamp_ns!r}') from None
        if not 0 <= stamp < 2**63:
            raise BagError(f'{self.path}: {topic}: stamp_ns {stamp} is outside [0, 2**63)')
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise BagError(f'{self.path}: {topic}: expected serialized bytes, got '
                           f'{type(raw).__name__}')
        head = bytes(raw[:4])
        if len(head) < 4 or head[:2] not in (b'\x00\x00', b'\x00\x01'):
            raise BagError(f'{self.path}: {topic}: data does not start with a CDR encapsulation '
                           f'header (got {head.hex() or "nothing"})')
        connection = self._connections[topic][0]
        try:
            writer.write(connection, stamp, bytes(raw))
        except Exception as err:
            raise BagError(f'{self.path}: {topic}: cannot write message: {_one_line(err)}') from err
        self._count += 1

    # -- internals -------------------------------------------------------------------------------

    def _require_open(self) -> Writer:
        if self._writer is None:
            raise BagError(f'{self.path}: writer is not open (use "with BagWriter(...) as bag")')
        return self._writer

    def _remove_workdir(self) -> None:
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _package_typestore(path: Path) -> Typestore:
    try:
        from mmfusion_ros.msgs.typestore import typestore
    except ImportError as err:
        raise BagError(f'{path}: no typestore given and mmfusion_ros.msgs.typestore is not '
                       f'available ({_one_line(err)})') from err
    return typestore()


def _replace_directory(built: Path, target: Path, aside: Path, *, overwrite: bool) -> None:
    """Rename ``built`` to ``target``; an existing ``target`` is moved to ``aside`` first and put
    back if the final rename fails, so no error path loses the bag that was there."""
    moved = False
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise BagError(f'{target}: appeared while writing; not overwriting')
        target.rename(aside)
        moved = True
    try:
        built.rename(target)
    except OSError:
        if moved:
            aside.rename(target)
        raise


def _looks_like_bag(path: Path) -> bool:
    """A directory holding only rosbag2 files: what ``overwrite=True`` may delete."""
    if not path.is_dir() or path.is_symlink():
        return False
    entries = list(path.iterdir())
    has_bag = any(e.name == 'metadata.yaml' or e.suffix in _SUFFIX_STORAGE for e in entries)
    return has_bag and all(e.is_file() for e in entries)


def _resolve_qos(path: Path, topic: str, qos: str | QosProfile | None) -> QosProfile:
    if qos is None:
        qos = 'static' if topic in _STATIC_TOPICS else 'default'
    if isinstance(qos, str):
        if qos not in QOS_PRESETS:
            raise BagError(f'{path}: {topic}: unknown QoS preset {qos!r}; expected one of '
                           f'{", ".join(QOS_PRESETS)} or a QosProfile')
        profile = QOS_PRESETS[qos]
    elif isinstance(qos, QosProfile):
        profile = qos
        _qos_to_rosbags(profile, path=path, topic=topic)  # validates the names
    else:
        raise BagError(f'{path}: {topic}: qos must be a preset name or a QosProfile, got '
                       f'{type(qos).__name__}')
    if topic in _STATIC_TOPICS and profile.durability != 'transient_local':
        raise BagError(f'{path}: {topic} must be offered transient_local (latched), got '
                       f'{profile.durability}')
    return profile


def _qos_from_rosbags(qos: Qos) -> QosProfile:
    return QosProfile(qos.reliability.name.lower(), qos.durability.name.lower(),
                      qos.history.name.lower(), int(qos.depth))


def _qos_to_rosbags(profile: QosProfile, *, path: Path | None = None, topic: str = '') -> Qos:
    try:
        reliability = QosReliability[profile.reliability.upper()]
        durability = QosDurability[profile.durability.upper()]
        history = QosHistory[profile.history.upper()]
    except (KeyError, AttributeError) as err:
        raise BagError(f'{path}: {topic}: invalid QoS {profile} ({_one_line(err)} is not a known '
                       'value)') from None
    if not isinstance(profile.depth, int) or profile.depth < 0:
        raise BagError(f'{path}: {topic}: invalid QoS depth {profile.depth!r}')
    never = QosTime(0, 0)  # what rosbag2 records for "not set"
    return Qos(history, profile.depth, reliability, durability, never, never, QosLiveliness.AUTOMATIC,
               never, False)


def _one_line(err: BaseException) -> str:
    """An error's text on one line (YAML and sqlite errors span several), with its type if empty."""
    text = ' '.join(str(err).split())
    return text or type(err).__name__
