"""BagReader / BagWriter against the real recordings in ../shared/data/real/bags and bags made here."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Reader, StoragePlugin, Writer
from rosbags.rosbag2.metadata import parse_qos
from rosbags.typesys import Stores, get_typestore

from mmfusion_ros.errors import BagError
from mmfusion_ros.io.bag import QOS_PRESETS, BagMessage, BagReader, BagWriter, QosProfile

REAL = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'real'
BAGS = REAL / 'bags'
needs_real_bags = pytest.mark.skipif(not BAGS.is_dir(), reason=f'real bags not found at {BAGS}')

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
STATIC = QosProfile('reliable', 'transient_local', 'keep_last', 1)


def _string_cdr(text: str) -> bytes:
    msg = TYPESTORE.types['std_msgs/msg/String'](data=text)
    return bytes(TYPESTORE.serialize_cdr(msg, 'std_msgs/msg/String'))


def _read_all(path: Path | list[Path], **kwargs: object) -> list[BagMessage]:
    with BagReader(path, **kwargs) as bag:
        return list(bag.messages())


def _one_line(err: pytest.ExceptionInfo[BagError]) -> str:
    text = str(err.value)
    assert '\n' not in text and text, f'error message is not one line: {text!r}'
    return text


def _writable_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for path in [dst, *dst.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


# -- the real recordings -------------------------------------------------------------------------

NUSCENES_TOPICS = {
    '/LIDAR_TOP': ('sensor_msgs/msg/PointCloud2', 1),
    '/tf': ('tf2_msgs/msg/TFMessage', 7),
    '/tf_static': ('tf2_msgs/msg/TFMessage', 1),
    **{f'/{cam}/image_rect_compressed': ('sensor_msgs/msg/CompressedImage', 1)
       for cam in ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_BACK', 'CAM_BACK_LEFT',
                   'CAM_BACK_RIGHT')},
    **{f'/{cam}/camera_info': ('sensor_msgs/msg/CameraInfo', 1)
       for cam in ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_BACK', 'CAM_BACK_LEFT',
                   'CAM_BACK_RIGHT')},
}
PJLAB_TOPICS = {
    '/front_radar/tracks': ('sensor_msgs/msg/PointCloud2', 10),
    '/top_center_lidar/points': ('sensor_msgs/msg/PointCloud2', 1),
    '/tf_static': ('tf2_msgs/msg/TFMessage', 1),
}


@needs_real_bags
@pytest.mark.parametrize(('name', 'expected'), [('nuscenes_demo_keyframe', NUSCENES_TOPICS),
                                                ('pjlab_radar_lidar', PJLAB_TOPICS)])
def test_real_bag_reads_the_same_in_both_storages(name: str, expected: dict) -> None:
    read = {}
    for storage in ('mcap', 'sqlite3'):
        with BagReader(BAGS / f'{name}_{storage}') as bag:
            assert bag.storage == storage
            topics = bag.topics
            assert [t.name for t in topics] == sorted(expected)
            assert {t.name: (t.msgtype, t.count) for t in topics} == expected
            assert {t.name: t.qos for t in topics}['/tf_static'] == (STATIC,)
            messages = list(bag.messages())
            assert len(messages) == sum(count for _, count in expected.values())
            stamps = [m.stamp_ns for m in messages]
            assert stamps == sorted(stamps)
            assert (bag.start_ns, bag.end_ns) == (stamps[0], stamps[-1])
            assert bag.duration_s == pytest.approx((stamps[-1] - stamps[0]) / 1e9)
            assert all(m.raw[:4] == b'\x00\x01\x00\x00' for m in messages)  # CDR little endian
            read[storage] = (topics, messages)
    assert read['mcap'] == read['sqlite3']  # same topics, counts, order and bytes


@needs_real_bags
def test_nuscenes_bag_stamps_and_rates() -> None:
    with BagReader(BAGS / 'nuscenes_demo_keyframe_mcap') as bag:
        assert bag.start_ns == 1532402927604844000
        assert bag.end_ns == 1532402927647951000
        tf = next(t for t in bag.topics if t.name == '/tf')
        assert tf.rate_hz == pytest.approx(6 / 0.043107)
        assert (tf.first_ns, tf.last_ns) == (bag.start_ns, bag.end_ns)
        lidar = next(t for t in bag.topics if t.name == '/LIDAR_TOP')
        assert lidar.rate_hz == 0.0 and lidar.qos == ()
        # equal stamps come by topic name, whatever the storage recorded first
        first = [m.topic for m in bag.messages() if m.stamp_ns == bag.start_ns]
        assert first == sorted(first) and len(first) == 4


@needs_real_bags
def test_messages_filters_topics_and_rejects_unknown_ones() -> None:
    with BagReader(BAGS / 'nuscenes_demo_keyframe_sqlite3') as bag:
        tf = list(bag.messages(['/tf', '/tf_static']))
        assert {m.topic for m in tf} == {'/tf', '/tf_static'} and len(tf) == 8
        assert [m.topic for m in bag.messages('/LIDAR_TOP')] == ['/LIDAR_TOP']
        with pytest.raises(BagError, match=r"no topic '/lidar'; the bag has /CAM_BACK/camera_info"):
            list(bag.messages(['/lidar']))


@needs_real_bags
def test_two_bags_merge_in_time_order() -> None:
    paths = [BAGS / 'pjlab_radar_lidar_mcap', BAGS / 'nuscenes_demo_keyframe_sqlite3']
    with BagReader(paths) as bag:
        assert bag.storage == 'mixed'
        assert bag.paths == tuple(paths)
        messages = list(bag.messages())
        topics = {t.name: t.count for t in bag.topics}
        assert bag.start_ns == 1532402927604844000  # nuScenes (2018) is the earlier recording
    assert len(messages) == 21 + 12
    assert [m.stamp_ns for m in messages] == sorted(m.stamp_ns for m in messages)
    assert [m.bag_index for m in messages] == [1] * 21 + [0] * 12
    assert topics['/tf_static'] == 2  # counted across both bags
    assert messages[-1].topic == '/front_radar/tracks'


@needs_real_bags
def test_interleaved_bags_merge_with_ties_in_bag_order(tmp_path: Path) -> None:
    real = BAGS / 'nuscenes_demo_keyframe_mcap'
    stamps = sorted({m.stamp_ns for m in _read_all(real)})
    extra = tmp_path / 'extra'
    with BagWriter(extra, 'sqlite3', typestore=TYPESTORE) as out:
        out.add_topic('/a_marker', 'std_msgs/msg/String')
        for stamp in stamps:  # one message on every stamp of the real bag, and one in between
            out.write('/a_marker', stamp, _string_cdr('tie'))
            out.write('/a_marker', stamp + 1000, _string_cdr('between'))
    merged = _read_all([real, extra])
    assert len(merged) == 21 + 2 * len(stamps)
    assert [m.stamp_ns for m in merged] == sorted(m.stamp_ns for m in merged)
    for stamp in stamps:
        tied = [m for m in merged if m.stamp_ns == stamp]
        assert [m.bag_index for m in tied] == sorted(m.bag_index for m in tied)
        assert tied[-1].topic == '/a_marker'  # bag 1 after bag 0, even though '/a' sorts first


@needs_real_bags
@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_directory_without_metadata_yaml_is_read_from_its_storage_file(
        tmp_path: Path, storage: str) -> None:
    original = BAGS / f'nuscenes_demo_keyframe_{storage}'
    copy = _writable_copy(original, tmp_path / 'bag')
    (copy / 'metadata.yaml').unlink()
    with BagReader(original) as bag:
        expected_topics, expected = bag.topics, list(bag.messages())
    with BagReader(copy) as bag:
        assert bag.storage == storage
        assert bag.topics == expected_topics  # types and QoS come from the storage file
        assert list(bag.messages()) == expected


@needs_real_bags
def test_bare_storage_files_are_bags(tmp_path: Path) -> None:
    mcap = next((BAGS / 'pjlab_radar_lidar_mcap').glob('*.mcap'))
    db3 = next((BAGS / 'pjlab_radar_lidar_sqlite3').glob('*.db3'))
    assert _read_all(mcap) == _read_all(db3) == _read_all(BAGS / 'pjlab_radar_lidar_mcap')


# -- writing -------------------------------------------------------------------------------------

@needs_real_bags
@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip_of_real_messages_written_out_of_order(tmp_path: Path, storage: str) -> None:
    with BagReader(BAGS / 'nuscenes_demo_keyframe_mcap') as bag:
        topics, messages = bag.topics, list(bag.messages())
    out = tmp_path / 'copy'
    with BagWriter(out, storage, typestore=TYPESTORE) as writer:
        for topic in topics:
            writer.add_topic(topic.name, topic.msgtype)  # /tf_static gets the latched QoS itself
        for message in reversed(messages):
            writer.write(message.topic, message.stamp_ns, message.raw)
        assert writer.message_count == 21
        assert not out.exists()  # only a temporary name exists until close
    assert sorted(p.name for p in tmp_path.iterdir()) == ['copy']  # temporary directory gone
    with BagReader(out) as bag:
        assert bag.storage == storage
        assert [(t.name, t.msgtype, t.count) for t in bag.topics] == \
            [(t.name, t.msgtype, t.count) for t in topics]
        assert list(bag.messages()) == messages  # sorted again, bytes unchanged
        qos = {t.name: t.qos for t in bag.topics}
    assert qos['/tf_static'] == (STATIC,)
    assert qos['/LIDAR_TOP'] == (QOS_PRESETS['default'],)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_tf_static_qos_is_latched_in_metadata_and_storage(tmp_path: Path, storage: str) -> None:
    out = tmp_path / 'bag'
    with BagWriter(out, storage, typestore=TYPESTORE) as writer:
        writer.add_topic('/tf_static', 'tf2_msgs/msg/TFMessage')
        writer.add_topic('/points', 'sensor_msgs/msg/PointCloud2', qos='sensor_data')
        writer.add_topic('/status', 'std_msgs/msg/String', qos=QosProfile('reliable', 'volatile',
                                                                           'keep_all', 0))
        tf = TYPESTORE.types['tf2_msgs/msg/TFMessage'](transforms=[])
        writer.write('/tf_static', 5, bytes(TYPESTORE.serialize_cdr(tf, 'tf2_msgs/msg/TFMessage')))
        writer.write('/status', 6, _string_cdr('ok'))
    metadata = yaml.safe_load((out / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert metadata['version'] == 8 and metadata['storage_identifier'] == storage
    offered = {t['topic_metadata']['name']: parse_qos(t['topic_metadata']['offered_qos_profiles'])
               for t in metadata['topics_with_message_count']}
    (static,) = offered['/tf_static']
    assert static.durability == QosDurability.TRANSIENT_LOCAL
    assert static.reliability == QosReliability.RELIABLE
    assert (static.history.name, static.depth) == ('KEEP_LAST', 1)
    assert offered['/points'][0].reliability == QosReliability.BEST_EFFORT
    # the storage file carries it too, which is what a bag without metadata.yaml is read from
    (storage_file,) = [p for p in out.iterdir() if p.name != 'metadata.yaml']
    with Reader(storage_file) as reader:
        conn = next(c for c in reader.connections if c.topic == '/tf_static')
        assert conn.ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
    with BagReader(storage_file) as bag:
        qos = {t.name: t.qos for t in bag.topics}
    assert qos == {'/points': (QOS_PRESETS['sensor_data'],), '/status': (
        QosProfile('reliable', 'volatile', 'keep_all', 0),), '/tf_static': (STATIC,)}


def test_written_mcap_reads_as_a_bare_file_in_time_order(tmp_path: Path) -> None:
    out = tmp_path / 'strings'
    stamps = [30, 10, 10, 20, 5_000_000_000, 0]
    with BagWriter(out, typestore=TYPESTORE) as writer:
        writer.add_topic('/b', 'std_msgs/msg/String')
        writer.add_topic('/a', 'std_msgs/msg/String')
        for i, stamp in enumerate(stamps):
            writer.write('/b' if i % 2 else '/a', stamp, _string_cdr(f'{i}'))
    for path in (out, out / 'strings.mcap'):
        messages = _read_all(path)
        assert [m.stamp_ns for m in messages] == sorted(stamps)
        # equal stamps (10 on /b written first, then 10 on /a): by topic name
        assert [(m.topic, m.raw) for m in messages if m.stamp_ns == 10] == \
            [('/a', _string_cdr('2')), ('/b', _string_cdr('1'))]
    with BagReader(out / 'strings.mcap') as bag:
        assert bag.storage == 'mcap'
        topics = {t.name: t for t in bag.topics}
        assert topics['/a'].count == 3 and topics['/b'].count == 3
        assert topics['/b'].rate_hz == pytest.approx(2 / 20e-9)  # /b at 0, 10 and 20 ns


def test_empty_bag(tmp_path: Path) -> None:
    with BagWriter(tmp_path / 'empty', 'sqlite3', typestore=TYPESTORE) as writer:
        writer.add_topic('/a', 'std_msgs/msg/String')
    with BagReader(tmp_path / 'empty') as bag:
        assert (bag.start_ns, bag.end_ns, bag.duration_s) == (0, 0, 0.0)
        assert [(t.name, t.count, t.rate_hz) for t in bag.topics] == [('/a', 0, 0.0)]
        assert list(bag.messages()) == []


def test_overwrite_needs_consent_and_replaces_only_bags(tmp_path: Path) -> None:
    out = tmp_path / 'bag'
    for text in ('first', 'second'):
        with BagWriter(out, 'sqlite3', typestore=TYPESTORE, overwrite=text == 'second') as writer:
            writer.add_topic('/a', 'std_msgs/msg/String')
            writer.write('/a', 1, _string_cdr(text))
    assert [m.raw for m in _read_all(out)] == [_string_cdr('second')]
    with pytest.raises(BagError, match=r'bag: already exists; not overwriting \(pass overwrite=True'):
        BagWriter(out, typestore=TYPESTORE)
    precious = tmp_path / 'precious'
    (precious / 'sub').mkdir(parents=True)
    with pytest.raises(BagError, match='exists and is not a rosbag2 bag directory; refusing') as err:
        BagWriter(precious, overwrite=True, typestore=TYPESTORE)
    _one_line(err)
    assert (precious / 'sub').is_dir()


def test_failed_write_leaves_nothing_and_keeps_the_old_bag(tmp_path: Path) -> None:
    out = tmp_path / 'bag'
    with BagWriter(out, typestore=TYPESTORE) as writer:
        writer.add_topic('/a', 'std_msgs/msg/String')
        writer.write('/a', 1, _string_cdr('kept'))
    with pytest.raises(RuntimeError, match='boom'):
        with BagWriter(out, typestore=TYPESTORE, overwrite=True) as writer:
            writer.add_topic('/a', 'std_msgs/msg/String')
            writer.write('/a', 2, _string_cdr('lost'))
            raise RuntimeError('boom')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']
    assert [m.raw for m in _read_all(out)] == [_string_cdr('kept')]
    with pytest.raises(BagError):
        with BagWriter(tmp_path / 'never', typestore=TYPESTORE) as writer:
            writer.write('/a', 1, _string_cdr('x'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']


@pytest.mark.parametrize(('call', 'pattern'), [
    (lambda w: w.add_topic('/a', 'foo_msgs/msg/Bar'),
     r"unknown message type 'foo_msgs/msg/Bar' for topic '/a' \(not in the typestore"),
    (lambda w: w.add_topic('/a', 'std_msgs/String'), r"unknown message type 'std_msgs/String'"),
    (lambda w: w.add_topic('points', 'std_msgs/msg/String'), r"invalid topic name 'points'"),
    (lambda w: w.add_topic('/a', 'std_msgs/msg/String', qos='latched'),
     r"/a: unknown QoS preset 'latched'; expected one of default, sensor_data, static"),
    (lambda w: w.add_topic('/a', 'std_msgs/msg/String', qos=QosProfile('sure', 'volatile')),
     r"/a: invalid QoS .*'SURE' is not a known value"),
    (lambda w: w.add_topic('/tf_static', 'tf2_msgs/msg/TFMessage', qos='default'),
     r'/tf_static must be offered transient_local \(latched\), got volatile'),
    (lambda w: (w.add_topic('/a', 'std_msgs/msg/String'), w.add_topic('/a', 'std_msgs/msg/Header')),
     r"topic '/a' already declared as std_msgs/msg/String"),
    (lambda w: w.write('/nope', 1, b'\x00\x01\x00\x00'),
     r"topic '/nope' was not declared with add_topic\(\); declared: /known"),
    (lambda w: w.write('/known', 1.5, b'\x00\x01\x00\x00'),
     r'/known: stamp_ns must be an integer count of nanoseconds, got 1.5'),
    (lambda w: w.write('/known', -1, b'\x00\x01\x00\x00'), r'/known: stamp_ns -1 is outside'),
    (lambda w: w.write('/known', 1, 'text'), r'/known: expected serialized bytes, got str'),
    (lambda w: w.write('/known', 1, b'{"json": 1}'),
     r'/known: data does not start with a CDR encapsulation header \(got 7b226a73\)'),
])
def test_writer_errors(tmp_path: Path, call, pattern: str) -> None:
    with BagWriter(tmp_path / 'bag', typestore=TYPESTORE) as writer:
        writer.add_topic('/known', 'std_msgs/msg/String')
        with pytest.raises(BagError, match=pattern) as err:
            call(writer)
        _one_line(err)
        writer.add_topic('/a', 'std_msgs/msg/String')  # the writer is still usable
    assert (tmp_path / 'bag' / 'metadata.yaml').is_file()


def test_writer_rejects_unknown_storage_and_a_closed_writer(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"unknown storage 'rosbag1'; expected one of mcap, sqlite3"):
        BagWriter(tmp_path / 'bag', 'rosbag1', typestore=TYPESTORE)
    writer = BagWriter(tmp_path / 'bag', typestore=TYPESTORE)
    with pytest.raises(BagError, match=r'writer is not open \(use "with BagWriter'):
        writer.add_topic('/a', 'std_msgs/msg/String')


def test_writer_defaults_to_the_package_typestore(tmp_path: Path) -> None:
    pytest.importorskip('mmfusion_ros.msgs.typestore', reason='the package typestore is not built yet')
    with BagWriter(tmp_path / 'bag') as writer:
        writer.add_topic('/objects', 'vision_msgs/msg/Detection3DArray')
        writer.add_topic('/radar/tracks', 'radar_msgs/msg/RadarTracks', qos='sensor_data')
    with BagReader(tmp_path / 'bag') as bag:
        assert [(t.name, t.msgtype) for t in bag.topics] == [
            ('/objects', 'vision_msgs/msg/Detection3DArray'), ('/radar/tracks', 'radar_msgs/msg/RadarTracks')]


def test_writer_without_package_typestore_says_so(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'mmfusion_ros.msgs.typestore', None)  # makes the import fail
    with pytest.raises(BagError, match=r'no typestore given and mmfusion_ros.msgs.typestore is not '
                                       'available') as err:
        BagWriter(tmp_path / 'bag').open()
    _one_line(err)
    assert not (tmp_path / 'bag').exists()


# -- reading errors ------------------------------------------------------------------------------

def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r'/nothing: no such bag \(the path does not exist\)') as err:
        BagReader(tmp_path / 'nothing').open()
    _one_line(err)
    with pytest.raises(BagError, match='no bag path given'):
        BagReader([])


def test_plain_file_and_empty_directory_are_not_bags(tmp_path: Path) -> None:
    text = tmp_path / 'notes.txt'
    text.write_text('not a bag')
    with pytest.raises(BagError, match=r'notes.txt: not a rosbag2 bag \(expected a bag directory, '
                                       r'a .mcap or a .db3 file\)') as err:
        BagReader(text).open()
    _one_line(err)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(BagError, match=r'empty: not a rosbag2 bag \(no metadata.yaml and no .mcap '
                                       r'or .db3 file in it\)') as err:
        BagReader(empty).open()
    _one_line(err)
    fake = tmp_path / 'fake.mcap'
    fake.write_bytes(b'PK\x03\x04 a zip file')
    with pytest.raises(BagError, match=r'fake.mcap: not an MCAP file \(it does not start with the '
                                       r'MCAP magic\)'):
        BagReader(fake).open()
    (tmp_path / 'zero.mcap').touch()
    with pytest.raises(BagError, match=r'zero.mcap: not an MCAP file \(it is empty\)'):
        BagReader(tmp_path / 'zero.mcap').open()


def test_reader_must_be_open(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r'bag is not open \(use "with BagReader'):
        BagReader(tmp_path / 'x').topics  # noqa: B018


@needs_real_bags
@pytest.mark.parametrize('cut', [9, 100, 4096, 500_000, 'half', 'chunk_end', 'summary', 'footer'])
def test_truncated_mcap(tmp_path: Path, cut: int | str) -> None:
    source = next((BAGS / 'nuscenes_demo_keyframe_mcap').glob('*.mcap'))
    data = source.read_bytes()
    full = _read_all(source)
    offsets = {'half': len(data) // 2, 'chunk_end': 1572586, 'summary': len(data) - 3000,
               'footer': len(data) - 1}
    size = offsets.get(cut, cut)
    cut_file = tmp_path / 'cut.mcap'
    cut_file.write_bytes(data[:size])

    with pytest.raises(BagError, match=r'cut.mcap: MCAP file is truncated \(no footer: the recording '
                                       r'was cut off\); read it with recovery \(--recover; recover=True\)') as err:
        BagReader(cut_file).open()
    _one_line(err)

    with BagReader(cut_file, recover=True) as bag:
        recovered = list(bag.messages())
        (truncated,) = bag.truncated
        counts = {t.name: t.count for t in bag.topics}
    assert truncated.path == cut_file and truncated.file_size == size
    # every complete message before the cut, bytes intact, in order; the rest counted as lost bytes
    assert recovered == [m for m in full if m in recovered]
    assert sum(counts.values()) == len(recovered)
    if cut in ('summary', 'footer'):
        assert recovered == full and truncated.messages_complete and truncated.lost_bytes == 0
    elif cut == 'chunk_end':  # cut exactly between two chunks: nothing partial, one message missing
        assert len(recovered) == 20 and truncated.lost_bytes == 0
        assert not truncated.messages_complete
    else:
        assert len(recovered) < len(full) and 0 < truncated.lost_bytes < size
        assert not truncated.messages_complete
    if cut in ('half', 'chunk_end'):
        assert len(recovered) >= 10  # the complete records of the cut, uncompressed chunk


def test_truncated_compressed_mcap_keeps_its_complete_chunks(tmp_path: Path) -> None:
    writer = Writer(tmp_path / 'zstd', version=8, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection('/s', 'std_msgs/msg/String', typestore=TYPESTORE)
        for i in range(300):  # about 1.2 MB raw: two zstd chunks of at most 1 MiB
            writer.write(conn, i, _string_cdr(f'{i:04d}' * 1000))
    storage_file = tmp_path / 'zstd' / 'zstd.mcap'
    full = _read_all(storage_file)
    assert len(full) == 300
    data = storage_file.read_bytes()
    cut = tmp_path / 'cut.mcap'
    cut.write_bytes(data[:len(data) // 2])  # inside the second chunk: it cannot be decompressed
    with BagReader(cut, recover=True) as bag:
        recovered = list(bag.messages())
        (truncated,) = bag.truncated
    assert 0 < len(recovered) < 300 and recovered == full[:len(recovered)]
    assert truncated.lost_bytes > 0 and not truncated.messages_complete


@needs_real_bags
def test_truncated_mcap_inside_a_bag_directory(tmp_path: Path) -> None:
    bag = _writable_copy(BAGS / 'nuscenes_demo_keyframe_mcap', tmp_path / 'bag')
    storage_file = next(bag.glob('*.mcap'))
    data = storage_file.read_bytes()
    storage_file.write_bytes(data[:len(data) - 100])
    with pytest.raises(BagError, match=r'nuscenes_demo_keyframe_mcap.mcap: MCAP file is truncated'):
        BagReader(bag).open()
    assert len(_read_all(bag, recover=True)) == 21


@needs_real_bags
@pytest.mark.parametrize('damage', ['random', 'truncated', 'overwritten', 'empty'])
def test_corrupt_db3(tmp_path: Path, damage: str) -> None:
    bag = _writable_copy(BAGS / 'nuscenes_demo_keyframe_sqlite3', tmp_path / 'bag')
    db3 = next(bag.glob('*.db3'))
    data = db3.read_bytes()
    db3.write_bytes({'random': os.urandom(8192), 'truncated': data[:len(data) // 2],
                     'overwritten': data[:4096] + bytes(200_000) + data[204_096:],
                     'empty': b''}[damage])
    for path in (bag, db3):
        with pytest.raises(BagError, match=rf'{path.name}: cannot open sqlite3 bag: ') as err:
            with BagReader(path) as reader:
                list(reader.messages())
        _one_line(err)


@needs_real_bags
def test_broken_metadata_yaml(tmp_path: Path) -> None:
    bag = _writable_copy(BAGS / 'nuscenes_demo_keyframe_sqlite3', tmp_path / 'bag')
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: {version: 8\n  [broken')
    with pytest.raises(BagError, match=r'bag: cannot open sqlite3 bag: Could not load YAML') as err:
        BagReader(bag).open()
    _one_line(err)
