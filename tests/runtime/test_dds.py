"""DdsBridge: ROS 2 names, loopback-only config, type hashes, and CDR bytes in and out, bit for bit.

Every bridge here uses LOOPBACK_CONFIG (interface lo, no multicast, peer 127.0.0.1), a domain id
drawn per test from 100..200 and topic names with a per-test suffix, so tests running beside each
other on this host do not hear one another, and nothing leaves the machine.
"""

from __future__ import annotations

import random
import re
import struct
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication, BuiltinTopicDcpsSubscription
from cyclonedds.core import Policy
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import Endianness
from cyclonedds.pub import DataWriter
from cyclonedds.topic import Topic
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from mmfusion_ros.errors import MmfusionError, TransportError
from mmfusion_ros.msgs.typestore import typestore
from mmfusion_ros.runtime.dds import (
    LOOPBACK_CONFIG,
    DdsBridge,
    IdlTypes,
    RawReader,
    dds_topic_name,
    dds_type_name,
    type_hash_user_data,
)

REPO = Path(__file__).resolve().parents[2]
STORE = typestore()
# Generous: discovery on a loaded 2-core machine can take seconds; no test asserts a duration.
WAIT_S = 30.0

# --- example messages for any type the typestore knows -----------------------------------------

# rosbags holds byte as int8 and char as uint8 (the wire is one byte either way).
_DTYPES = {
    'bool': np.bool_, 'byte': np.int8, 'char': np.uint8, 'int8': np.int8, 'uint8': np.uint8,
    'int16': np.int16, 'uint16': np.uint16, 'int32': np.int32, 'uint32': np.uint32,
    'int64': np.int64, 'uint64': np.uint64, 'float32': np.float32, 'float64': np.float64,
}
_TEXT = list('aZ_9 .äß€😀')


def _scalar(base: str, bound: int, rng: np.random.Generator) -> Any:
    if base == 'string':
        if bound:  # the bound counts UTF-8 bytes (DDS checks it so), so stay ASCII
            return ''.join(rng.choice(_TEXT[:5], size=int(rng.integers(0, bound + 1))))
        return ''.join(rng.choice(_TEXT, size=int(rng.integers(0, 8))))
    if base == 'bool':
        return bool(rng.integers(2))
    dtype = np.dtype(_DTYPES[base])
    if dtype.kind == 'f':
        return float(dtype.type(rng.standard_normal() * 1000.0))
    info = np.iinfo(dtype)
    return int(rng.integers(info.min, info.max, endpoint=True, dtype=np.uint64 if info.min == 0 else np.int64))


def _many(desc: tuple[int, Any], count: int, store: Typestore, rng: np.random.Generator, length: int) -> Any:
    kind, detail = desc
    if kind == Nodetype.BASE and detail[0] != 'string':
        return np.array([_scalar(detail[0], detail[1], rng) for _ in range(count)], dtype=_DTYPES[detail[0]])
    return [_one(desc, store, rng, length) for _ in range(count)]


def _one(desc: tuple[int, Any], store: Typestore, rng: np.random.Generator, length: int) -> Any:
    kind, detail = desc
    if kind == Nodetype.NAME:
        return example(detail, store, rng, length)
    return _scalar(detail[0], detail[1], rng)


def example(msgtype: str, store: Typestore = STORE, rng: np.random.Generator | None = None,
            length: int = 3) -> Any:
    """A ``msgtype`` message with pseudo-random values in every field, ``length`` items per sequence."""
    rng = np.random.default_rng(7) if rng is None else rng
    fields = {}
    for name, (kind, detail) in store.fielddefs[msgtype][1]:
        if kind == Nodetype.ARRAY:
            fields[name] = _many(detail[0], detail[1], store, rng, length)
        elif kind == Nodetype.SEQUENCE:
            fields[name] = _many(detail[0], min(length, detail[1]) if detail[1] else length, store, rng, length)
        else:
            fields[name] = _one((kind, detail), store, rng, length)
    return store.types[msgtype](**fields)


def cdr(msg: Any, msgtype: str, store: Typestore = STORE) -> bytes:
    return bytes(store.serialize_cdr(msg, msgtype, little_endian=True))


