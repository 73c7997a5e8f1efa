"""Project points into cameras: per-(point, camera) hits, and z-buffered depth images.

Conventions (the same in the numpy reference, the Numba kernel and the CUDA kernel):

- ``points_to_camera[m]`` is a 4x4 homogeneous transform into camera ``m``'s optical frame
  (OpenCV: x right, y down, z forward); its last row must be ``[0, 0, 0, 1]``. It need not be
  rigid (KITTI's ``R0_rect @ Tr_velo_to_cam`` is not quite orthonormal).
- Depth is the optical-frame ``z``. A point can be in a camera only when ``depth > min_depth``.
- Normalised coordinates ``x' = x / z``, ``y' = y / z`` are distorted with OpenCV's plumb_bob model
  (``k1 k2 p1 p2 k3``; a row of zeros means none), then ``u = fx x'' + s y'' + cx``,
  ``v = fy y'' + cy``. The distortion polynomial is applied to every point in front of the camera,
  as ``cv2.projectPoints`` does; with strong distortion a point far outside the field of view can
  fold back into the image.
- **Image bounds.** Pixel ``(col, row)`` covers ``[col, col + 1) x [row, row + 1)`` in continuous
  image coordinates: a point is in the image when ``0 <= u < width`` and ``0 <= v < height``, tested
  on the float32 ``uv`` that is returned, with no rounding; its pixel is ``(floor(u), floor(v))``.
  This test reproduces the KITTI reference counts of ``../shared/data/real/README.md`` exactly
  (20,279 and 17,153 points; rounding to the nearest pixel first gives 20,256 and 17,134, see
  tests/geometry/test_projection.py). OpenCV puts pixel centres at integer coordinates, so the
  nearest pixel of (u, v) would be (round(u), round(v)); we do not use that convention anywhere.
- Hits are listed point-major: point index ascending, then camera ascending. The order does not
  depend on the number of threads.
- Points with a non-finite coordinate are skipped and counted in ``Projection.dropped_invalid``.

Arithmetic: the transform, division and lens model run in float64 in one fixed order in every
implementation, so the reference and the Numba kernel agree bit for bit. ``*_baseline`` functions
are the fastest plain vectorised torch versions, for the benchmark; they run in float32 and agree
only to a tolerance.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from mmfusion_ros.errors import GeometryError
from mmfusion_ros.geometry.boxes import checked_xyz

__all__ = [
    'Projection',
    'depth_images',
    'depth_images_baseline',
    'depth_images_reference',
    'project_points',
    'project_points_baseline',
    'project_points_reference',
]


class Projection(NamedTuple):
    """Every (point, camera) pair where the point lands inside the image, point-major."""

    point_index: np.ndarray  # (P,) int32 index into the input points
    camera: np.ndarray  # (P,) int32 camera index
    uv: np.ndarray  # (P, 2) float32 image coordinates (u right, v down), in [0, width) x [0, height)
    depth: np.ndarray  # (P,) float32 optical-frame z, > min_depth
    dropped_invalid: int  # input points skipped because x, y or z was not finite


# One row per camera in the float64 table the kernels read (see _camera_table).
_TRANSFORM = slice(0, 12)  # rows 0..2 of points_to_camera, row-major
_FX, _SKEW, _CX, _FY, _CY = 12, 13, 14, 15, 16
_K1, _K2, _P1, _P2, _K3 = 17, 18, 19, 20, 21
_DISTORTED = 22  # 1.0 where any distortion coefficient is non-zero
CAMERA_TABLE_COLUMNS = 23

_CHUNK_POINTS = 4096  # points per parallel work item; the output does not depend on it
_PARALLEL_ITEMS = 16  # work items of the depth-image pass (rows to zero, hits to check)


class _Cameras(NamedTuple):
    table: np.ndarray  # (M, CAMERA_TABLE_COLUMNS) float64
    image_wh: np.ndarray  # (M, 2) float32 width, height


def _camera_table(points_to_camera: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray,
                  image_size: np.ndarray) -> _Cameras:
    """Validate the per-camera calibration and pack it into the table every kernel reads."""
    transforms = np.asarray(points_to_camera, np.float64)
    if transforms.ndim != 3 or transforms.shape[1:] != (4, 4):
        raise GeometryError(f'points_to_camera: expected shape (M, 4, 4), got {transforms.shape}')
    num_cameras = transforms.shape[0]
    camera_matrices = np.asarray(intrinsics, np.float64)
    lens = np.asarray(distortion, np.float64)
    sizes = np.asarray(image_size)
    for name, array, shape in (('intrinsics', camera_matrices, (num_cameras, 3, 3)),
                               ('distortion', lens, (num_cameras, 5)),
                               ('image_size', sizes, (num_cameras, 2))):
        if array.shape != shape:
            raise GeometryError(f'{name}: expected shape {shape} for {num_cameras} cameras, got {array.shape}')
    for name, array in (('points_to_camera', transforms), ('intrinsics', camera_matrices),
                        ('distortion', lens)):
        if not np.all(np.isfinite(array)):
            raise GeometryError(f'{name}: has non-finite entries')
    if num_cameras and not np.all(transforms[:, 3] == [0.0, 0.0, 0.0, 1.0]):
        bad = int(np.flatnonzero(np.any(transforms[:, 3] != [0.0, 0.0, 0.0, 1.0], axis=1))[0])
        raise GeometryError(f'points_to_camera[{bad}]: last row is {transforms[bad, 3].tolist()}, '
                            'expected [0, 0, 0, 1]')
    if num_cameras and not (np.all(camera_matrices[:, 2] == [0.0, 0.0, 1.0])
                            and np.all(camera_matrices[:, 1, 0] == 0.0)):
        raise GeometryError('intrinsics: each must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got '
                            f'{camera_matrices.tolist()}')
    if not np.issubdtype(sizes.dtype, np.integer) or np.any(sizes <= 0) or np.any(sizes >= 1 << 24):
        raise GeometryError(f'image_size: expected positive integer (width, height) pairs, got {sizes.tolist()}')

    table = np.zeros((num_cameras, CAMERA_TABLE_COLUMNS), np.float64)
    table[:, _TRANSFORM] = transforms[:, :3, :].reshape(num_cameras, 12)
    table[:, _FX] = camera_matrices[:, 0, 0]
    table[:, _SKEW] = camera_matrices[:, 0, 1]
    table[:, _CX] = camera_matrices[:, 0, 2]
    table[:, _FY] = camera_matrices[:, 1, 1]
    table[:, _CY] = camera_matrices[:, 1, 2]
    table[:, _K1:_K3 + 1] = lens
    table[:, _DISTORTED] = np.any(lens != 0.0, axis=1)
    return _Cameras(table, sizes.astype(np.float32).reshape(num_cameras, 2))


def _checked_min_depth(min_depth: float) -> float:
    min_depth = float(min_depth)
    if not (math.isfinite(min_depth) and min_depth >= 0.0):
        raise GeometryError(f'min_depth: expected a finite value >= 0, got {min_depth}')
    return min_depth


def _empty_projection(dropped_invalid: int = 0) -> Projection:
    return Projection(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros((0, 2), np.float32),
                      np.zeros(0, np.float32), dropped_invalid)


# ---------------------------------------------------------------------------------------------------
# Reference: numpy, one camera at a time, vectorised over points.


def project_points_reference(points: np.ndarray, points_to_camera: np.ndarray, intrinsics: np.ndarray,
                             distortion: np.ndarray, image_size: np.ndarray,
                             min_depth: float = 0.1) -> Projection:
    """Plain numpy version of :func:`project_points`, the one the kernels are tested against."""
    points = checked_xyz(points)
    cameras = _camera_table(points_to_camera, intrinsics, distortion, image_size)
    min_depth = _checked_min_depth(min_depth)
    num_cameras = cameras.table.shape[0]

    finite = np.all(np.isfinite(points), axis=1)  # (N,)
    dropped_invalid = int(np.count_nonzero(~finite))
    valid_index = np.flatnonzero(finite)
    px, py, pz = (points[valid_index, axis].astype(np.float64) for axis in range(3))  # (V,) each

    point_parts, camera_parts, uv_parts, depth_parts = [], [], [], []
    for camera in range(num_cameras):
        c = cameras.table[camera]
        x = c[0] * px + c[1] * py + c[2] * pz + c[3]
        y = c[4] * px + c[5] * py + c[6] * pz + c[7]
        z = c[8] * px + c[9] * py + c[10] * pz + c[11]
        front = z > min_depth
        x, y, z, index = x[front], y[front], z[front], valid_index[front]
        xn = x / z
        yn = y / z
        if c[_DISTORTED] != 0.0:
            r2 = xn * xn + yn * yn
            radial = 1.0 + c[_K1] * r2 + c[_K2] * r2 * r2 + c[_K3] * r2 * r2 * r2
            xd = xn * radial + 2.0 * c[_P1] * xn * yn + c[_P2] * (r2 + 2.0 * xn * xn)
            yd = yn * radial + c[_P1] * (r2 + 2.0 * yn * yn) + 2.0 * c[_P2] * xn * yn
        else:
            xd, yd = xn, yn
        u = (c[_FX] * xd + c[_SKEW] * yd + c[_CX]).astype(np.float32)
        v = (c[_FY] * yd + c[_CY]).astype(np.float32)
        width, height = cameras.image_wh[camera]
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        point_parts.append(index[inside])
        camera_parts.append(np.full(int(np.count_nonzero(inside)), camera, np.int32))
        uv_parts.append(np.stack([u[inside], v[inside]], axis=1))
        depth_parts.append(z[inside].astype(np.float32))
    if not point_parts:
        return _empty_projection(dropped_invalid)

    point_index = np.concatenate(point_parts).astype(np.int32)
    camera_index = np.concatenate(camera_parts)
    order = np.lexsort((camera_index, point_index))  # point-major, then camera
    return Projection(point_index[order], camera_index[order],
                      np.concatenate(uv_parts).reshape(-1, 2)[order], np.concatenate(depth_parts)[order],
                      dropped_invalid)


# ---------------------------------------------------------------------------------------------------
# Numba: two passes over chunks of points (flag and count hits, then fill at the chunk's offset).


def project_one(table: np.ndarray, camera: int, px: float, py: float, pz: float, min_depth: float,
                 width: float, height: float) -> tuple[bool, float, float, float]:
    """One point into one camera: (inside, u, v, depth). Same operations, same order as the reference.

    Plain Python on purpose: compiled with ``njit`` for the CPU kernel and as a CUDA device function,
    so both targets run this one definition.
    """
    c = table[camera]
    z = c[8] * px + c[9] * py + c[10] * pz + c[11]
    if not z > min_depth:
        return False, numba.float32(0.0), numba.float32(0.0), numba.float32(0.0)
    x = c[0] * px + c[1] * py + c[2] * pz + c[3]
    y = c[4] * px + c[5] * py + c[6] * pz + c[7]
    xn = x / z
    yn = y / z
    if c[_DISTORTED] != 0.0:
        r2 = xn * xn + yn * yn
        radial = 1.0 + c[_K1] * r2 + c[_K2] * r2 * r2 + c[_K3] * r2 * r2 * r2
        xd = xn * radial + 2.0 * c[_P1] * xn * yn + c[_P2] * (r2 + 2.0 * xn * xn)
        yd = yn * radial + c[_P1] * (r2 + 2.0 * yn * yn) + 2.0 * c[_P2] * xn * yn
    else:
        xd = xn
        yd = yn
    u = numba.float32(c[_FX] * xd + c[_SKEW] * yd + c[_CX])
    v = numba.float32(c[_FY] * yd + c[_CY])
    inside = u >= 0 and u < width and v >= 0 and v < height
    return inside, u, v, numba.float32(z)


_project_one = njit(cache=True, fastmath=False, error_model='numpy', inline='always')(project_one)


@njit(parallel=True, cache=True, fastmath=False, error_model='numpy')
def _flag_hits(points: np.ndarray, table: np.ndarray, image_wh: np.ndarray, min_depth: float,
               chunk_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1: ``hit_flags[m, i]`` for every camera and point, and per chunk the hit and invalid counts.

    Branch-free over the points of a chunk (held as float64 columns) so that the loop vectorises;
    ``error_model='numpy'`` lets a division by a zero depth give inf instead of raising, and such a
    pair is masked out by ``z > min_depth`` anyway. Same operations, same order as _project_one.
    """
    num_points = points.shape[0]  # points: (N, 3) float32
    num_cameras = table.shape[0]  # table: (M, CAMERA_TABLE_COLUMNS) float64; image_wh: (M, 2) float32
    num_chunks = (num_points + chunk_points - 1) // chunk_points
    hit_flags = np.empty((num_cameras, num_points), np.bool_)  # (M, N)
    hits_per_chunk = np.zeros(num_chunks, np.int64)
    invalid_per_chunk = np.zeros(num_chunks, np.int64)
    for chunk in prange(num_chunks):
        start = chunk * chunk_points
        count = min(start + chunk_points, num_points) - start
        px = np.empty(count, np.float64)  # (n,) this chunk's columns
        py = np.empty(count, np.float64)
        pz = np.empty(count, np.float64)
        invalid = 0
        for j in range(count):
            x, y, z = points[start + j, 0], points[start + j, 1], points[start + j, 2]
            if np.isfinite(x) and np.isfinite(y) and np.isfinite(z):
                px[j], py[j], pz[j] = x, y, z
            else:  # NaN in every coordinate makes z NaN, so the point fails `z > min_depth` everywhere
                px[j], py[j], pz[j] = np.nan, np.nan, np.nan
                invalid += 1
        hits = 0
        for camera in range(num_cameras):
            c = table[camera]
            r00, r01, r02, t0 = c[0], c[1], c[2], c[3]
            r10, r11, r12, t1 = c[4], c[5], c[6], c[7]
            r20, r21, r22, t2 = c[8], c[9], c[10], c[11]
            fx, skew, cx, fy, cy = c[_FX], c[_SKEW], c[_CX], c[_FY], c[_CY]
            k1, k2, p1, p2, k3 = c[_K1], c[_K2], c[_P1], c[_P2], c[_K3]
            width = image_wh[camera, 0]
            height = image_wh[camera, 1]
            flags = hit_flags[camera, start:start + count]
            if c[_DISTORTED] != 0.0:
                for j in range(count):
                    z = r20 * px[j] + r21 * py[j] + r22 * pz[j] + t2
                    xn = (r00 * px[j] + r01 * py[j] + r02 * pz[j] + t0) / z
                    yn = (r10 * px[j] + r11 * py[j] + r12 * pz[j] + t1) / z
                    r2 = xn * xn + yn * yn
                    radial = 1.0 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
                    xd = xn * radial + 2.0 * p1 * xn * yn + p2 * (r2 + 2.0 * xn * xn)
                    yd = yn * radial + p1 * (r2 + 2.0 * yn * yn) + 2.0 * p2 * xn * yn
                    u = np.float32(fx * xd + skew * yd + cx)
                    v = np.float32(fy * yd + cy)
                    inside = (z > min_depth) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
                    flags[j] = inside
                    hits += np.int64(inside)
            else:
                for j in range(count):
                    z = r20 * px[j] + r21 * py[j] + r22 * pz[j] + t2
                    xn = (r00 * px[j] + r01 * py[j] + r02 * pz[j] + t0) / z
                    yn = (r10 * px[j] + r11 * py[j] + r12 * pz[j] + t1) / z
                    u = np.float32(fx * xn + skew * yn + cx)
                    v = np.float32(fy * yn + cy)
                    inside = (z > min_depth) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
                    flags[j] = inside
                    hits += np.int64(inside)
        hits_per_chunk[chunk] = hits
        invalid_per_chunk[chunk] = invalid
    return hit_flags, hits_per_chunk, invalid_per_chunk


