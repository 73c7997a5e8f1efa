"""The realistic inputs ``mmfusion bench kernels`` times each kernel on.

Sizes (from the issue that set the targets): a 200k-point lidar sweep, six cameras at 704x256 (the
camera lift's feature map at stride 8: 88x32, 118 depth bins, 80 channels), a 0.4 m grid over
+-51.2 m (256 x 256 cells), 500 boxes. Inputs are random but shaped like the real thing (points
spread over the grid and around the car, boxes of car size), built from a fixed seed.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..config import GridConfig
from . import bev_pool, boxes, iou, motion, pillars, projection, scatter
from .benchmark import KernelCase

__all__ = ['first_calls', 'kernel_cases']

GRID = GridConfig(x_range=(-51.2, 51.2), y_range=(-51.2, 51.2), z_range=(-5.0, 3.0), cell_size=0.4)
LIDAR_POINTS = 200_000
MAX_POINTS_PER_PILLAR = 20
CAMERAS = 6
IMAGE_SIZE = (704, 256)  # width, height
FEATURE_SIZE = (88, 32)  # the camera feature map, stride 8
DEPTH_BINS = np.arange(1.0, 60.0, 0.5)  # 118 bins
BEV_CHANNELS = 80
PILLAR_CHANNELS = 64
BOXES = 500


def _sweep(rng: np.random.Generator, count: int = LIDAR_POINTS) -> np.ndarray:
    """(count, 5) x y z intensity time: a ring-like spread around the car, denser near it."""
    radius = rng.gamma(2.0, 10.0, count).astype(np.float32) + 1.5
    azimuth = rng.uniform(-math.pi, math.pi, count).astype(np.float32)
    z = rng.normal(-1.0, 0.8, count).astype(np.float32)
    intensity = rng.uniform(0, 255, count).astype(np.float32)
    time = rng.uniform(0, 0.05, count).astype(np.float32)
    return np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), z, intensity, time], axis=1)


def _cameras() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six cameras around the car: base->camera transforms (6,4,4), K (6,3,3), camera->base (6,4,4)."""
    width, height = IMAGE_SIZE
    focal = (width / 2) / math.tan(math.radians(70) / 2)
    k = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    body_to_optical = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    to_base = []
    for yaw_deg in (0, -55, 55, 180, 110, -110):
        yaw = math.radians(yaw_deg)
        rotation = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
        matrix = np.eye(4)
        matrix[:3, :3] = rotation @ body_to_optical
        matrix[:3, 3] = (1.5 * math.cos(yaw), 1.5 * math.sin(yaw), 1.6)
        to_base.append(matrix)
    camera_to_base = np.stack(to_base)
    return np.linalg.inv(camera_to_base), np.repeat(k[None], CAMERAS, axis=0), camera_to_base


def _boxes(rng: np.random.Generator, count: int = BOXES) -> np.ndarray:
    """(count, 7) x y z l w h yaw: car-sized boxes over the grid."""
    centre = np.column_stack([rng.uniform(-50, 50, count), rng.uniform(-50, 50, count), rng.uniform(-1, 0, count)])
    size = np.column_stack([rng.uniform(3.5, 5.5, count), rng.uniform(1.6, 2.1, count), rng.uniform(1.4, 2.0, count)])
    return np.column_stack([centre, size, rng.uniform(-math.pi, math.pi, count)])


# -- cases ----------------------------------------------------------------------------------------

def _projection_case() -> KernelCase:
    def build(rng):
        base_to_camera, k, _ = _cameras()
        distortion = np.zeros((CAMERAS, 5))
        sizes = np.tile(np.array(IMAGE_SIZE), (CAMERAS, 1))
        return (_sweep(rng)[:, :3].copy(), base_to_camera, k, distortion, sizes)

    def moved(args):
        points = args[0]
        return points.nbytes + len(points) * CAMERAS * (4 + 4 + 8 + 4) // 3  # in, ~1/3 of pairs hit

    return KernelCase('project_points', f'{LIDAR_POINTS} points x {CAMERAS} cameras {IMAGE_SIZE}', build,
                      projection.project_points, projection.project_points_baseline, 'torch matmul + masks',
                      moved)


def _depth_images_case() -> KernelCase:
    def build(rng):
        base_to_camera, k, _ = _cameras()
        sizes = np.tile(np.array(IMAGE_SIZE), (CAMERAS, 1))
        hits = projection.project_points(_sweep(rng)[:, :3].copy(), base_to_camera, k, np.zeros((CAMERAS, 5)), sizes)
        return (hits, sizes, CAMERAS)

    def moved(args):
        hits = args[0]
        return len(hits.depth) * (4 + 8 + 4) + CAMERAS * IMAGE_SIZE[0] * IMAGE_SIZE[1] * 4

    return KernelCase('depth_images', f'z-buffer, {CAMERAS} cameras {IMAGE_SIZE}', build, projection.depth_images,
                      projection.depth_images_baseline, 'numpy lexsort + unique', moved, memory_bound=True)


