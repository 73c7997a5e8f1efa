"""A nuScenes keyframe as mmdetection3d stores it: one ``*.derived.json`` info file beside its files.

The folder holds the LIDAR_TOP sweep (``*.pcd.bin``, float32 x, y, z, intensity, ring per point),
the six camera JPEGs and the info file (mmdet3d "info_version 1.1", converted to JSON) with the
calibration, the ego pose and the ground-truth boxes. This reader returns exactly what those files
hold, typed: it is the reference the bag-based path (decode, TF buffer, projection) is checked
against.

Conventions of the info file: every matrix is row-major and named ``A2B`` (``p_B = A2B @ p_A``);
LIDAR_TOP axes are x right, y forward, z up; ego is x forward, y left, z up; cameras are OpenCV.
``lidar2cam`` is motion-compensated: lidar at the lidar stamp, camera at the camera stamp, related
through the global frame. Boxes are ``[x, y, z, l, w, h, yaw]`` in the lidar frame, (x, y, z) the box
centre.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from mmfusion_ros.errors import CalibrationError
from mmfusion_ros.types import Detections3D, PointCloud, RigidTransform

__all__ = [
    'IGNORED_LABEL',
    'LIDAR_FRAME',
    'NuscenesCamera',
    'NuscenesKeyframe',
    'load_nuscenes_keyframe',
]

LIDAR_FRAME = 'LIDAR_TOP'
IGNORED_LABEL = 'ignore'  # mmdet3d's label -1: an annotated object outside the ten classes
_POINT_CHANNELS = 5  # x, y, z, intensity, ring


@dataclass(frozen=True, eq=False)
class NuscenesCamera:
    """One camera of the keyframe: its image file, stamp and calibration."""

    name: str  # 'CAM_FRONT', ...; also its frame id
    image_path: Path
    stamp_ns: int
    cam2img: np.ndarray  # (3, 3) float64 intrinsic matrix K of the rectified image
    cam_to_ego: RigidTransform  # static mounting, ego at the camera's own stamp
    lidar_to_cam: RigidTransform  # motion-compensated: lidar at the lidar stamp, camera at its stamp


@dataclass(frozen=True, eq=False)
class NuscenesKeyframe:
    """A keyframe sample: lidar sweep, cameras, poses and ground truth, all from the info file."""

    token: str
    stamp_ns: int  # the LIDAR_TOP stamp, which is the sample's stamp
    lidar: PointCloud  # frame LIDAR_TOP, fields 'intensity' (float32) and 'ring' (float32)
    lidar_path: Path
    lidar_to_ego: RigidTransform
    ego_to_global: RigidTransform  # ego pose at the lidar stamp
    cameras: Mapping[str, NuscenesCamera]  # by name, in the info file's order
    boxes: Detections3D  # frame LIDAR_TOP; scores 1; velocities NaN where nuScenes has none
    box_valid: np.ndarray  # (N,) bool: mmdet3d's bbox_3d_isvalid (enough points to learn from)
    box_lidar_points: np.ndarray  # (N,) int64 lidar points inside each box
    box_radar_points: np.ndarray  # (N,) int64 radar points inside each box
    categories: tuple[str, ...]  # class names by label index


def load_nuscenes_keyframe(folder: str | Path) -> NuscenesKeyframe:
    """Read the keyframe in ``folder`` (one ``*.derived.json`` and the files it names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f'{folder}: not a nuScenes keyframe folder (no such directory)')
    infos = sorted(folder.glob('*.derived.json'))
    if len(infos) != 1:
        raise CalibrationError(f'{folder}: expected one *.derived.json info file, found {len(infos)}')
    info_path = infos[0]
    try:
        document = json.loads(info_path.read_text())
        categories_by_index = document['metainfo']['categories']
        samples = document['data_list']
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CalibrationError(f'{info_path}: not an mmdet3d info file ({type(err).__name__}: '
                               f'{err})') from err
    if len(samples) != 1:
        raise CalibrationError(f'{info_path}: expected one sample in data_list, found {len(samples)}')
    categories = tuple(name for name, _ in sorted(categories_by_index.items(), key=lambda kv: kv[1]))
    try:
        return _keyframe(folder, info_path, samples[0], categories)
    except KeyError as err:
        raise CalibrationError(f'{info_path}: missing key {err}') from err


