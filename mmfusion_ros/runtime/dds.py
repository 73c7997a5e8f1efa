"""ROS 2 messages as raw CDR bytes over Cyclone DDS, on the wire as ``rmw_cyclonedds_cpp`` puts them.

A ROS 2 machine running ``rmw_cyclonedds_cpp`` on the same DDS domain (and network) sees our topics
and we see theirs, with no rclpy here:

- ROS topic ``/foo/bar`` is DDS topic ``rt/foo/bar``; type ``pkg/msg/Name`` is
  ``pkg::msg::dds_::Name_``, nested types likewise.
- The DDS types are final (not appendable) structs in XCDR1, i.e. plain little-endian CDR behind the
  4-byte encapsulation header ``00 01 00 00``. They are generated on first use from the typestore's
  definitions (by default ``mmfusion_ros.msgs.typestore``: ROS 2 Humble plus our vision_msgs and
  radar_msgs), so any type that typestore knows can be carried, and cached per bridge and type.
- Every reader and writer carries ``typehash=RIHS01_<64 hex>;`` in its USER_DATA QoS, as ROS 2 Iron
  and later do; the hash is rosbags' ``Typestore.hash_rihs01`` of the typestore's definition (a
  type whose definition changed between ROS distributions hashes as in the typestore's one).
- QoS is ROS 2's default profile: reliable (or best effort), volatile, keep last ``depth``, and the
  XCDR1 data representation.

Bytes: ``RawWriter.write_raw`` takes what rosbags' ``serialize_cdr`` or rclpy's
``serialize_message`` make; ``RawReader.take_raw`` returns, per sample, bytes identical to what
``serialize_cdr(msg, msgtype, little_endian=True)`` makes for the same message: the sample is
parsed into the generated type and written again, so the up to 3 bytes of trailing alignment
padding that DDS adds on the wire are gone. Parsing costs Python time per byte-array element
(about 0.1 s for a 2 MB PointCloud2 in and out on one core).

Configuration scope: a bridge creates its DDS domain from the XML it is given,
``cyclonedds.domain.Domain(domain_id, config)``, before it creates its participant on that domain.
The XML applies to that domain in this process only: no environment variable is read or set (a
``CYCLONEDDS_URI`` in the environment is not used for it), and child processes are not affected.
Cyclone keeps one such domain per id and process, so there is one open bridge per domain id and
process. ``LOOPBACK_CONFIG``, the default, keeps every packet on ``lo``: no multicast (so no
multicast discovery), unicast discovery to 127.0.0.1 only. Talking to another machine needs a
config naming its interface and peers.

Not provided: the ``ros_discovery_info`` topic that ties endpoints to node names (ROS 2 tools see
our endpoints without a node), services and actions, ``wstring``/``wchar`` fields.
"""

from __future__ import annotations

import keyword
import time
from typing import Any