def _pillarize_case() -> KernelCase:
    def build(rng):
        return (_sweep(rng), GRID, MAX_POINTS_PER_PILLAR)

    def moved(args):
        points = args[0]
        return points.nbytes + len(points) * (points.shape[1] + 5) * 4 + len(points) * 8

    return KernelCase('pillarize', f'{LIDAR_POINTS} points, grid {GRID.shape}, K={MAX_POINTS_PER_PILLAR}',
                      build, pillars.pillarize, pillars.pillarize_baseline, 'torch stable sort', moved)


def _scatter_max_case() -> KernelCase:
    def build(rng):
        cloud = pillars.pillarize(_sweep(rng), GRID, MAX_POINTS_PER_PILLAR)
        features = rng.standard_normal((len(cloud.point_pillar), PILLAR_CHANNELS)).astype(np.float32)
        return (features, cloud.point_pillar, len(cloud.coords))

    def moved(args):
        features, _, count = args
        return features.nbytes + features.shape[0] * 4 + count * features.shape[1] * 4

    return KernelCase('scatter_max', f'points to pillars, {PILLAR_CHANNELS} channels', build,
                      scatter.scatter_max, scatter.scatter_max_baseline, 'torch scatter_reduce amax', moved,
                      memory_bound=True)


def _scatter_to_bev_case() -> KernelCase:
    def build(rng):
        cloud = pillars.pillarize(_sweep(rng), GRID, MAX_POINTS_PER_PILLAR)
        features = rng.standard_normal((len(cloud.coords), PILLAR_CHANNELS)).astype(np.float32)
        return (features, cloud.coords, GRID.shape)

    def moved(args):
        features, coords, shape = args
        return features.nbytes + coords.nbytes + features.shape[1] * shape[0] * shape[1] * 4

    return KernelCase('scatter_to_bev', f'pillars to {GRID.shape} x {PILLAR_CHANNELS}', build,
                      scatter.scatter_to_bev, scatter.scatter_to_bev_baseline, 'torch index_copy_', moved,
                      memory_bound=True)


def _bev_pool_case() -> KernelCase:
    _, k, camera_to_base = _cameras()
    geometry = bev_pool.bev_pool_geometry(
        bev_pool.frustum_points(k, camera_to_base, IMAGE_SIZE, FEATURE_SIZE, DEPTH_BINS.astype(np.float32)), GRID)

    def build(rng):
        width, height = FEATURE_SIZE
        logits = rng.standard_normal((CAMERAS, len(DEPTH_BINS), height, width)).astype(np.float32)
        depth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        features = rng.standard_normal((CAMERAS, height, width, BEV_CHANNELS)).astype(np.float32)
        return (depth.astype(np.float32), features, geometry)

    def moved(args):
        depth, features, _ = args
        return depth.nbytes + features.nbytes + BEV_CHANNELS * GRID.shape[0] * GRID.shape[1] * 4

    return KernelCase('bev_pool', f'{CAMERAS} cams {FEATURE_SIZE} x {len(DEPTH_BINS)} bins x {BEV_CHANNELS} ch '
                      f'-> {GRID.shape}', build, bev_pool.bev_pool, bev_pool.bev_pool_baseline,
                      'torch index_add_', moved)


def _points_in_boxes_case() -> KernelCase:
    def build(rng):
        return (_sweep(rng)[:, :3].copy(), _boxes(rng))

    def moved(args):
        points, box_array = args
        return points.nbytes + box_array.nbytes + len(points) * 4 + len(box_array) * 4

    return KernelCase('points_in_boxes', f'{LIDAR_POINTS} points x {BOXES} boxes', build,
                      boxes.points_in_boxes, boxes.points_in_boxes_baseline, 'torch broadcast, chunked', moved)


def _iou_case() -> KernelCase:
    def build(rng):
        box_array = _boxes(rng)[:, [0, 1, 3, 4, 6]].copy()
        return (box_array, box_array)

    def moved(args):
        return args[0].nbytes * 2 + len(args[0]) * len(args[1]) * 4

    return KernelCase('rotated_iou_bev', f'{BOXES} x {BOXES} boxes', build, iou.rotated_iou_bev,
                      iou.rotated_iou_bev_baseline, 'torch batched polygon clipping', moved)


def _nms_case() -> KernelCase:
    def build(rng):
        box_array = _boxes(rng)[:, [0, 1, 3, 4, 6]].copy()
        # Clusters of overlapping candidates, as a heatmap decoder produces them.
        box_array[:, :2] = np.round(box_array[:, :2] / 6.0) * 6.0 + rng.normal(0, 0.4, (BOXES, 2))
        return (box_array, rng.uniform(0, 1, BOXES), rng.integers(0, 10, BOXES), 0.2)

    def moved(args):
        return args[0].nbytes + args[1].nbytes + args[2].nbytes

    return KernelCase('nms_rotated', f'{BOXES} boxes, 10 classes', build, iou.nms_rotated,
                      iou.nms_rotated_baseline, 'torch greedy over an IoU matrix', moved)