@njit(parallel=True, cache=True, fastmath=False, error_model='numpy')
def _project_points_kernel(points: np.ndarray, table: np.ndarray, image_wh: np.ndarray, min_depth: float,
                           chunk_points: int) -> tuple:
    num_points = points.shape[0]  # points: (N, 3) float32
    num_cameras = table.shape[0]  # table: (M, CAMERA_TABLE_COLUMNS) float64; image_wh: (M, 2) float32
    assert table.shape[1] == CAMERA_TABLE_COLUMNS, 'camera table has the wrong number of columns'
    assert image_wh.shape[0] == num_cameras, 'one image size per camera'
    assert chunk_points > 0, 'chunk_points must be positive'
    num_chunks = (num_points + chunk_points - 1) // chunk_points

    hit_flags, hits_per_chunk, invalid_per_chunk = _flag_hits(points, table, image_wh, min_depth, chunk_points)
    chunk_offsets = np.zeros(num_chunks + 1, np.int64)
    for chunk in range(num_chunks):
        chunk_offsets[chunk + 1] = chunk_offsets[chunk] + hits_per_chunk[chunk]
    num_hits = chunk_offsets[num_chunks]

    # Pass 2: recompute only the hits and write them at the chunk's offset, in point-major order.
    point_index = np.empty(num_hits, np.int32)  # (P,)
    camera_index = np.empty(num_hits, np.int32)  # (P,)
    uv = np.empty((num_hits, 2), np.float32)  # (P, 2)
    depth = np.empty(num_hits, np.float32)  # (P,)
    written_per_chunk = np.zeros(num_chunks, np.int64)
    for chunk in prange(num_chunks):
        out = chunk_offsets[chunk]
        for i in range(chunk * chunk_points, min((chunk + 1) * chunk_points, num_points)):
            for camera in range(num_cameras):
                if hit_flags[camera, i]:
                    inside, u, v, d = _project_one(table, camera, np.float64(points[i, 0]),
                                                   np.float64(points[i, 1]), np.float64(points[i, 2]),
                                                   min_depth, image_wh[camera, 0], image_wh[camera, 1])
                    point_index[out] = i
                    camera_index[out] = camera
                    uv[out, 0] = u
                    uv[out, 1] = v
                    depth[out] = d
                    out += inside  # always true: the same arithmetic decided the flag
        written_per_chunk[chunk] = out - chunk_offsets[chunk]
    assert np.array_equal(written_per_chunk, hits_per_chunk), 'pass 2 disagrees with pass 1 on the hits'
    return point_index, camera_index, uv, depth, invalid_per_chunk.sum()