def pointcloud(points: int, seed: int = 0) -> bytes:
    """A PointCloud2 of ``points`` x, y, z, intensity points plus one byte: its length is not a multiple of 4."""
    types = STORE.types
    rng = np.random.default_rng(seed)
    fields = [types['sensor_msgs/msg/PointField'](name=name, offset=4 * i, datatype=7, count=1)
              for i, name in enumerate(('x', 'y', 'z', 'intensity'))]
    data = rng.integers(0, 256, points * 16 + 1, dtype=np.uint8)
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=1_700_000_000 + seed, nanosec=123_456_789), frame_id='lidar_top')
    msg = types['sensor_msgs/msg/PointCloud2'](
        header=header, height=1, width=points, fields=fields, is_bigendian=False, point_step=16,
        row_step=16 * points, data=data, is_dense=True)
    return cdr(msg, 'sensor_msgs/msg/PointCloud2')


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def domain_id() -> int:
    return random.randint(100, 200)


@pytest.fixture
def prefix() -> str:
    """A topic namespace of this test alone."""
    return f'/mmfusion_test_{uuid.uuid4().hex[:12]}'


@pytest.fixture
def bridge(domain_id: int):
    with DdsBridge(domain_id) as opened:
        yield opened


def _connected(bridge: DdsBridge, topic: str, msgtype: str, **qos: Any):
    writer = bridge.writer(topic, msgtype, **qos)
    reader = bridge.reader(topic, msgtype, **qos)
    assert writer.wait_for_subscribers(1, WAIT_S), f'{topic}: writer never matched the reader'
    assert reader.wait_for_publishers(1, WAIT_S), f'{topic}: reader never matched the writer'
    return writer, reader


def _take(reader: RawReader, count: int) -> list[bytes]:
    received: list[bytes] = []
    deadline = time.monotonic() + WAIT_S
    while len(received) < count and time.monotonic() < deadline:
        received += reader.take_raw(timeout_s=1.0)
    return received


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(('ros', 'dds'), [
    ('/foo/bar', 'rt/foo/bar'),
    ('/tf', 'rt/tf'),
    ('/sensing/lidar/top/pointcloud_raw_ex', 'rt/sensing/lidar/top/pointcloud_raw_ex'),
    ('/_private/x1', 'rt/_private/x1'),
])
def test_topic_names_get_the_rt_prefix(ros: str, dds: str) -> None:
    assert dds_topic_name(ros) == dds


@pytest.mark.parametrize('bad', ['foo/bar', '/foo/', '/foo//bar', '/', '', '/1lidar', '/a-b', '/~/x', '/tópico'])
def test_topic_names_that_are_not_fully_qualified_are_rejected(bad: str) -> None:
    with pytest.raises(TransportError, match=rf'^topic {re.escape(repr(bad))} is not a fully qualified ROS 2 name'):
        dds_topic_name(bad)


@pytest.mark.parametrize(('msgtype', 'dds'), [
    ('std_msgs/msg/String', 'std_msgs::msg::dds_::String_'),
    ('sensor_msgs/msg/PointCloud2', 'sensor_msgs::msg::dds_::PointCloud2_'),
    ('vision_msgs/msg/Detection3DArray', 'vision_msgs::msg::dds_::Detection3DArray_'),
])
def test_type_names_follow_rmw(msgtype: str, dds: str) -> None:
    assert dds_type_name(msgtype) == dds


@pytest.mark.parametrize('bad', ['sensor_msgs/PointCloud2', 'std_srvs/srv/Trigger', 'a/msg/b/c', 'pkg/msg/'])
def test_type_names_not_of_a_message_are_rejected(bad: str) -> None:
    with pytest.raises(TransportError, match=rf'^message type {re.escape(repr(bad))} is not of the form pkg/msg/Name$'):
        dds_type_name(bad)


