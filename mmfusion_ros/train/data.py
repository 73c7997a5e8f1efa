"""Training frames: simulator scenes -> cached frames -> augmented network inputs and targets.

The scenes are ordinary bags (``mmfusion simulate --scenes``), read through the same key-frame
assembler evaluation uses. Assembling a frame (JPEG decode, lidar deskew) costs more than a training
step's data needs, so each used frame is cached once as one uncompressed ``.npz`` (images at their
recorded size, clouds in the base frame, ground truth); the cache of a scene is complete when its
``frames.json`` exists, so an interrupted run resumes.

Each training sample then draws, from its own seeded generator, one global transform (rotation about
z, scale, mirrors, a small shift) applied alike to the clouds, the boxes (centre, size, yaw,
velocity) and the cameras' extrinsics (so the lift lands the image features where the transformed
points are), and the modality dropout of ``DropoutConfig``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..config import FusionConfig
from ..errors import ModelError
from ..eval.run import evidence_counts
from ..frame import LIDAR_FIELDS, RADAR_FIELDS, Frame
from ..io.json_file import write_json
from ..model.config import ModelConfig
from ..model.decode import HeadTargets, encode_targets
from ..model.inputs import CameraGeometryCache, ModelInputs, camera_inputs, cloud_columns, model_inputs, pillar_inputs
from ..sync.keyframes import bag_frames
from ..types import Detections3D
from .config import AugmentConfig, DropoutConfig

__all__ = ['TrainSample', 'build_sample', 'cache_dataset', 'depth_targets', 'frame_arrays', 'load_frame']


# ---------------------------------------------------------------------------------------------------
# Cache


def frame_arrays(frame: Frame, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A frame as plain arrays (what the cache stores); boxes of other classes are left out."""
    truth = frame.ground_truth
    if truth is None:
        raise ModelError(f'frame {frame.stamp_ns}: no ground truth; training needs annotated recordings')
    # Boxes no sensor has a return from (behind a building) teach the network to guess: left out, as
    # evaluation leaves them out.
    known = np.array([label in classes for label in truth.labels], bool) & \
        (evidence_counts(truth, frame.lidar, frame.radar) > 0)
    arrays = {
        'stamp_ns': np.int64(frame.stamp_ns),
        'lidar': frame.lidar if frame.lidar is not None else np.zeros((0, len(LIDAR_FIELDS)), np.float32),
        'has_lidar': np.bool_(frame.lidar is not None),
        'radar': frame.radar if frame.radar is not None else np.zeros((0, len(RADAR_FIELDS)), np.float32),
        'has_radar': np.bool_(frame.radar is not None),
        'box_centers': truth.centers[known], 'box_sizes': truth.sizes[known], 'box_yaws': truth.yaws[known],
        'box_velocities': np.nan_to_num(truth.velocities[known]),
        'box_labels': np.array([classes.index(label) for label, k in zip(truth.labels, known) if k], np.int64),
    }
    if frame.cameras:
        sizes = {view.pixels.shape for view in frame.cameras}
        if len(sizes) == 1:
            arrays['images'] = np.stack([view.pixels for view in frame.cameras])
            arrays['camera_K'] = np.stack([view.intrinsics.p[:, :3] for view in frame.cameras])
            arrays['camera_T'] = np.stack([view.camera_to_base.matrix for view in frame.cameras])
    return arrays


def cache_dataset(dataset: Path, cache: Path, config: FusionConfig, model: ModelConfig, stride: int,
                  progress: bool = True) -> list[Path]:
    """Cache every ``stride``-th annotated frame of each scene bag in ``dataset``; the frame files."""
    from tqdm import tqdm

    scenes = sorted(p for p in dataset.iterdir() if p.is_dir() and p.name.startswith('scene_'))
    if not scenes:
        raise ModelError(f'{dataset}: no scene_* bags to train on')
    files: list[Path] = []
    for scene in tqdm(scenes, desc='caching frames', unit='scene', disable=not progress):
        folder = cache / scene.name
        index = folder / 'frames.json'
        if not index.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            names = []
            for i, frame in enumerate(bag_frames(scene, config, lidar_sweeps=model.lidar.sweeps,
                                                 radar_sweeps=model.radar.sweeps, every=stride)):
                name = f'frame_{i:05d}.npz'
                tmp = folder / (name + '.tmp.npz')
                np.savez(tmp, **frame_arrays(frame, model.head.classes))
                tmp.replace(folder / name)
                names.append(name)
            write_json(index, {'frames': names})
        files += [folder / name for name in json.loads(index.read_text())['frames']]
    return files