def project_points(points: np.ndarray, points_to_camera: np.ndarray, intrinsics: np.ndarray,
                   distortion: np.ndarray, image_size: np.ndarray, min_depth: float = 0.1) -> Projection:
    """Project ``points`` into every camera; the hits, point-major (see the module's conventions).

    ``points``: (N, 3) float32. ``points_to_camera``: (M, 4, 4) float64. ``intrinsics``: (M, 3, 3)
    camera matrices. ``distortion``: (M, 5) plumb_bob ``k1 k2 p1 p2 k3`` (zeros for none).
    ``image_size``: (M, 2) integer ``(width, height)``.
    """
    points = checked_xyz(points)
    cameras = _camera_table(points_to_camera, intrinsics, distortion, image_size)
    min_depth = _checked_min_depth(min_depth)
    if cameras.table.shape[0] == 0:
        return _empty_projection(int(np.count_nonzero(~np.all(np.isfinite(points), axis=1))))
    point_index, camera_index, uv, depth, dropped = _project_points_kernel(
        points, cameras.table, cameras.image_wh, min_depth, _CHUNK_POINTS)
    return Projection(point_index, camera_index, uv, depth, int(dropped))


def project_points_baseline(points: np.ndarray, points_to_camera: np.ndarray, intrinsics: np.ndarray,
                            distortion: np.ndarray, image_size: np.ndarray,
                            min_depth: float = 0.1) -> Projection:
    """Benchmark baseline: batched torch float32 over all cameras at once, boolean masks, ``nonzero``.

    Same hits as :func:`project_points` except for points within float32 rounding of a border.
    """
    import torch

    points = checked_xyz(points)
    cameras = _camera_table(points_to_camera, intrinsics, distortion, image_size)
    min_depth = _checked_min_depth(min_depth)
    num_cameras = cameras.table.shape[0]
    if num_cameras == 0 or len(points) == 0:
        return _empty_projection(int(np.count_nonzero(~np.all(np.isfinite(points), axis=1))))
    table = torch.from_numpy(cameras.table.astype(np.float32))  # (M, C)
    xyz = torch.from_numpy(points)  # (N, 3)
    finite = torch.isfinite(xyz).all(dim=1)  # (N,)
    rotation = table[:, 0:12].reshape(-1, 3, 4)[:, :, :3]  # (M, 3, 3)
    translation = table[:, 0:12].reshape(-1, 3, 4)[:, :, 3]  # (M, 3)
    in_camera = torch.matmul(xyz, rotation.transpose(1, 2)) + translation[:, None, :]  # (M, N, 3)
    z = in_camera[..., 2]
    xn = in_camera[..., 0] / z
    yn = in_camera[..., 1] / z
    col = lambda k: table[:, k, None]  # noqa: E731  (M, 1)
    if bool(np.any(cameras.table[:, _DISTORTED])):
        r2 = xn * xn + yn * yn
        radial = 1 + col(_K1) * r2 + col(_K2) * r2 * r2 + col(_K3) * r2 * r2 * r2
        xn, yn = (xn * radial + 2 * col(_P1) * xn * yn + col(_P2) * (r2 + 2 * xn * xn),
                  yn * radial + col(_P1) * (r2 + 2 * yn * yn) + 2 * col(_P2) * xn * yn)
    u = col(_FX) * xn + col(_SKEW) * yn + col(_CX)  # (M, N)
    v = col(_FY) * yn + col(_CY)
    wh = torch.from_numpy(cameras.image_wh)
    inside = ((z > min_depth) & (u >= 0) & (u < wh[:, 0, None]) & (v >= 0) & (v < wh[:, 1, None])
              & finite[None, :])  # (M, N)
    point_index, camera_index = inside.T.nonzero(as_tuple=True)  # point-major
    uv = torch.stack([u[camera_index, point_index], v[camera_index, point_index]], dim=1)
    return Projection(point_index.to(torch.int32).numpy(), camera_index.to(torch.int32).numpy(), uv.numpy(),
                      z[camera_index, point_index].numpy(), int((~finite).sum()))


