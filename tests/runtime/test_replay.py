"""`mmfusion replay`: output bag (rosbags and the independent mcap reader), report, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmfusion_ros.cli import main
from mmfusion_ros.io.bag import BagReader, BagWriter
from mmfusion_ros.msgs.decode import decode_detections
from mmfusion_ros.runtime.replay import ReplayOptions, replay
from mmfusion_ros.viz import palette
from mmfusion_ros.viz.bev import world_to_pixel

OBJECTS = '/mmfusion/output/objects'


@pytest.fixture(scope='module')
def replayed(sim_bag, tmp_path_factory, fusion_config, pipeline):
    out = tmp_path_factory.mktemp('replay')
    summary = replay(sim_bag, fusion_config, ReplayOptions(out_bag=out / 'out', report=out / 'report',
                                                           picture_every=10, progress=False), pipeline)
    return summary, out


def test_summary_has_the_documented_keys_and_counts(replayed, sim_bag):
    summary, out = replayed
    with BagReader(sim_bag) as reader:
        sweeps = next(t.count for t in reader.topics if t.name == '/LIDAR_TOP')
    assert summary['frames'] == sweeps
    assert summary['detections'] > 0 and 0 <= summary['flagged'] <= summary['detections']
    assert summary['latency_ms']['p99'] >= summary['latency_ms']['p50'] > 0
    assert {'geometry', 'network', 'decode', 'consistency', 'total'} <= set(summary['stages_ms'])
    assert summary['dropped']['total'] == 0
    assert summary['frames_per_s'] > 0 and summary['realtime_factor'] > 0
    on_disk = json.loads((out / 'report' / 'summary.json').read_text())
    assert {'frames', 'detections', 'flagged', 'latency_ms', 'stages_ms', 'dropped'} <= set(on_disk)
    assert on_disk['frames'] == summary['frames']


def test_output_bag_holds_inputs_and_outputs_for_rosbags_and_mcap(replayed, sim_bag):
    summary, out = replayed
    with BagReader(sim_bag) as reader:
        inputs = {t.name: t.count for t in reader.topics}
    with BagReader(out / 'out') as reader:
        written = {t.name: t.count for t in reader.topics}
        objects = [decode_detections(m.raw) for m in reader.messages([OBJECTS])]
    assert all(written[name] == count for name, count in inputs.items())
    assert written[OBJECTS] == summary['frames'] == len(objects)
    assert sum(len(d) for d in objects) == summary['detections']
    for name in ('/mmfusion/output/disagreements', '/mmfusion/output/markers', '/mmfusion/debug/processing_time_ms',
                 '/mmfusion/debug/pipeline_latency_ms'):
        assert written[name] == summary['frames']
    assert written['/diagnostics'] >= 1

    from mcap.reader import make_reader  # an independent reader of the same file

    counts: dict[str, int] = {}
    encodings = set()
    for path in sorted((out / 'out').glob('*.mcap')):
        with path.open('rb') as stream:
            for schema, channel, message in make_reader(stream).iter_messages():
                counts[channel.topic] = counts.get(channel.topic, 0) + 1
                encodings.add(channel.message_encoding)
    assert counts == written and encodings == {'cdr'}


def test_report_pictures_show_what_was_detected(replayed, fusion_config):
    summary, out = replayed
    report = out / 'report'
    html = (report / 'index.html').read_text()
    pictures = sorted((report / 'frames').glob('bev_*.png'))
    assert len(pictures) == len(range(0, summary['frames'], 10))
    for picture in pictures + sorted((report / 'frames').glob('cameras_*.png')):
        assert picture.name in html
        image = cv2.imread(str(picture))
        assert image is not None and image.std() > 5  # not blank
    # Frame 10's picture has a box drawn at each detection's centre.
    with BagReader(out / 'out') as reader:
        tenth = [decode_detections(m.raw) for m in reader.messages([OBJECTS])][10]
    image = cv2.imread(str(pictures[1])).astype(int)
    assert len(tenth)
    for center, size in zip(tenth.centers, tenth.sizes):
        u, v = world_to_pixel(center[None, :2], fusion_config.grid, 6.0)[0].round().astype(int)
        reach = int(6.0 * max(size[:2]) / 2) + 3
        patch = image[max(0, v - reach):v + reach + 1, max(0, u - reach):u + reach + 1]
        drawn = any((np.abs(patch - np.array(colour)).max(axis=-1) <= 30).any()
                    for colour in (palette.AGREES, palette.FLAGGED_ONE, palette.FLAGGED_SEVERAL))
        assert drawn, f'no box drawn near the detection at {center[:2]}'
    video = cv2.VideoCapture(str(report / 'bev.mp4'))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == summary['frames']
    assert 'bev.mp4' in html and 'p50' in html


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_real_nuscenes_keyframe_bags_replay(real_data, tmp_path, storage, fusion_config, pipeline):
    bag = real_data / 'bags' / f'nuscenes_demo_keyframe_{storage}'
    summary = replay(bag, fusion_config, ReplayOptions(out_bag=tmp_path / 'out', report=tmp_path / 'report',
                                                        progress=False), pipeline)
    assert summary['frames'] == 1 and summary['detections'] > 0
    # The recording has no radar: the frame goes out without it, and says so.
    assert summary['partial_frames'] == 1
    assert all(summary['sensors'][r]['received'] == 0 for r in fusion_config.sensors_of('radar'))
    with BagReader(tmp_path / 'out') as reader:
        assert next(t.count for t in reader.topics if t.name == OBJECTS) == 1
    assert (tmp_path / 'report' / 'frames' / 'cameras_00000.png').exists()


def test_a_corrupted_message_in_the_middle_of_a_bag_is_counted_and_skipped(sim_bag, tmp_path, fusion_config, pipeline):
    broken = tmp_path / 'broken'
    with BagReader(sim_bag) as reader, BagWriter(broken) as writer:
        for info in reader.topics:
            writer.add_topic(info.name, info.msgtype)
        lidar = 0
        for message in reader.messages():
            raw = message.raw
            if message.topic == '/LIDAR_TOP':
                lidar += 1
                if lidar == 10:  # a valid CDR header, then garbage where the cloud should be
                    raw = raw[:4] + bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8))
            writer.write(message.topic, message.stamp_ns, raw)
    summary = replay(broken, fusion_config, ReplayOptions(out_bag=tmp_path / 'out', progress=False), pipeline)
    assert summary['frames'] == lidar - 1
    assert summary['dropped']['total'] == 1 and summary['sensors']['lidar_top']['unreadable'] == 1


def test_realtime_replay_keeps_recorded_speed(sim_bag, tmp_path, fusion_config, pipeline):
    summary = replay(sim_bag, fusion_config, ReplayOptions(realtime=True, progress=False), pipeline)
    assert summary['mode'] == 'realtime'
    assert summary['wall_s'] >= 0.9 * summary['recording_s']
    assert summary['frames'] + summary['dropped']['by_reason'].get('frame skipped: a newer one was complete first', 0) \
        <= summary['messages']
    assert summary['frames'] > 0 and summary['late_frames'] is not None


def test_replay_cli_writes_json_and_refuses_a_missing_bag(sim_bag, tmp_path, capsys):
    assert main(['replay', str(sim_bag), '--json', str(tmp_path / 's.json'), '--report', str(tmp_path / 'r'),
                 '--no-video']) == 0
    assert json.loads((tmp_path / 's.json').read_text())['frames'] > 0
    assert 'report:' in capsys.readouterr().out
    assert not (tmp_path / 'r' / 'bev.mp4').exists()
    assert main(['replay', str(tmp_path / 'nope')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'no such recording' in err[0]


def test_the_demo_drive_replays_with_its_blackout_reported(demo_bag, tmp_path, fusion_config, pipeline):
    summary = replay(demo_bag, fusion_config, ReplayOptions(out_bag=tmp_path / 'out', report=tmp_path / 'report',
                                                            picture_every=50, progress=False), pipeline)
    assert summary['frames'] == 300 and summary['dropped']['total'] == 0
    assert summary['detections'] > 10 * summary['frames']  # a busy street
    front = summary['sensors']['cam_front']
    # Black from 4.5 s to 9 s: about 90 of the 300 frames; health says so within a few frames of each end.
    assert 80 <= front['health_frames'].get('failed', 0) <= 95
    assert summary['sensors']['cam_back']['health_frames'].get('failed', 0) == 0
    assert summary['flagged'] > 0
    with BagReader(tmp_path / 'out') as reader:
        assert next(t.count for t in reader.topics if t.name == OBJECTS) == 300
    assert len(list((tmp_path / 'report' / 'frames').glob('bev_*.png'))) == 6