def load_frame(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


# ---------------------------------------------------------------------------------------------------
# Samples


@dataclass(frozen=True, eq=False)
class TrainSample:
    inputs: ModelInputs
    targets: HeadTargets
    depth: torch.Tensor | None  # (Ncam, Hf, Wf) int64 depth bin per feature pixel, -1 where unknown
    boxes: Detections3D  # the augmented ground truth (for the consistency loss and checks)


def _augmentation(rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """(4, 4) float64: mirror, then rotate about z, then scale, then shift."""
    angle = math.radians(rng.uniform(-config.rotation_deg, config.rotation_deg))
    scale = rng.uniform(*config.scale)
    mirror = np.diag([-1.0 if rng.random() < config.flip_x else 1.0,
                      -1.0 if rng.random() < config.flip_y else 1.0, 1.0])
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    A = np.eye(4)
    A[:3, :3] = scale * rotation @ mirror
    A[:2, 3] = rng.normal(0.0, config.translation_std_m, 2)
    return A


def _transform_boxes(arrays: dict[str, np.ndarray], A: np.ndarray, classes: tuple[str, ...]) -> Detections3D:
    """The cached boxes moved by A (4, 4), in base_link, labelled with their class names."""
    linear = A[:3, :3]
    scale = float(np.cbrt(abs(np.linalg.det(linear))))
    centers = arrays['box_centers'] @ linear.T + A[:3, 3]
    heading = np.stack([np.cos(arrays['box_yaws']), np.sin(arrays['box_yaws']), np.zeros(len(centers))], axis=1)
    heading = heading @ linear.T
    velocity = np.hstack([arrays['box_velocities'], np.zeros((len(centers), 1))]) @ linear.T
    return Detections3D(0, 'base_link', centers, arrays['box_sizes'] * scale, np.arctan2(heading[:, 1], heading[:, 0]),
                        velocity[:, :2], labels=tuple(classes[int(i)] for i in arrays['box_labels']),
                        scores=np.ones(len(centers)))


def _transform_cloud(points: np.ndarray, A: np.ndarray, velocity_columns: tuple[int, int] | None) -> np.ndarray:
    out = points.copy()
    out[:, :3] = points[:, :3] @ A[:3, :3].T.astype(np.float32) + A[:3, 3].astype(np.float32)
    if velocity_columns is not None:
        i, j = velocity_columns
        v = np.hstack([points[:, [i, j]], np.zeros((len(points), 1), np.float32)]) @ A[:3, :3].T.astype(np.float32)
        out[:, [i, j]] = v[:, :2]
    return out


def depth_targets(points: np.ndarray, K: np.ndarray, T: np.ndarray, image_size: tuple[int, int],
                  model: ModelConfig) -> np.ndarray:
    """(Ncam, Hf, Wf) int64: the depth bin of the nearest lidar point in each feature pixel, or -1.

    points (N, 3) in the base frame; K (Ncam, 3, 3) and T (Ncam, 4, 4) camera-to-base, as the lift
    uses them (the same linear map for both, so augmentation does not change the target).
    """
    Wf, Hf = model.camera.feature_size
    W, H = image_size
    low, high, step = model.camera.depth_bins
    D = model.camera.num_depth_bins
    out = np.full((len(K), Hf, Wf), np.inf)
    for n in range(len(K)):
        inverse = np.linalg.inv(T[n])
        cam = points @ inverse[:3, :3].T + inverse[:3, 3]  # (N, 3)
        ahead = cam[:, 2] > low
        cam = cam[ahead]
        uvw = cam @ K[n].T
        u = uvw[:, 0] / uvw[:, 2] * (Wf / W)
        v = uvw[:, 1] / uvw[:, 2] * (Hf / H)
        inside = (u >= 0) & (u < Wf) & (v >= 0) & (v < Hf)
        np.minimum.at(out[n], (v[inside].astype(np.int64), u[inside].astype(np.int64)), cam[inside, 2])
    bins = np.floor((out - low) / step + 0.5)
    valid = np.isfinite(out) & (out < high)
    return np.where(valid, np.clip(bins, 0, D - 1), -1).astype(np.int64)


def build_sample(arrays: dict[str, np.ndarray], model: ModelConfig, cache: CameraGeometryCache,
                 rng: np.random.Generator, augment: AugmentConfig | None, dropout: DropoutConfig | None) -> TrainSample:
    """One training sample from a cached frame: augmentation, dropout, inputs, targets."""
    A = _augmentation(rng, augment) if augment is not None else np.eye(4)
    have = {'camera': 'images' in arrays, 'lidar': bool(arrays['has_lidar']), 'radar': bool(arrays['has_radar'])}
    keep = dict(have)
    degraded = {m: False for m in have}
    if dropout is not None:
        # The subset of modalities the frame keeps, drawn from the schedule (all, each one removed,
        # each alone), then limited to what the frame has; never nothing when it has anything.
        subsets = (('camera', 'lidar', 'radar'), ('lidar', 'radar'), ('camera', 'radar'), ('camera', 'lidar'),
                   ('camera',), ('lidar',), ('radar',))
        weights = np.array([dropout.all_kept] + [dropout.one_removed] * 3 + [dropout.alone] * 3)
        chosen = subsets[int(rng.choice(len(subsets), p=weights / weights.sum()))]
        keep = {m: have[m] and m in chosen for m in have}
        if not any(keep.values()) and any(have.values()):
            keep[str(rng.choice([m for m in have if have[m]]))] = True
        degraded = {m: keep[m] and rng.random() < dropout.degraded for m in have}
    health = [float(rng.uniform(0.0, 0.3)) if degraded[m] else float(rng.uniform(0.7, 1.0)) if dropout else 1.0
              for m in ('camera', 'lidar', 'radar')]

    camera = None
    depth = None
    if keep['camera']:
        cameras = np.arange(len(arrays['images']))
        if dropout is not None and len(cameras) > 1:
            kept = cameras[rng.random(len(cameras)) >= dropout.single_camera]
            cameras = kept if len(kept) else cameras[rng.integers(len(cameras), size=1)]
        images = arrays['images'][cameras]
        K = arrays['camera_K'][cameras]
        T = A @ arrays['camera_T'][cameras]
        size = (images.shape[2], images.shape[1])
        if degraded['camera']:
            images = (rng.random(images.shape) * 255).astype(np.uint8) if rng.random() < 0.5 else np.zeros_like(images)
        geometry = cache.geometry_from_arrays(K, T, size)
        camera = camera_inputs(list(images), geometry, model.camera)
        if have['lidar'] and len(arrays['lidar']):
            current = arrays['lidar'][arrays['lidar'][:, -1] < 1e-6, :3].astype(np.float64)
            depth = torch.from_numpy(depth_targets(current @ A[:3, :3].T + A[:3, 3], K, T, size, model))

    def cloud(modality: str, fields: tuple[str, ...], velocity: tuple[int, int] | None):
        if not keep[modality]:
            return None
        points = _transform_cloud(arrays[modality], A, velocity)
        if degraded[modality]:  # a broken sensor: points anywhere, in the grid's height band
            count = int(rng.integers(100, 3000))
            noise = np.zeros((count, points.shape[1]), np.float32)
            grid = model.grid
            noise[:, 0] = rng.uniform(*grid.x_range, count)
            noise[:, 1] = rng.uniform(*grid.y_range, count)
            noise[:, 2] = rng.uniform(*grid.z_range, count)
            noise[:, 3:] = rng.normal(0.0, 1.0, (count, points.shape[1] - 3))
            noise[:, -1] = np.abs(noise[:, -1]) * 0.1
            points = noise
        encoder = getattr(model, modality)
        return pillar_inputs(cloud_columns(points, fields, encoder.point_fields, modality), model.grid, encoder,
                             modality)

    lidar = cloud('lidar', LIDAR_FIELDS, None)
    radar = cloud('radar', RADAR_FIELDS, (3, 4))
    boxes = _transform_boxes(arrays, A, model.head.classes)
    targets = encode_targets(boxes, model.grid, model.head)
    return TrainSample(model_inputs(camera, lidar, radar, health), targets, depth, boxes)


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The frame order of one epoch: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 7]).permutation(count)


def sample_stream(files: list[Path], seed: int, start: int = 0) -> Iterator[tuple[int, Path]]:
    """(sample number, frame file) from sample ``start`` on, epoch after epoch, deterministically."""
    n = start
    while True:
        epoch, offset = divmod(n, len(files))
        order = epoch_order(len(files), seed, epoch)
        for i in range(offset, len(files)):
            yield n, files[order[i]]
            n += 1