# ---------------------------------------------------------------------------------------------------
# Depth images: z-buffer of the hits, nearest wins, 0 where no point lands.


def _image_sizes(image_size: np.ndarray, num_cameras: int) -> np.ndarray:
    """(M, 2) int64 (width, height): a per-camera table, or one pair shared by every camera."""
    sizes = np.asarray(image_size)
    if sizes.shape == (2,):
        sizes = np.broadcast_to(sizes, (num_cameras, 2))
    if sizes.shape != (num_cameras, 2) or not np.issubdtype(sizes.dtype, np.integer) or np.any(sizes <= 0):
        raise GeometryError(f'image_size: expected positive integer (width, height) for {num_cameras} cameras, '
                            f'got {np.asarray(image_size).tolist()}')
    return sizes.astype(np.int64)


def _checked_projection(projection: Projection, sizes: np.ndarray,
                        check_bounds: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    camera = np.ascontiguousarray(projection.camera, np.int32)
    uv = np.ascontiguousarray(projection.uv, np.float32)
    depth = np.ascontiguousarray(projection.depth, np.float32)
    num_hits = len(camera)
    if uv.shape != (num_hits, 2) or depth.shape != (num_hits,):
        raise GeometryError(f'projection: camera {camera.shape}, uv {uv.shape} and depth {depth.shape} '
                            'do not describe the same hits')
    if num_hits and check_bounds:
        if camera.min() < 0 or camera.max() >= len(sizes):
            raise GeometryError(f'projection: camera index {int(camera.max())} is not below num_cameras '
                                f'{len(sizes)}')
        wh = sizes[camera]
        if not (np.all(uv >= 0) and np.all(uv < wh)):
            raise GeometryError('projection: a hit lies outside its camera\'s image_size')
    return camera, uv, depth


def depth_images_reference(projection: Projection, image_size: np.ndarray, num_cameras: int) -> np.ndarray:
    """Plain numpy version of :func:`depth_images`."""
    sizes = _image_sizes(image_size, num_cameras)
    camera, uv, depth = _checked_projection(projection, sizes)
    height = int(sizes[:, 1].max(initial=1))
    width = int(sizes[:, 0].max(initial=1))
    nearest = np.full(num_cameras * height * width, np.inf, np.float32)
    pixel = (camera.astype(np.int64) * height + np.floor(uv[:, 1]).astype(np.int64)) * width \
        + np.floor(uv[:, 0]).astype(np.int64)
    np.minimum.at(nearest, pixel, depth)
    nearest[np.isinf(nearest)] = 0.0
    return nearest.reshape(num_cameras, height, width)


@njit(parallel=True, cache=True, fastmath=False)
def _depth_images_kernel(camera: np.ndarray, uv: np.ndarray, depth: np.ndarray, image_wh: np.ndarray,
                         images: np.ndarray) -> int:
    """Fill ``images`` in full; returns how many hits lie outside their camera's image (0 when valid)."""
    num_hits = camera.shape[0]  # camera: (P,) int32, uv: (P, 2) float32, depth: (P,) float32
    num_cameras, height, width = images.shape  # images: (M, H, W) float32; image_wh: (M, 2) float32
    assert uv.shape[0] == num_hits and depth.shape[0] == num_hits, 'camera, uv and depth differ in length'
    assert image_wh.shape[0] == num_cameras, 'one image size per camera'
    # One parallel pass zeroes the images and checks that every hit lies inside its own camera's
    # image, so that the scatter below runs without branches on the input. Zeroing in parallel
    # also spreads the first touch of fresh pages, which dominates for large images.
    num_rows = num_cameras * height
    outside_per_item = np.zeros(_PARALLEL_ITEMS, np.int64)
    for item in prange(_PARALLEL_ITEMS):
        for row in range(item * num_rows // _PARALLEL_ITEMS, (item + 1) * num_rows // _PARALLEL_ITEMS):
            image_row = images[row // height, row % height]
            for col in range(width):
                image_row[col] = 0.0
        outside = 0
        for k in range(item * num_hits // _PARALLEL_ITEMS, (item + 1) * num_hits // _PARALLEL_ITEMS):
            cam = camera[k]
            clamped = min(max(cam, 0), num_cameras - 1)
            inside = ((cam == clamped) & (uv[k, 0] >= 0) & (uv[k, 0] < image_wh[clamped, 0]) & (uv[k, 1] >= 0)
                      & (uv[k, 1] < image_wh[clamped, 1]))
            outside += 1 - np.int64(inside)
        outside_per_item[item] = outside
    outside = outside_per_item.sum()
    if outside:
        return outside
    # The scatter is one sequential pass: it reads each hit once, and no two threads can race on a
    # pixel. Branch-free min: 0 means empty and every depth is > 0.
    flat = images.reshape(-1)  # (M * H * W,)
    for k in range(num_hits):
        pixel = (np.intp(camera[k]) * height + np.intp(uv[k, 1])) * width + np.intp(uv[k, 0])  # floor: u, v >= 0
        nearest = flat[pixel]
        flat[pixel] = depth[k] if (nearest == 0.0) | (depth[k] < nearest) else nearest
    return outside


def depth_images(projection: Projection, image_size: np.ndarray, num_cameras: int) -> np.ndarray:
    """(M, H, W) float32 z-buffer of ``projection``: the nearest depth per pixel, 0 where none lands.

    ``image_size`` is (M, 2) integer (width, height) per camera, or one (width, height) for all. The
    images share one array of the largest height and width; a camera smaller than that keeps zeros
    outside its own size. Pixel of a hit: ``(row, col) = (floor(v), floor(u))``.
    """
    sizes = _image_sizes(image_size, num_cameras)
    camera = np.ascontiguousarray(projection.camera, np.int32)
    uv = np.ascontiguousarray(projection.uv, np.float32)
    depth = np.ascontiguousarray(projection.depth, np.float32)
    if uv.shape != (len(camera), 2) or depth.shape != (len(camera),):
        raise GeometryError(f'projection: camera {camera.shape}, uv {uv.shape} and depth {depth.shape} '
                            'do not describe the same hits')
    height = int(sizes[:, 1].max(initial=1))
    width = int(sizes[:, 0].max(initial=1))
    # Allocated by numpy rather than inside the kernel: numpy asks the kernel for huge pages on
    # large arrays, which makes the first touch of tens of megabytes several times cheaper.
    images = np.empty((num_cameras, height, width), np.float32)
    outside = _depth_images_kernel(camera, uv, depth, sizes.astype(np.float32), images)
    if outside:
        raise GeometryError(f'projection: {outside} hits lie outside their camera\'s image_size (or name a '
                            f'camera >= num_cameras {num_cameras})')
    return images


def depth_images_baseline(projection: Projection, image_size: np.ndarray, num_cameras: int) -> np.ndarray:
    """Benchmark baseline: torch ``scatter_reduce_(amin)`` into an inf-filled buffer, then inf -> 0.

    It trusts the hits to lie inside their images (as :func:`project_points` makes them) and checks
    only the shapes, so that the benchmark times the z-buffer itself.
    """
    import torch

    sizes = _image_sizes(image_size, num_cameras)
    camera, uv, depth = _checked_projection(projection, sizes, check_bounds=False)
    height = int(sizes[:, 1].max(initial=1))
    width = int(sizes[:, 0].max(initial=1))
    uv_t = torch.from_numpy(uv)
    pixel = (torch.from_numpy(camera).long() * height + uv_t[:, 1].floor().long()) * width + uv_t[:, 0].floor().long()
    nearest = torch.full((num_cameras * height * width,), float('inf'), dtype=torch.float32)
    nearest.scatter_reduce_(0, pixel, torch.from_numpy(depth), reduce='amin', include_self=True)
    nearest.masked_fill_(torch.isinf(nearest), 0.0)
    return nearest.reshape(num_cameras, height, width).numpy()