def test_nested_types_are_named_and_shaped_as_rmw_does() -> None:
    types = IdlTypes(STORE)
    cloud = types.struct('sensor_msgs/msg/PointCloud2')
    header = cloud.__annotations__['header']
    assert cloud.__idl_typename__ == 'sensor_msgs::msg::dds_::PointCloud2_'
    assert header.__idl_typename__ == 'std_msgs::msg::dds_::Header_'
    assert header.__annotations__['stamp'].__idl_typename__ == 'builtin_interfaces::msg::dds_::Time_'
    assert list(cloud.__annotations__) == [name for name, _ in STORE.fielddefs['sensor_msgs/msg/PointCloud2'][1]]
    # Final, not appendable or mutable, so the binding's default representation is XCDR1 (plain CDR).
    for generated in (cloud, header):
        assert generated.__idl_annotations__.get('extensibility', 'final') == 'final'
        generated.__idl__.populate()
        assert generated.__idl__.default_version == 1
    assert types.struct('sensor_msgs/msg/PointCloud2') is cloud, 'generated types are cached'


def test_unknown_and_unsupported_types_are_rejected() -> None:
    with pytest.raises(TransportError, match=r"^unknown message type 'nope_msgs/msg/Nope'$"):
        IdlTypes(STORE).struct('nope_msgs/msg/Nope')
    store = get_typestore(Stores.ROS2_HUMBLE)  # .msg files cannot say wstring to rosbags; IDL can
    store.register(get_types_from_idl('module mmfusion_test { module msg { struct Wide { wstring text; }; }; };'))
    with pytest.raises(TransportError, match=r'^mmfusion_test/msg/Wide.text: fields of type wstring are not supported'):
        IdlTypes(store).struct('mmfusion_test/msg/Wide')


# --- type hashes ------------------------------------------------------------------------------------

# RIHS01 values published for ROS 2 (REP-2016 examples for /chatter, and golden tests checked against
# rmw_zenoh_cpp on Jazzy); these messages did not change from Humble to Jazzy.
KNOWN_RIHS01 = {
    'std_msgs/msg/String': 'RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18',
    'std_msgs/msg/Header': 'RIHS01_f49fb3ae2cf070f793645ff749683ac6b06203e41c891e17701b1cb597ce6a01',
    'geometry_msgs/msg/PoseStamped': 'RIHS01_10f3786d7d40fd2b54367835614bff85d4ad3b5dab62bf8bca0cc232d73b4cd8',
    'sensor_msgs/msg/Imu': 'RIHS01_7d9a00ff131080897a5ec7e26e315954b8eae3353c3f995c55faf71574000b5b',
}


@pytest.mark.parametrize(('msgtype', 'rihs01'), sorted(KNOWN_RIHS01.items()))
def test_type_hash_user_data_matches_ros2(msgtype: str, rihs01: str) -> None:
    assert type_hash_user_data(msgtype, STORE) == f'typehash={rihs01};'.encode()


@pytest.mark.parametrize('msgtype', ['sensor_msgs/msg/PointCloud2', 'vision_msgs/msg/Detection3DArray'])
def test_type_hash_user_data_format(msgtype: str) -> None:
    assert re.fullmatch(rb'typehash=RIHS01_[0-9a-f]{64};', type_hash_user_data(msgtype, STORE))
    with pytest.raises(TransportError, match=r"^unknown message type 'x/msg/Y'$"):
        type_hash_user_data('x/msg/Y', STORE)