def _keyframe(folder: Path, info_path: Path, sample: dict, categories: tuple[str, ...]) -> NuscenesKeyframe:
    stamp = _stamp_ns(sample['timestamp'])
    lidar_info = sample['lidar_points']
    lidar_path = folder / lidar_info['lidar_path']
    lidar = _read_sweep(lidar_path, stamp, int(lidar_info.get('num_pts_feats', _POINT_CHANNELS)))

    cameras = {}
    for name, cam in sample['images'].items():
        cameras[name] = NuscenesCamera(
            name=name,
            image_path=folder / cam['img_path'],
            stamp_ns=_stamp_ns(cam['timestamp']),
            cam2img=_matrix(cam['cam2img'], (3, 3), info_path, f'images.{name}.cam2img'),
            cam_to_ego=_rigid(cam['cam2ego'], info_path, f'images.{name}.cam2ego'),
            lidar_to_cam=_rigid(cam['lidar2cam'], info_path, f'images.{name}.lidar2cam'),
        )

    instances = sample['instances']
    boxes = np.array([inst['bbox_3d'] for inst in instances], np.float64).reshape(-1, 7)
    label_index = [int(inst['bbox_label_3d']) for inst in instances]
    if bad := [i for i in label_index if not -1 <= i < len(categories)]:
        raise CalibrationError(f'{info_path}: box label {bad[0]} is not a category index '
                               f'(0..{len(categories) - 1}, or -1)')
    detections = Detections3D(
        stamp_ns=stamp,
        frame_id=LIDAR_FRAME,
        centers=boxes[:, :3],
        sizes=boxes[:, 3:6],
        yaws=boxes[:, 6],
        velocities=np.array([inst['velocity'] for inst in instances], np.float64).reshape(-1, 2),
        labels=tuple(IGNORED_LABEL if i < 0 else categories[i] for i in label_index),
        scores=np.ones(len(instances)),
    )
    return NuscenesKeyframe(
        token=str(sample['token']),
        stamp_ns=stamp,
        lidar=lidar,
        lidar_path=lidar_path,
        lidar_to_ego=_rigid(lidar_info['lidar2ego'], info_path, 'lidar_points.lidar2ego'),
        ego_to_global=_rigid(sample['ego2global'], info_path, 'ego2global'),
        cameras=MappingProxyType(cameras),
        boxes=detections,
        box_valid=np.array([bool(inst['bbox_3d_isvalid']) for inst in instances], bool),
        box_lidar_points=np.array([inst['num_lidar_pts'] for inst in instances], np.int64),
        box_radar_points=np.array([inst['num_radar_pts'] for inst in instances], np.int64),
        categories=categories,
    )


def _stamp_ns(seconds: float) -> int:
    """nuScenes stamps are whole microseconds; the info file stores them as float seconds."""
    return round(float(seconds) * 1e6) * 1000


def _read_sweep(path: Path, stamp_ns: int, channels: int) -> PointCloud:
    if channels != _POINT_CHANNELS:
        raise CalibrationError(f'{path}: expected {_POINT_CHANNELS} values per point, the info file '
                               f'says {channels}')
    try:
        flat = np.fromfile(path, dtype='<f4')
    except OSError as err:
        raise CalibrationError(f'{path}: cannot read the lidar sweep ({err.strerror})') from err
    if flat.size % channels:
        raise CalibrationError(f'{path}: {flat.size} float32 values is not a whole number of '
                               f'{channels}-value points')
    points = flat.reshape(-1, channels)
    finite = np.isfinite(points[:, :3]).all(axis=1)
    points = points[finite]
    return PointCloud(stamp_ns, LIDAR_FRAME, np.ascontiguousarray(points[:, :3]),
                      {'intensity': points[:, 3].copy(), 'ring': points[:, 4].copy()},
                      dropped_invalid=int((~finite).sum()))


def _matrix(values: object, shape: tuple[int, int], path: Path, key: str) -> np.ndarray:
    matrix = np.array(values, np.float64)
    if matrix.shape != shape or not np.all(np.isfinite(matrix)):
        raise CalibrationError(f'{path}: {key} is not a finite {shape[0]}x{shape[1]} matrix '
                               f'(shape {matrix.shape})')
    return matrix


def _rigid(values: object, path: Path, key: str) -> RigidTransform:
    matrix = _matrix(values, (4, 4), path, key)
    try:
        return RigidTransform.from_matrix(matrix)
    except ValueError as err:
        raise CalibrationError(f'{path}: {key} is not a rigid transform') from err