def _motion_case() -> KernelCase:
    def build(rng):
        points = _sweep(rng)
        points = points[np.argsort(points[:, 4], kind='stable')]  # a driver emits points in firing order
        firing = np.round(points[:, 4] * 1100 / 0.05).astype(np.int64)  # ~1100 distinct firing times
        point_times = 1_000_000_000 + firing * (50_000_000 // 1100)
        pose_times = np.arange(1_000_000_000 - 10_000_000, 1_000_000_000 + 70_000_000, 10_000_000, np.int64)
        poses = np.repeat(np.eye(4)[None], len(pose_times), axis=0)
        yaw = 0.3 * (pose_times - pose_times[0]) / 1e9  # turning at 0.3 rad/s, 10 m/s
        poses[:, 0, 0], poses[:, 0, 1], poses[:, 1, 0], poses[:, 1, 1] = (np.cos(yaw), -np.sin(yaw),
                                                                          np.sin(yaw), np.cos(yaw))
        poses[:, 0, 3] = 10.0 * (pose_times - pose_times[0]) / 1e9
        return (points[:, :3].copy(), point_times, pose_times, poses, 1_000_000_000)

    def moved(args):
        points, point_times = args[0], args[1]
        return points.nbytes * 2 + point_times.nbytes

    return KernelCase('compensate_ego_motion', f'{LIDAR_POINTS} points, 1100 firing times', build,
                      motion.compensate_ego_motion, motion.compensate_ego_motion_baseline,
                      'torch batched slerp + matmul', moved)


_CASES = {
    'project_points': _projection_case,
    'depth_images': _depth_images_case,
    'pillarize': _pillarize_case,
    'scatter_max': _scatter_max_case,
    'scatter_to_bev': _scatter_to_bev_case,
    'bev_pool': _bev_pool_case,
    'points_in_boxes': _points_in_boxes_case,
    'rotated_iou_bev': _iou_case,
    'nms_rotated': _nms_case,
    'compensate_ego_motion': _motion_case,
}


# CUDA counterparts (module in geometry/cuda, function), imported only when a GPU run asks for them.
_CUDA = {
    'project_points': ('projection', 'project_points_cuda'),
    'pillarize': ('pillars', 'pillarize_cuda'),
    'scatter_max': ('scatter', 'scatter_max_cuda'),
    'scatter_to_bev': ('scatter', 'scatter_to_bev_cuda'),
    'bev_pool': ('bev_pool', 'bev_pool_cuda'),
    'points_in_boxes': ('boxes', 'points_in_boxes_cuda'),
    'rotated_iou_bev': ('iou', 'rotated_iou_bev_cuda'),
    'nms_rotated': ('iou', 'nms_rotated_cuda'),
    'compensate_ego_motion': ('motion', 'compensate_ego_motion_cuda'),
}


def kernel_cases(only: Sequence[str] | None = None, *, cuda: bool = False) -> list[KernelCase]:
    """The cases to time, all or ``only`` these; with ``cuda``, each with its CUDA counterpart."""
    import dataclasses
    import importlib

    from ..errors import ConfigError

    names = list(_CASES) if not only else list(only)
    unknown = [n for n in names if n not in _CASES]
    if unknown:
        raise ConfigError(f'--kernels: unknown kernel {unknown[0]!r}; known: {", ".join(_CASES)}')
    cases = [_CASES[name]() for name in names]
    if cuda:
        for i, case in enumerate(cases):
            if case.kernel in _CUDA:
                module, function = _CUDA[case.kernel]
                implementation = getattr(importlib.import_module(f'{__package__}.cuda.{module}'), function)
                cases[i] = dataclasses.replace(case, cuda=implementation)
    return cases


def first_calls(names: Sequence[str]) -> dict[str, dict[str, float]]:
    """In this (fresh) process: each kernel's first call time and how many signatures numba compiled.

    Inputs are built before the clock starts; kernels are called in order, so a kernel whose
    helpers an earlier kernel already compiled is charged only for its own.
    """
    import time

    from numba.core.registry import CPUDispatcher

    modules = (bev_pool, boxes, iou, motion, pillars, projection, scatter)

    def misses() -> int:
        return sum(sum(value.stats.cache_misses.values()) for module in modules
                   for value in vars(module).values() if isinstance(value, CPUDispatcher))

    out = {}
    for case in kernel_cases(names):
        args = case.build(np.random.default_rng(0))
        before = misses()
        start = time.perf_counter()
        case.numba(*args)
        out[case.kernel] = {'first_call_s': time.perf_counter() - start, 'cache_misses': misses() - before}
    return out