def _endpoints(participant: DomainParticipant, builtin_topic: Any, dds_topics: set[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    reader = BuiltinDataReader(participant, builtin_topic)
    deadline = time.monotonic() + WAIT_S
    while set(found) != dds_topics and time.monotonic() < deadline:
        for endpoint in reader.take(N=100):
            if endpoint.topic_name in dds_topics:
                found[endpoint.topic_name] = endpoint
        time.sleep(0.05)
    return found


def test_endpoints_announce_names_type_hash_and_qos(bridge: DdsBridge, domain_id: int, prefix: str) -> None:
    topics = {f'{prefix}/chatter': 'std_msgs/msg/String', f'{prefix}/points': 'sensor_msgs/msg/PointCloud2'}
    for topic, msgtype in topics.items():
        bridge.writer(topic, msgtype)
        bridge.reader(topic, msgtype, reliable=False, depth=3)
    # A second participant in the same domain (the bridge's, so the same config) reads what discovery says.
    observer = DomainParticipant(domain_id)
    try:
        expected = {dds_topic_name(topic) for topic in topics}
        publications = _endpoints(observer, BuiltinTopicDcpsPublication, expected)
        subscriptions = _endpoints(observer, BuiltinTopicDcpsSubscription, expected)
    finally:
        observer.__del__()
    assert set(publications) == set(subscriptions) == expected
    for topic, msgtype in topics.items():
        user_data = f'typehash={STORE.hash_rihs01(msgtype)};'.encode()
        pub, sub = publications[dds_topic_name(topic)], subscriptions[dds_topic_name(topic)]
        assert pub.type_name == sub.type_name == dds_type_name(msgtype)
        assert pub.qos[Policy.Userdata].data == sub.qos[Policy.Userdata].data == user_data
        assert pub.qos[Policy.DataRepresentation] == Policy.DataRepresentation(use_cdrv0_representation=True)
        assert pub.qos[Policy.Durability] == Policy.Durability.Volatile
        assert pub.qos[Policy.History] == Policy.History.KeepLast(10)
        assert isinstance(pub.qos[Policy.Reliability], Policy.Reliability.Reliable)
        assert sub.qos[Policy.Reliability] == Policy.Reliability.BestEffort
        assert sub.qos[Policy.History] == Policy.History.KeepLast(3)
    assert b'RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18' in \
        publications[dds_topic_name(f'{prefix}/chatter')].qos[Policy.Userdata].data


# --- configuration ---------------------------------------------------------------------------------

NS = {'c': 'https://cdds.io/config'}


def test_loopback_config_names_lo_only_without_multicast() -> None:
    root = ET.fromstring(LOOPBACK_CONFIG)
    domain = root.find('c:Domain', NS)
    assert domain is not None and domain.get('Id') == 'any'
    interfaces = root.findall('.//c:Interfaces/*', NS)
    assert [(i.tag, i.get('name'), i.get('multicast')) for i in interfaces] == [
        ('{https://cdds.io/config}NetworkInterface', 'lo', 'false')]
    assert [e.text for e in root.iter('{https://cdds.io/config}AllowMulticast')] == ['false']
    assert [p.get('address') for p in root.findall('.//c:Discovery/c:Peers/c:Peer', NS)] == ['127.0.0.1']
    assert root.find('.//c:Discovery/c:MaxAutoParticipantIndex', NS).text == '32'
    # Nothing that would add a route elsewhere: no multicast addresses, no other peers or interfaces.
    assert not [e for e in root.iter() if 'Multicast' in e.tag and 'AllowMulticast' not in e.tag]


def test_loopback_config_is_what_cyclone_uses_whatever_the_environment_says(
        domain_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A CYCLONEDDS_URI asking for multicast and a different participant index limit must not leak in.
    # It names the lo interface itself, so even a bridge that did read it would stay on this machine.
    monkeypatch.setenv('CYCLONEDDS_URI', '<CycloneDDS><Domain><General><Interfaces><NetworkInterface name="lo"/>'
                       '</Interfaces><AllowMulticast>true</AllowMulticast>'
                       '</General><Discovery><MaxAutoParticipantIndex>5</MaxAutoParticipantIndex></Discovery>'
                       '</Domain></CycloneDDS>')
    trace = tmp_path / 'cyclone.log'
    traced = LOOPBACK_CONFIG.replace(
        '</Domain>', f'<Tracing><Verbosity>config</Verbosity><OutputFile>{trace}</OutputFile></Tracing></Domain>')
    with DdsBridge(domain_id, traced):
        pass
    log = trace.read_text()
    selected = re.search(r'selected interfaces: (.*)', log)
    assert selected, 'cyclone did not log its interface choice'
    assert re.findall(r'(\S+) \(index', selected.group(1)) == ['lo']
    assert 'disabling multicast on interface lo' in log
    assert re.search(r'Domain/General/AllowMulticast/#text: false \{1\}', log)
    assert re.search(r'Domain/Discovery/MaxAutoParticipantIndex/#text: 32 \{1\}', log)
    assert re.search(r'Domain/Discovery/Peers/Peer\[@Address\]: 127\.0\.0\.1 \{1\}', log)


def test_bad_domains_and_configs_are_one_line_transport_errors(domain_id: int) -> None:
    with pytest.raises(TransportError, match=r"^DDS domain id 300 is not an integer in 0\.\.232$"):
        DdsBridge(300)
    with pytest.raises(TransportError, match=rf'^DDS domain {domain_id}: cannot create it from the given config'):
        DdsBridge(domain_id, '<CycloneDDS><Domain><General><NoSuchSetting>1</NoSuchSetting>')
    with DdsBridge(domain_id), pytest.raises(TransportError, match=r'already open in this process') as err:
        DdsBridge(domain_id)
    assert '\n' not in str(err.value) and isinstance(err.value, MmfusionError)
    with DdsBridge(domain_id) as again:  # the closed bridge gave the domain back
        assert again.domain_id == domain_id


# --- bytes round trip ------------------------------------------------------------------------------

ROUND_TRIP_TYPES = [
    'sensor_msgs/msg/CompressedImage',
    'sensor_msgs/msg/CameraInfo',
    'tf2_msgs/msg/TFMessage',
    'vision_msgs/msg/Detection3DArray',
    'diagnostic_msgs/msg/DiagnosticArray',
    'visualization_msgs/msg/MarkerArray',
    'std_msgs/msg/String',
]


def test_every_typestore_type_reads_and_writes_as_rosbags_does() -> None:
    # Without DDS: the generated struct parses rosbags' bytes and writes the same bytes, for all types.
    types = IdlTypes(STORE)
    rng = np.random.default_rng(11)
    differ = []
    for msgtype in sorted(STORE.fielddefs):
        raw = cdr(example(msgtype, rng=rng, length=2), msgtype)
        if types.struct(msgtype).deserialize(raw).serialize(endianness=Endianness.Little) != raw:
            differ.append(msgtype)
    assert len(STORE.fielddefs) > 150
    assert differ == []


@pytest.mark.parametrize('msgtype', ROUND_TRIP_TYPES)
def test_bytes_cross_dds_bit_identical(bridge: DdsBridge, prefix: str, msgtype: str) -> None:
    writer, reader = _connected(bridge, f'{prefix}/topic', msgtype, depth=5)
    sent = [cdr(example(msgtype, rng=np.random.default_rng(seed), length=seed), msgtype) for seed in (0, 1, 4)]
    for raw in sent:
        writer.write_raw(raw)
    received = _take(reader, len(sent))
    assert received == sent
    assert all(raw[:4] == b'\x00\x01\x00\x00' for raw in received)  # CDR_LE: XCDR1, final
    assert reader.rejected == 0


def test_pointcloud_with_data_crosses_dds_bit_identical(bridge: DdsBridge, prefix: str) -> None:
    writer, reader = _connected(bridge, f'{prefix}/points', 'sensor_msgs/msg/PointCloud2', depth=3)
    sent = [pointcloud(30_000, seed=1), pointcloud(0, seed=2), pointcloud(7, seed=3)]
    assert len(sent[0]) > 480_000 and len(sent[0]) % 4 != 0
    for raw in sent:
        writer.write_raw(raw)
    received = _take(reader, len(sent))
    assert received == sent
    msg = STORE.deserialize_cdr(received[0], 'sensor_msgs/msg/PointCloud2')
    assert (msg.width, msg.header.frame_id, len(msg.data)) == (30_000, 'lidar_top', 480_001)


ALL_KINDS = """\
bool flag
byte octet
char letter
int8 i8
uint8 u8
int16 i16
uint16 u16
int32 i32
uint32 u32
int64 i64
uint64 u64
float32 f32
float64 f64
string text
string<=5 short_text
builtin_interfaces/Time stamp
builtin_interfaces/Duration span
int32[<=4] bounded_ints
uint8[3] three_bytes
float64[4] four_doubles
bool[2] two_flags
string[2] two_texts
string<=3[] short_texts
geometry_msgs/Point[2] two_points
geometry_msgs/Point[] points
geometry_msgs/Point[<=2] few_points
float32[] no_floats
"""


def test_any_type_a_typestore_knows_crosses_dds(domain_id: int, prefix: str) -> None:
    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg(ALL_KINDS, 'mmfusion_test/msg/AllKinds'))
    msgtype = 'mmfusion_test/msg/AllKinds'
    sent = []
    for seed, length in ((0, 0), (1, 1), (2, 2), (3, 5)):
        msg = example(msgtype, store, np.random.default_rng(seed), length)
        sent.append(cdr(msg, msgtype, store))
    with DdsBridge(domain_id, typestore=store) as bridge:
        writer, reader = _connected(bridge, f'{prefix}/all_kinds', msgtype)
        for raw in sent:
            writer.write_raw(raw)
        received = _take(reader, len(sent))
    assert received == sent
    assert re.fullmatch(rb'typehash=RIHS01_[0-9a-f]{64};', type_hash_user_data(msgtype, store))


def test_wire_bytes_are_rosbags_bytes_padded_to_four(bridge: DdsBridge, domain_id: int, prefix: str) -> None:
    # What DDS actually carries, seen by a plain cyclonedds reader: the same bytes plus alignment zeros.
    from cyclonedds._clayer import ddspy_take
    from cyclonedds.core import InstanceState, SampleState, ViewState
    from cyclonedds.sub import DataReader

    topic = f'{prefix}/chatter'
    raw = cdr(STORE.types['std_msgs/msg/String'](data='wire'), 'std_msgs/msg/String')
    writer = bridge.writer(topic, 'std_msgs/msg/String')
    observer = DomainParticipant(domain_id)
    try:
        string_type = IdlTypes(STORE).struct('std_msgs/msg/String')
        plain = DataReader(observer, Topic(observer, dds_topic_name(topic), string_type))
        assert writer.wait_for_subscribers(1, WAIT_S)
        writer.write_raw(raw)
        deadline, taken = time.monotonic() + WAIT_S, []
        while not taken and time.monotonic() < deadline:
            taken = ddspy_take(plain._ref, SampleState.Any | ViewState.Any | InstanceState.Any, 1)
            time.sleep(0.02)
    finally:
        observer.__del__()
    assert len(taken) == 1
    wire = taken[0][0]
    assert len(raw) % 4 != 0 and len(wire) % 4 == 0
    assert wire == raw + b'\x00' * (len(wire) - len(raw))
    assert STORE.deserialize_cdr(wire, 'std_msgs/msg/String').data == 'wire'


# --- errors ----------------------------------------------------------------------------------------

GOOD = cdr(STORE.types['std_msgs/msg/String'](data='still here'), 'std_msgs/msg/String')


@pytest.mark.parametrize(('bad', 'reason'), [
    (b'', r'0 bytes, shorter than the 4-byte encapsulation header'),
    (b'\x00\x01\x00', r'3 bytes, shorter than the 4-byte encapsulation header'),
    (GOOD[:-3], r'unpack_from requires'),
    (GOOD + b'\x00' * 4, r'4 bytes left over after the message \(19 bytes\)'),
    (b'\x00\x07\x00\x00' + GOOD[4:], r'encapsulation 0x0007 is not plain CDR'),
    (b'\x00\x01\x00\x00\xff\xff\xff\x7f', r'unpack_from requires'),
    (b'\x00\x01\x00\x00\x03\x00\x00\x00\xff\xfe\x00', r"'utf-8' codec can't decode"),
])
def test_malformed_bytes_raise_and_the_writer_keeps_working(
        bridge: DdsBridge, prefix: str, bad: bytes, reason: str) -> None:
    topic = f'{prefix}/chatter'
    writer, reader = _connected(bridge, topic, 'std_msgs/msg/String')
    with pytest.raises(TransportError, match=rf'^{topic}: cannot read {len(bad)} bytes as std_msgs/msg/String: {reason}'
                       ) as err:
        writer.write_raw(bad)
    assert '\n' not in str(err.value)
    writer.write_raw(GOOD)
    assert _take(reader, 1) == [GOOD]


def test_values_over_their_bound_are_rejected(domain_id: int, prefix: str) -> None:
    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg('int32[<=2] few\nstring<=5 name\n', 'mmfusion_test/msg/Few'))
    topic, msgtype = f'{prefix}/few', 'mmfusion_test/msg/Few'
    few = store.types[msgtype]
    with DdsBridge(domain_id, typestore=store) as bridge:
        writer, reader = _connected(bridge, topic, msgtype)
        many = cdr(few(few=np.arange(10_000, dtype=np.int32), name='abc'), msgtype, store)
        with pytest.raises(TransportError,
                           match=rf'^{topic}: cannot write {msgtype}: Failed to encode member few, ') as err:
            writer.write_raw(many)
        assert len(str(err.value)) < 250, 'the error quotes the whole value'
        # Five characters, six UTF-8 bytes: over the bound as DDS (and a C++ node) counts it.
        umlaut = cdr(few(few=np.array([1], dtype=np.int32), name='äbcde'), msgtype, store)
        with pytest.raises(TransportError, match=rf'^{topic}: cannot write {msgtype}: \[DDS_RETCODE_BAD_PARAMETER\]'):
            writer.write_raw(umlaut)
        fits = cdr(few(few=np.array([1, 2], dtype=np.int32), name='abcde'), msgtype, store)
        writer.write_raw(fits)
        assert _take(reader, 1) == [fits]


def test_reader_drops_samples_it_cannot_read_and_keeps_going(
        bridge: DdsBridge, domain_id: int, prefix: str) -> None:
    # A foreign writer sends bytes that are no String (invalid UTF-8); the reader counts and skips them.
    from cyclonedds._clayer import ddspy_write

    topic = f'{prefix}/chatter'
    reader = bridge.reader(topic, 'std_msgs/msg/String')
    foreign = DomainParticipant(domain_id)
    try:
        string_type = IdlTypes(STORE).struct('std_msgs/msg/String')
        writer = DataWriter(foreign, Topic(foreign, dds_topic_name(topic), string_type))
        assert reader.wait_for_publishers(1, WAIT_S)
        assert ddspy_write(writer._ref, b'\x00\x01\x00\x00\x03\x00\x00\x00\xff\xfe\x00\x00') == 0
        writer.write(string_type.deserialize(GOOD))
        received = _take(reader, 1)
        writer.__del__()  # its disappearance reaches the reader as a sample without data: not an error
        assert reader.take_raw(timeout_s=0.5) == []
    finally:
        foreign.__del__()
    assert received == [GOOD]
    assert reader.rejected == 1
    assert re.fullmatch(rf"{topic}: dropped a sample that is not a std_msgs/msg/String: 'utf-8' codec .*",
                        reader.last_error)


def test_endpoint_errors_name_topic_and_type(bridge: DdsBridge, prefix: str) -> None:
    topic = f'{prefix}/x'
    with pytest.raises(TransportError, match=rf"^{topic}: unknown message type 'nope_msgs/msg/Nope'$"):
        bridge.writer(topic, 'nope_msgs/msg/Nope')
    with pytest.raises(TransportError, match=rf"^{topic}: unknown message type 'nope_msgs/msg/Nope'$"):
        bridge.reader(topic, 'nope_msgs/msg/Nope')
    with pytest.raises(TransportError, match=r"^topic 'relative' is not a fully qualified ROS 2 name"):
        bridge.writer('relative', 'std_msgs/msg/String')
    with pytest.raises(TransportError, match=rf'^{topic}: history depth 0 is not a positive integer$'):
        bridge.reader(topic, 'std_msgs/msg/String', depth=0)
    writer = bridge.writer(topic, 'std_msgs/msg/String')
    with pytest.raises(TransportError, match=rf'^{topic}: already carries std_msgs/msg/String in this bridge, '
                                             r'not std_msgs/msg/Header$'):
        bridge.reader(topic, 'std_msgs/msg/Header')
    writer.close()
    with pytest.raises(TransportError, match=rf'^{topic}: the writer for std_msgs/msg/String is closed$'):
        writer.write_raw(GOOD)
    reader = bridge.reader(topic, 'std_msgs/msg/String')
    bridge.close()
    with pytest.raises(TransportError, match=rf'^{topic}: the reader for std_msgs/msg/String is closed$'):
        reader.take_raw()
    with pytest.raises(TransportError, match=r'^/y: the DDS bridge on domain \d+ is closed$'):
        bridge.writer('/y', 'std_msgs/msg/String')
    bridge.close()


# --- two processes ---------------------------------------------------------------------------------

# The publishing process: reads length-prefixed messages per topic, waits until the parent's readers
# match and the parent says "go" (so its readers know this writer too), writes them all, then stays
# until the parent's readers are gone, so reliable delivery can finish.
CHILD = """
import struct, sys, time
from pathlib import Path
from mmfusion_ros.runtime.dds import DdsBridge

domain, go_topic, *jobs = sys.argv[1:]
plan = []
for topic, msgtype, path in zip(jobs[0::3], jobs[1::3], jobs[2::3]):
    data, messages = Path(path).read_bytes(), []
    while data:
        (size,), data = struct.unpack('<I', data[:4]), data[4:]
        messages.append(data[:size])
        data = data[size:]
    plan.append((topic, msgtype, messages))
deadline = time.monotonic() + 120
with DdsBridge(int(domain)) as bridge:
    go = bridge.reader(go_topic, 'std_msgs/msg/String')
    writers = [(bridge.writer(topic, msgtype, depth=len(messages)), messages) for topic, msgtype, messages in plan]
    for writer, _ in writers:
        if not writer.wait_for_subscribers(1, 60):
            sys.exit(f'{writer.topic}: no subscriber')
    while not go.take_raw(timeout_s=1.0):
        if time.monotonic() > deadline:
            sys.exit('no go')
    for writer, messages in writers:
        for raw in messages:
            writer.write_raw(raw)
    while any(writer.subscriber_count() for writer, _ in writers) and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def test_two_processes_exchange_messages_bit_identical(domain_id: int, prefix: str, tmp_path: Path) -> None:
    count = 12
    plan = {
        f'{prefix}/lidar/points': ('sensor_msgs/msg/PointCloud2',
                                   [pointcloud(2_000 + 100 * i, seed=i) for i in range(count)]),
        f'{prefix}/detections': ('vision_msgs/msg/Detection3DArray',
                                 [cdr(example('vision_msgs/msg/Detection3DArray', rng=np.random.default_rng(i),
                                              length=i % 4), 'vision_msgs/msg/Detection3DArray')
                                  for i in range(count)]),
    }
    args = [sys.executable, '-c', CHILD, str(domain_id), f'{prefix}/go']
    for index, (topic, (msgtype, messages)) in enumerate(plan.items()):
        path = tmp_path / f'messages_{index}.bin'
        path.write_bytes(b''.join(struct.pack('<I', len(raw)) + raw for raw in messages))
        args += [topic, msgtype, str(path)]

    with DdsBridge(domain_id) as bridge:
        readers = {topic: bridge.reader(topic, msgtype, depth=count) for topic, (msgtype, _) in plan.items()}
        go = bridge.writer(f'{prefix}/go', 'std_msgs/msg/String')
        child = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for reader in readers.values():
                assert reader.wait_for_publishers(1, 60), f'{reader.topic}: the child never matched'
            received: dict[str, list[bytes]] = {topic: [] for topic in plan}
            deadline = time.monotonic() + 120
            while any(len(got) < count for got in received.values()) and time.monotonic() < deadline:
                if child.poll() is not None:
                    break
                go.write_raw(GOOD)
                for topic, reader in readers.items():
                    received[topic] += reader.take_raw(timeout_s=0.2)
            for reader in readers.values():
                reader.close()
            output = child.communicate(timeout=60)[0].decode(errors='replace')
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == 0, output
    for topic, (_, messages) in plan.items():
        assert len(received[topic]) == count, topic
        assert received[topic] == messages, topic