from cyclonedds.core import (
    DDSException,
    Entity,
    InstanceState,
    Policy,
    Qos,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import Buffer, Endianness, IdlStruct, make_idl_struct
from cyclonedds.idl import types as idl
from cyclonedds.internal import InvalidSample
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration
from rosbags.interfaces import Nodetype
from rosbags.typesys.store import Typestore

from mmfusion_ros.errors import TransportError

__all__ = [
    'LOOPBACK_CONFIG',
    'DdsBridge',
    'IdlTypes',
    'RawReader',
    'RawWriter',
    'dds_topic_name',
    'dds_type_name',
    'type_hash_user_data',
]

LOOPBACK_CONFIG = """\
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces>
        <NetworkInterface name="lo" multicast="false"/>
      </Interfaces>
      <AllowMulticast>false</AllowMulticast>
    </General>
    <Discovery>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>32</MaxAutoParticipantIndex>
      <Peers>
        <Peer address="127.0.0.1"/>
      </Peers>
    </Discovery>
  </Domain>
</CycloneDDS>
"""
"""Cyclone DDS XML: interface ``lo`` only, multicast off, discovery by unicast to 127.0.0.1 only.

``MaxAutoParticipantIndex`` 32 lets up to 33 participants share the host on one domain (each takes
the next free participant index, and discovery probes the ports of indices 0..32).
"""

# ROS 2 .msg base types to IDL: char is uint8 and byte is octet, as rosidl maps them.
_PRIMITIVES: dict[str, Any] = {
    'bool': bool,
    'byte': idl.byte,
    'char': idl.uint8,
    'int8': idl.int8,
    'uint8': idl.uint8,
    'int16': idl.int16,
    'uint16': idl.uint16,
    'int32': idl.int32,
    'uint32': idl.uint32,
    'int64': idl.int64,
    'uint64': idl.uint64,
    'float32': idl.float32,
    'float64': idl.float64,
}
# cyclonedds' types.sequence accepts bounds up to 65535; the bound does not change the wire format.
_MAX_IDL_BOUND = 65535
# The CDR encapsulation identifiers ROS 2 uses: CDR_BE, CDR_LE (XCDR1, final structs).
_PLAIN_CDR = (b'\x00\x00', b'\x00\x01')
# DDS reads a serialized sample to its end, which may hold up to 3 bytes of alignment padding.
_MAX_PADDING = 3


def dds_topic_name(ros_topic: str) -> str:
    """``/foo/bar`` -> ``rt/foo/bar``: the DDS topic of a fully qualified ROS 2 topic name."""
    _check_topic(ros_topic)
    return 'rt' + ros_topic


def dds_type_name(msgtype: str) -> str:
    """``pkg/msg/Name`` -> ``pkg::msg::dds_::Name_``: the DDS type name of a ROS 2 message type."""
    parts = msgtype.split('/')
    if len(parts) != 3 or parts[1] != 'msg' or not all(_is_identifier(p) for p in parts):
        raise TransportError(f'message type {msgtype!r} is not of the form pkg/msg/Name')
    package, _, name = parts
    return f'{package}::msg::dds_::{name}_'


def type_hash_user_data(msgtype: str, store: Typestore) -> bytes:
    """``typehash=RIHS01_<64 hex>;``: the USER_DATA ROS 2 Iron and later put on each endpoint."""
    if msgtype not in store.fielddefs:
        raise TransportError(f'unknown message type {msgtype!r}')
    return f'typehash={store.hash_rihs01(msgtype)};'.encode('ascii')


def _is_identifier(token: str) -> bool:
    return token.isidentifier() and token.isascii()


def _check_topic(ros_topic: str) -> None:
    tokens = ros_topic.split('/')
    if not ros_topic.startswith('/') or not all(_is_identifier(t) for t in tokens[1:]):
        raise TransportError(
            f'topic {ros_topic!r} is not a fully qualified ROS 2 name '
            '(/token/token..., tokens of letters, digits and _, not starting with a digit)')


class IdlTypes:
    """Cyclone IDL structs generated from a typestore's definitions, one class per message type.

    Each ROS 2 message becomes a final struct named ``pkg::msg::dds_::Name_`` whose members are the
    message's fields in order: base types as their IDL primitives, ``string`` and ``string<=N>`` as
    (bounded) strings, ``T[N]`` as arrays, ``T[]`` and ``T[<=N]`` as (bounded) sequences and nested
    messages (``builtin_interfaces/Time`` among them) as their own structs. Made on first use.
    """

    def __init__(self, store: Typestore) -> None:
        self._store = store
        self._structs: dict[str, type[IdlStruct]] = {}

    def struct(self, msgtype: str) -> type[IdlStruct]:
        """The struct class of ``msgtype``; ``TransportError`` for unknown or unsupported types."""
        found = self._structs.get(msgtype)
        if found is None:
            found = self._structs[msgtype] = self._make_struct(msgtype)
        return found

    def _make_struct(self, msgtype: str) -> type[IdlStruct]:
        if msgtype not in self._store.fielddefs:
            raise TransportError(f'unknown message type {msgtype!r}')
        typename = dds_type_name(msgtype)
        members: dict[str, Any] = {}
        renamed: dict[str, dict[str, Any]] = {}
        for name, desc in self._store.fielddefs[msgtype][1]:
            attribute = f'{name}_' if keyword.iskeyword(name) else name
            if attribute != name:
                renamed[attribute] = {'name': name}
            members[attribute] = self._member(desc, f'{msgtype}.{name}')
        return make_idl_struct(typename.rsplit('::', 1)[1], typename, members, field_annotations=renamed)

    def _member(self, desc: tuple[int, Any], where: str) -> Any:
        kind, detail = desc
        if kind == Nodetype.ARRAY:
            element, length = detail
            return idl.array[self._element(element, where), length]
        if kind == Nodetype.SEQUENCE:
            element, bound = detail
            if 0 < bound <= _MAX_IDL_BOUND:
                return idl.sequence[self._element(element, where), bound]
            return idl.sequence[self._element(element, where)]
        return self._element(desc, where)

    def _element(self, desc: tuple[int, Any], where: str) -> Any:
        kind, detail = desc
        if kind == Nodetype.NAME:
            return self.struct(detail)
        if kind == Nodetype.BASE:
            base, bound = detail
            if base == 'string':
                return idl.bounded_str[bound] if bound else str
            if base in _PRIMITIVES:
                return _PRIMITIVES[base]
            raise TransportError(f'{where}: fields of type {base} are not supported over DDS')
        raise TransportError(f'{where}: unexpected field descriptor {desc!r}')


def _parse_cdr(struct: type[IdlStruct], raw: bytes | bytearray | memoryview) -> IdlStruct:
    """CDR bytes (4-byte header, then the payload) as a ``struct`` sample; ``ValueError`` if they are not."""
    data = bytes(raw)
    if len(data) < 4:
        raise ValueError(f'{len(data)} bytes, shorter than the 4-byte encapsulation header')
    if data[:2] not in _PLAIN_CDR:
        raise ValueError(f'encapsulation 0x{data[:2].hex()} is not plain CDR (0x0000 or 0x0001)')
    buffer = Buffer(data, align_offset=4)
    sample = struct.__idl__.deserialize(buffer)
    end = buffer.tell()
    if end > len(data):
        raise ValueError(f'{len(data)} bytes end inside the message, which needs at least {end}')
    if len(data) - end > _MAX_PADDING:
        raise ValueError(f'{len(data) - end} bytes left over after the message ({end} bytes)')
    return sample


def _endpoint_qos(reliable: bool, depth: int, user_data: bytes) -> Qos:
    reliability = (Policy.Reliability.Reliable(duration(milliseconds=100)) if reliable
                   else Policy.Reliability.BestEffort)
    return Qos(
        reliability,
        Policy.Durability.Volatile,
        Policy.History.KeepLast(depth),
        Policy.DataRepresentation(use_cdrv0_representation=True),
        Policy.Userdata(user_data),
    )


def _one_line(err: BaseException, limit: int = 160) -> str:
    """The error as one line, cut at ``limit`` characters (the binding quotes whole values)."""
    text = ' '.join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _delete(entity: Entity) -> None:
    """Delete a DDS entity now; cyclonedds deletes one only in ``__del__``, and only once."""
    entity.__del__()


def _wait_until(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


class RawWriter:
    """Writes serialized messages of one type to one topic; made by ``DdsBridge.writer``."""

    def __init__(self, topic: str, msgtype: str, struct: type[IdlStruct], writer: DataWriter) -> None:
        self.topic = topic
        self.msgtype = msgtype
        self._struct = struct
        self._writer: DataWriter | None = writer

    def write_raw(self, raw: bytes | bytearray | memoryview) -> None:
        """Publish one message given as CDR bytes; ``TransportError`` if they are not a ``msgtype``.

        The writer stays usable after an error.
        """
        writer = self._open()
        try:
            sample = _parse_cdr(self._struct, raw)
        except Exception as err:  # noqa: BLE001 - struct, unicode and index errors from the parser
            raise TransportError(
                f'{self.topic}: cannot read {len(raw)} bytes as {self.msgtype}: {_one_line(err)}') from err
        try:
            writer.write(sample)
        except Exception as err:  # noqa: BLE001 - a value over its bound (strings: in UTF-8 bytes), DDS codes
            raise TransportError(f'{self.topic}: cannot write {self.msgtype}: {_one_line(err)}') from err

    def subscriber_count(self) -> int:
        """How many readers (here or remote) this writer is matched with now."""
        return int(self._open().get_publication_matched_status().current_count)

    def wait_for_subscribers(self, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until at least ``count`` readers are matched; False if ``timeout_s`` passed first."""
        return _wait_until(lambda: self.subscriber_count() >= count, timeout_s)

    def _open(self) -> DataWriter:
        if self._writer is None:
            raise TransportError(f'{self.topic}: the writer for {self.msgtype} is closed')
        return self._writer

    def close(self) -> None:
        """Delete the DDS writer; later calls raise ``TransportError``. Safe to repeat."""
        if self._writer is not None:
            _delete(self._writer)
            self._writer = None


class RawReader:
    """Takes serialized messages of one type from one topic; made by ``DdsBridge.reader``.

    Samples that cannot be read as ``msgtype`` (a remote writer with a different definition under
    the same name) are dropped, counted in ``rejected`` and described in ``last_error``.
    """

    def __init__(self, topic: str, msgtype: str, reader: DataReader, participant: DomainParticipant) -> None:
        self.topic = topic
        self.msgtype = msgtype
        self.rejected = 0
        self.last_error = ''
        self._reader: DataReader | None = reader
        self._condition = ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
        self._waitset = WaitSet(participant)
        self._waitset.attach(self._condition)

    def take_raw(self, timeout_s: float = 0.0) -> list[bytes]:
        """Every message received and not yet taken, as CDR bytes, oldest first.

        With ``timeout_s`` > 0 it waits up to that long for the first message; it returns at once
        when messages are there, and an empty list when none came.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            messages = self._take_all()
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            self._waitset.wait(duration(seconds=remaining))

    def publisher_count(self) -> int:
        """How many writers (here or remote) this reader is matched with now."""
        return int(self._open().get_subscription_matched_status().current_count)

    def wait_for_publishers(self, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until at least ``count`` writers are matched; False if ``timeout_s`` passed first."""
        return _wait_until(lambda: self.publisher_count() >= count, timeout_s)

    def _take_all(self) -> list[bytes]:
        reader = self._open()
        messages = []
        while True:
            # One at a time: the binding parses a batch as a whole, so one bad sample would lose it.
            try:
                taken = reader.take(N=1)
            except DDSException as err:
                raise TransportError(f'{self.topic}: cannot take {self.msgtype}: {_one_line(err)}') from err
            except Exception as err:  # noqa: BLE001 - the sample is taken, its bytes do not parse
                self.rejected += 1
                self.last_error = f'{self.topic}: dropped a sample that is not a {self.msgtype}: {_one_line(err)}'
                continue
            if not taken:
                return messages
            sample = taken[0]
            if isinstance(sample, InvalidSample):  # a writer went away: no data
                continue
            messages.append(sample.serialize(endianness=Endianness.Little))

    def _open(self) -> DataReader:
        if self._reader is None:
            raise TransportError(f'{self.topic}: the reader for {self.msgtype} is closed')
        return self._reader

    def close(self) -> None:
        """Delete the DDS reader and what waits on it; later calls raise ``TransportError``."""
        if self._reader is not None:
            self._waitset.detach(self._condition)
            _delete(self._waitset)
            _delete(self._condition)
            _delete(self._reader)
            self._reader = None


class DdsBridge:
    """One DDS participant on ``domain_id``, configured by ``config`` (XML), making raw readers/writers.

    ``typestore`` (a rosbags ``Typestore``) defines the message types; ``None`` means ours,
    ``mmfusion_ros.msgs.typestore.typestore()``. Use it as a context manager or call ``close``.
    """

    def __init__(self, domain_id: int = 0, config: str = LOOPBACK_CONFIG, typestore: Typestore | None = None) -> None:
        if isinstance(domain_id, bool) or not isinstance(domain_id, int) or not 0 <= domain_id <= 232:
            raise TransportError(f'DDS domain id {domain_id!r} is not an integer in 0..232')
        if typestore is None:
            from mmfusion_ros.msgs.typestore import typestore as default_typestore

            typestore = default_typestore()
        self.domain_id = domain_id
        self._store = typestore
        self._types = IdlTypes(typestore)
        self._topics: dict[str, tuple[str, Topic]] = {}
        self._endpoints: list[RawWriter | RawReader] = []
        try:
            self._domain: Domain | None = Domain(domain_id, config)
        except DDSException as err:
            raise TransportError(
                f'DDS domain {domain_id}: cannot create it from the given config (invalid XML, or the domain '
                f'is already open in this process): {_one_line(err)}') from err
        try:
            self._participant: DomainParticipant | None = DomainParticipant(domain_id)
        except DDSException as err:
            _delete(self._domain)
            self._domain = None
            raise TransportError(f'DDS domain {domain_id}: cannot create a participant: {_one_line(err)}') from err

    def writer(self, topic: str, msgtype: str, *, reliable: bool = True, depth: int = 10) -> RawWriter:
        """A writer of ``msgtype`` messages on ROS topic ``topic``, QoS as ROS 2's default profile."""
        participant, struct, dds_topic, qos = self._endpoint_parts(topic, msgtype, reliable, depth)
        try:
            writer = DataWriter(participant, dds_topic, qos)
        except DDSException as err:
            raise TransportError(f'{topic}: cannot create a writer for {msgtype}: {_one_line(err)}') from err
        endpoint = RawWriter(topic, msgtype, struct, writer)
        self._endpoints.append(endpoint)
        return endpoint

    def reader(self, topic: str, msgtype: str, *, reliable: bool = True, depth: int = 10) -> RawReader:
        """A reader of ``msgtype`` messages on ROS topic ``topic``, keeping the last ``depth`` untaken."""
        participant, _, dds_topic, qos = self._endpoint_parts(topic, msgtype, reliable, depth)
        try:
            reader = DataReader(participant, dds_topic, qos)
        except DDSException as err:
            raise TransportError(f'{topic}: cannot create a reader for {msgtype}: {_one_line(err)}') from err
        endpoint = RawReader(topic, msgtype, reader, participant)
        self._endpoints.append(endpoint)
        return endpoint

    def close(self) -> None:
        """Delete every reader, writer and topic, the participant and the domain; safe to repeat."""
        for endpoint in reversed(self._endpoints):
            endpoint.close()
        self._endpoints.clear()
        for _, dds_topic in self._topics.values():
            _delete(dds_topic)
        self._topics.clear()
        if self._participant is not None:
            _delete(self._participant)
            self._participant = None
        if self._domain is not None:
            _delete(self._domain)
            self._domain = None

    def __enter__(self) -> DdsBridge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _endpoint_parts(
        self, topic: str, msgtype: str, reliable: bool, depth: int,
    ) -> tuple[DomainParticipant, type[IdlStruct], Topic, Qos]:
        if self._participant is None:
            raise TransportError(f'{topic}: the DDS bridge on domain {self.domain_id} is closed')
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise TransportError(f'{topic}: history depth {depth!r} is not a positive integer')
        name = dds_topic_name(topic)
        try:
            struct = self._types.struct(msgtype)
            user_data = type_hash_user_data(msgtype, self._store)
        except TransportError as err:
            raise TransportError(f'{topic}: {err}') from err
        known = self._topics.get(name)
        if known is None:
            try:
                known = self._topics[name] = (msgtype, Topic(self._participant, name, struct))
            except Exception as err:  # noqa: BLE001 - DDS return codes, type information the binding rejects
                raise TransportError(f'{topic}: cannot create the DDS topic for {msgtype}: {_one_line(err)}') from err
        elif known[0] != msgtype:
            raise TransportError(f'{topic}: already carries {known[0]} in this bridge, not {msgtype}')
        return self._participant, struct, known[1], _endpoint_qos(reliable, depth, user_data)
