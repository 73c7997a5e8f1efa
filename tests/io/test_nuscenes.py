"""The nuScenes keyframe reader against ../shared/data/real/nuscenes_keyframe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mmfusion_ros.errors import CalibrationError
from mmfusion_ros.io.nuscenes import IGNORED_LABEL, load_nuscenes_keyframe

REAL = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'real'
KEYFRAME = REAL / 'nuscenes_keyframe'
pytestmark = pytest.mark.skipif(not KEYFRAME.is_dir(), reason=f'nuScenes keyframe not found at {KEYFRAME}')

CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')


def test_keyframe_contents() -> None:
    frame = load_nuscenes_keyframe(KEYFRAME)
    assert frame.token == 'ca9a282c9e77460f8360f564131a8af5'
    assert frame.stamp_ns == 1532402927647951000
    assert len(frame.lidar) == 34_688 and frame.lidar.dropped_invalid == 0
    assert frame.lidar.frame_id == 'LIDAR_TOP' and frame.lidar.stamp_ns == frame.stamp_ns
    assert len(np.unique(frame.lidar.field('ring'))) == 32
    assert frame.lidar_path.name.endswith('__LIDAR_TOP__1532402927647951.pcd.bin')

    assert tuple(frame.cameras) == CAMERAS
    for name, camera in frame.cameras.items():
        assert camera.image_path.is_file()
        # the file name carries the stamp in microseconds
        assert camera.image_path.stem.endswith(f'__{name}__{camera.stamp_ns // 1000}')
        assert 0.4e6 <= frame.stamp_ns - camera.stamp_ns <= 43.2e6  # 0.5 to 43 ms before the lidar
        assert camera.cam2img[2].tolist() == [0.0, 0.0, 1.0] and camera.cam2img[0, 0] > 800
    front = frame.cameras['CAM_FRONT']
    assert front.lidar_to_cam.translation == pytest.approx([0.016873, -0.329024, -0.429222], abs=1e-6)

    boxes = frame.boxes
    assert len(boxes) == 69 and boxes.frame_id == 'LIDAR_TOP' and boxes.stamp_ns == frame.stamp_ns
    assert boxes.labels.count('pedestrian') == 30 and boxes.labels.count('barrier') == 22
    assert boxes.labels.count(IGNORED_LABEL) == 1
    assert boxes.centers[0] == pytest.approx([18.414385, 59.516025, 0.769635])
    assert boxes.sizes[0] == pytest.approx([0.669, 0.621, 1.642])  # l, w, h
    assert np.all(boxes.scores == 1.0)
    assert int(np.isnan(boxes.velocities[:, 0]).sum()) == 2  # nuScenes has no velocity for these
    assert frame.box_valid.sum() == 66 and frame.box_lidar_points.sum() > 0
    assert frame.categories[:3] == ('car', 'truck', 'trailer') and len(frame.categories) == 10


def test_static_calibration_is_consistent_with_motion_compensated_lidar_to_cam() -> None:
    """The camera nearest in time (CAM_BACK_LEFT, 0.5 ms) matches the static chain to ~5 mm."""
    frame = load_nuscenes_keyframe(KEYFRAME)
    camera = frame.cameras['CAM_BACK_LEFT']
    static = camera.cam_to_ego.inverse() @ frame.lidar_to_ego
    assert np.abs(static.matrix - camera.lidar_to_cam.matrix).max() < 0.006


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r'nothing: not a nuScenes keyframe folder'):
        load_nuscenes_keyframe(tmp_path / 'nothing')
    with pytest.raises(CalibrationError, match=r'expected one \*.derived.json info file, found 0'):
        load_nuscenes_keyframe(tmp_path)
    copy = tmp_path / 'frame'
    copy.mkdir()
    for path in KEYFRAME.iterdir():
        if path.suffix in ('.json', '.bin'):
            shutil.copy(path, copy / path.name)
    sweep = next(copy.glob('*.pcd.bin'))
    sweep.chmod(0o644)
    sweep.write_bytes(sweep.read_bytes()[:-4])
    with pytest.raises(CalibrationError, match=r'173439 float32 values is not a whole number of '
                                               r'5-value points'):
        load_nuscenes_keyframe(copy)
    sweep.unlink()
    with pytest.raises(CalibrationError, match=r'cannot read the lidar sweep'):
        load_nuscenes_keyframe(copy)
    info = next(copy.glob('*.derived.json'))
    info.chmod(0o644)
    info.write_text('{"metainfo": {}}')
    with pytest.raises(CalibrationError, match=r"not an mmdet3d info file \(KeyError: 'categories'\)"):
        load_nuscenes_keyframe(copy)
