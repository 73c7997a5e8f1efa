from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmfusion_ros.cli import main


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: a separate process, so a traceback would show on stderr."""
    return subprocess.run([sys.executable, '-m', 'mmfusion_ros.cli', *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert 'Traceback' not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_inspect_nuscenes_bag(real_data, tmp_path, storage, capsys):
    out = tmp_path / 'inspect.json'
    assert main(['inspect', str(real_data / 'bags' / f'nuscenes_demo_keyframe_{storage}'),
                 '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['storage'] == storage
    assert result['duration_s'] == pytest.approx(0.043107)
    topics = {t['name']: t for t in result['topics']}
    assert len(topics) == 15
    assert set(topics['/LIDAR_TOP']) == {'name', 'type', 'count', 'rate_hz'}
    assert topics['/LIDAR_TOP'] == {'name': '/LIDAR_TOP', 'type': 'sensor_msgs/msg/PointCloud2',
                                    'count': 1, 'rate_hz': 0.0}
    assert topics['/tf']['count'] == 7
    assert topics['/tf']['rate_hz'] > 0
    bindings = {b['sensor']: b for b in result['bindings']}
    assert bindings['lidar_top']['status'] == 'bound'
    assert all(bindings[f'cam_{c}']['status'] == 'bound'
               for c in ('front', 'front_left', 'front_right', 'back', 'back_left', 'back_right'))
    assert bindings['radar_front']['status'] == 'missing'
    printed = capsys.readouterr().out
    assert '/CAM_FRONT/image_rect_compressed' in printed and 'bound' in printed


def test_inspect_merges_several_bags(real_data, tmp_path):
    out = tmp_path / 'inspect.json'
    assert main(['inspect', str(real_data / 'bags' / 'nuscenes_demo_keyframe_mcap'),
                 str(real_data / 'bags' / 'pjlab_radar_lidar_sqlite3'), '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['storage'] == 'mixed'
    assert result['message_count'] == 21 + 12
    topics = {t['name']: t for t in result['topics']}
    assert topics['/tf_static']['count'] == 2  # one in each bag
    assert topics['/front_radar/tracks']['count'] == 10


def test_not_a_bag_exits_2_with_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / 'notes.txt'
    path.write_text('not a recording\n')
    out = tmp_path / 'inspect.json'
    proc = run_cli('inspect', path, '--json', out)
    assert_one_line_error(proc, r'^mmfusion inspect: error: .*notes\.txt')
    assert not out.exists()


def test_missing_path(tmp_path):
    assert_one_line_error(run_cli('inspect', tmp_path / 'nowhere'), r'nowhere')


def test_truncated_mcap_is_refused_or_recovered_on_request(real_data, tmp_path):
    source = real_data / 'bags' / 'nuscenes_demo_keyframe_mcap' / 'nuscenes_demo_keyframe_mcap.mcap'
    cut = tmp_path / 'cut.mcap'
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    out = tmp_path / 'inspect.json'
    refused = run_cli('inspect', cut, '--json', out)
    assert_one_line_error(refused, r'cut\.mcap: MCAP file is truncated .*--recover')
    assert not out.exists()

    recovered = run_cli('inspect', cut, '--recover', '--json', out)
    assert recovered.returncode == 0, recovered.stderr
    assert 'cut.mcap is truncated' in recovered.stderr
    result = json.loads(out.read_text())
    assert 0 < result['message_count'] < 21
    assert result['truncated'][0]['file_size'] == cut.stat().st_size
    assert result['truncated'][0]['messages_complete'] is False


def test_bad_config_names_the_key(real_data, tmp_path):
    config = tmp_path / 'bad.yaml'
    config.write_text('/**:\n  ros__parameters:\n    sensors: {lidar: {modality: lidar, topic: /x, '
                      'type: sensor_msgs/msg/PointCloud2, rate: 3}}\n')
    proc = run_cli('inspect', real_data / 'bags' / 'nuscenes_demo_keyframe_mcap', '--config', config)
    assert_one_line_error(proc, r'bad\.yaml: sensors\.lidar\.rate: unknown parameter')


def test_unwritable_json_path_is_a_clean_error(real_data, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    proc = run_cli('inspect', real_data / 'bags' / 'nuscenes_demo_keyframe_mcap', '--json',
                   blocker / 'inspect.json')
    assert_one_line_error(proc, r'cannot write JSON')


def test_console_script_is_installed():
    exe = shutil.which('mmfusion', path=str(Path(sys.executable).parent))
    assert exe is not None
    proc = subprocess.run([exe, '--version'], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith('mmfusion ')
