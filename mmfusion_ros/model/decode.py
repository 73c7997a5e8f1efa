"""Head maps <-> boxes: ``decode_detections`` for inference, ``encode_targets`` (its inverse) for training.

Head cell convention (as CenterPoint): with ``cell = grid.cell_size * head.output_stride``, a box
centred at (x, y) has head coordinates ``u = (x - x_min) / cell``, ``v = (y - y_min) / cell``; its
centre cell is ``(row, col) = (floor(v), floor(u))`` and its offset target ``(u - col, v - row)``, in
[0, 1). Decoding inverts that exactly: ``x = x_min + (col + dx) * cell``. Sizes are regressed as
logs, yaw as (sin, cos), z and velocity as they are.

The box is also a regression target at the cells around its centre cell (its 3x3 neighbourhood and
every cell whose centre lies in its footprint, each cell owned by the nearest box centre), with the
offset from that cell: ``(u - c, v - r)``, outside [0, 1) there. A heatmap peak that lands beside the
centre, as it does on a bus whose near end is all the lidar sees, then still regresses the true
centre, and two peaks on one long vehicle regress the same box, which NMS merges.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config import GridConfig
from ..geometry.iou import nms_center_distance, nms_rotated
from ..types import Detections3D
from .config import HeadConfig, ModelError
from .network import HeadOutputs, NetOutputs

__all__ = [
    'HeadTargets',
    'decode_detections',
    'encode_targets',
    'gaussian_radius',
]


def _head_geometry(grid: GridConfig, head: HeadConfig) -> tuple[int, int, float]:
    ny, nx = grid.shape
    s = head.output_stride
    return ny // s, nx // s, grid.cell_size * s


def decode_detections(outputs: NetOutputs | HeadOutputs, grid: GridConfig, head: HeadConfig,
                      stamp_ns: int, frame_id: str) -> Detections3D:
    """Boxes in ``frame_id`` (the base frame) from one frame's head maps.

    Peaks are the cells equal to the max of their 3x3 neighbourhood (CenterNet's max-pool NMS);
    the top ``max_detections`` over all classes above ``score_threshold`` are regressed to metres
    and go through class-aware NMS (rotated IoU or centre distance, the geometry kernels). With no
    modality present the result is empty.
    """
    if isinstance(outputs, NetOutputs):
        if not bool(outputs.present.any()):
            return Detections3D.empty(stamp_ns, frame_id)
        outputs = outputs.head
    maps = HeadOutputs(*(t.detach().float().cpu() for t in outputs))
    B, K, H, W = maps.heatmap.shape
    Hg, Wg, cell = _head_geometry(grid, head)
    if B != 1 or (H, W) != (Hg, Wg) or K != head.num_classes:
        raise ModelError(f'decode_detections: heatmap {tuple(maps.heatmap.shape)} is not (1, {head.num_classes}, '
                         f'{Hg}, {Wg}) as the grid and head config say')

    scores = torch.sigmoid(maps.heatmap[0])  # (K, H, W)
    peaks = scores == F.max_pool2d(scores[None], 3, stride=1, padding=1)[0]
    scores = torch.where(peaks, scores, torch.zeros_like(scores))
    top, flat = scores.reshape(-1).topk(min(head.max_detections, K * H * W))  # (T,)
    keep = top > head.score_threshold
    top, flat = top[keep], flat[keep]
    if len(flat) == 0:
        return Detections3D.empty(stamp_ns, frame_id)
    label = flat // (H * W)  # (T,)
    row = (flat % (H * W)) // W
    col = flat % W
    cells = row * W + col

    def at(t: torch.Tensor) -> np.ndarray:  # (1, n, H, W) -> (T, n) float64 at the peaks
        return t[0].reshape(t.shape[1], H * W)[:, cells].t().double().numpy()

    offset, z, log_size, yaw, velocity = at(maps.offset), at(maps.z), at(maps.log_size), at(maps.yaw), at(maps.velocity)
    x = grid.x_range[0] + (col.double().numpy() + offset[:, 0]) * cell
    y = grid.y_range[0] + (row.double().numpy() + offset[:, 1]) * cell
    with np.errstate(over='ignore'):
        size = np.exp(log_size)  # (T, 3) length, width, height
    heading = np.arctan2(yaw[:, 0], yaw[:, 1])
    score = top.double().numpy()
    labels = label.numpy()

    if head.nms_kind == 'rotated':
        boxes = np.stack([x, y, size[:, 0], size[:, 1], heading], axis=1)
        kept = nms_rotated(boxes, score, labels, head.nms_iou_threshold, max_out=head.max_detections)
    else:
        kept = nms_center_distance(np.stack([x, y], axis=1), score, labels, head.nms_radius,
                                   max_out=head.max_detections)
    finite = np.isfinite(size[kept]).all(axis=1) & np.isfinite(z[kept, 0]) & np.isfinite(velocity[kept]).all(axis=1)
    kept = kept[finite]  # NMS already dropped non-finite x, y, l, w, yaw; a box needs all of it
    return Detections3D(
        stamp_ns, frame_id,
        centers=np.stack([x[kept], y[kept], z[kept, 0]], axis=1),
        sizes=size[kept],
        yaws=heading[kept],
        velocities=velocity[kept],
        labels=tuple(head.classes[i] for i in labels[kept]),
        scores=score[kept],
    )


# ---------------------------------------------------------------------------------------------------
# Targets


class HeadTargets(NamedTuple):
    """Training targets of one frame, on the head's (H, W) grid; ``max_objects`` rows, padded."""

    heatmap: torch.Tensor  # (K, H, W) float32: a gaussian per box in its class, 1 at its centre cell
    index: torch.Tensor  # (max_objects,) int64 flat head cell row * W + col of each box
    labels: torch.Tensor  # (max_objects,) int64 class index
    regression: torch.Tensor  # (max_objects, 10) float32: offset(2), z, log size(3), sin, cos, vx, vy
    mask: torch.Tensor  # (max_objects,) bool: the row is a real box
    dropped_outside: int  # boxes whose centre lies outside the grid (no target)
    dense_index: torch.Tensor  # (M,) int64 flat head cells that regress a box (the centre cells among them)
    dense_slot: torch.Tensor  # (M,) int64 the row of ``regression`` each of those cells regresses
    dense_offset: torch.Tensor  # (M, 2) float32 the box centre from that cell: (u - col, v - row)
    dense_weight: torch.Tensor  # (M,) float32 each box's cells sum to 1, half of it on the centre cell


def gaussian_radius(length: float, width: float, min_overlap: float) -> float:
    """CenterPoint's radius (in cells) of the heatmap gaussian for a box of length x width cells.

    The smallest of the three CornerNet cases: a box whose corners move by the radius still has
    IoU >= ``min_overlap`` with the true one.
    """
    h, w, o = length, width, min_overlap
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    r1 = (b1 + math.sqrt(b1 * b1 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    r2 = (b2 + math.sqrt(b2 * b2 - 16 * c2)) / 2
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    r3 = (b3 + math.sqrt(b3 * b3 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _draw_gaussian(heatmap: np.ndarray, row: int, col: int, radius: int) -> None:
    """heatmap (H, W) <- max(heatmap, gaussian of sigma (2r + 1) / 6 centred at (row, col))."""
    H, W = heatmap.shape
    sigma = (2 * radius + 1) / 6
    offsets = np.arange(-radius, radius + 1)
    gaussian = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma * sigma))  # (2r+1, 2r+1)
    top, bottom = min(row, radius), min(H - row, radius + 1)
    left, right = min(col, radius), min(W - col, radius + 1)
    window = heatmap[row - top:row + bottom, col - left:col + right]
    np.maximum(window, gaussian[radius - top:radius + bottom, radius - left:radius + right], out=window)


def encode_targets(boxes: Detections3D, grid: GridConfig, head: HeadConfig,
                   max_objects: int | None = None) -> HeadTargets:
    """The head targets that ``decode_detections`` turns back into ``boxes``.

    Boxes whose centre is outside the grid's x or y range get no target and are counted. More boxes
    inside than ``max_objects`` (default ``head.max_detections``) is a ``ModelError``, never a cut.
    """
    H, W, cell = _head_geometry(grid, head)
    K = head.num_classes
    limit = head.max_detections if max_objects is None else int(max_objects)
    unknown = sorted(set(boxes.labels) - set(head.classes))
    if unknown:
        raise ModelError(f'encode_targets: labels {unknown} are not among the classes {list(head.classes)}')
    u = (boxes.centers[:, 0] - grid.x_range[0]) / cell  # (N,) head columns, fractional
    v = (boxes.centers[:, 1] - grid.y_range[0]) / cell
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    rows = np.flatnonzero(inside)
    if len(rows) > limit:
        raise ModelError(f'encode_targets: {len(rows)} boxes inside the grid, more than max_objects={limit}')

    heatmap = np.zeros((K, H, W), np.float32)
    index = np.zeros(limit, np.int64)
    labels = np.zeros(limit, np.int64)
    regression = np.zeros((limit, 10), np.float32)
    mask = np.zeros(limit, bool)
    for slot, i in enumerate(rows):
        col, row = min(int(math.floor(u[i])), W - 1), min(int(math.floor(v[i])), H - 1)
        k = head.classes.index(boxes.labels[i])
        length, width, height = boxes.sizes[i]
        radius = gaussian_radius(length / cell, width / cell, head.gaussian_overlap)
        _draw_gaussian(heatmap[k], row, col, max(head.min_radius, int(radius)))
        index[slot] = row * W + col
        labels[slot] = k
        with np.errstate(divide='ignore'):
            log_size = np.log(np.maximum(boxes.sizes[i], 1e-3))
        regression[slot] = [u[i] - col, v[i] - row, boxes.centers[i, 2], *log_size,
                            math.sin(boxes.yaws[i]), math.cos(boxes.yaws[i]), *boxes.velocities[i]]
        mask[slot] = True
    dense = _dense_cells(boxes, rows, u, v, cell, H, W)
    return HeadTargets(torch.from_numpy(heatmap), torch.from_numpy(index), torch.from_numpy(labels),
                       torch.from_numpy(regression), torch.from_numpy(mask), int(len(boxes) - len(rows)),
                       *(torch.from_numpy(a) for a in dense))


def _dense_cells(boxes: Detections3D, rows: np.ndarray, u: np.ndarray, v: np.ndarray, cell: float,
                 H: int, W: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index, slot, offset, weight) of the cells that regress each box (see the module doc).

    A box's cells: the 3x3 around its centre cell and those whose centre is inside its footprint
    grown by half a cell. Centre cells belong to their box; a cell two boxes claim otherwise goes
    to the box whose centre is nearer. Weights: 1/2 on the centre cell, the other 1/2 shared evenly
    by all the box's cells, so each box weighs 1 whatever its size.
    """
    centre_cell = [min(int(math.floor(v[i])), H - 1) * W + min(int(math.floor(u[i])), W - 1) for i in rows]
    owner: dict[int, tuple[float, int]] = {}  # flat cell -> (distance in cells, slot)
    for slot, i in enumerate(rows):
        row, col = divmod(centre_cell[slot], W)
        half_l, half_w = boxes.sizes[i, 0] / cell / 2 + 0.5, boxes.sizes[i, 1] / cell / 2 + 0.5
        reach = int(math.ceil(math.hypot(half_l, half_w)))
        rr, cc = np.mgrid[max(row - reach, 0):min(row + reach + 1, H), max(col - reach, 0):min(col + reach + 1, W)]
        du, dv = u[i] - (cc + 0.5), v[i] - (rr + 0.5)  # cell centre -> box centre, in cells
        c, s = math.cos(boxes.yaws[i]), math.sin(boxes.yaws[i])
        inside = (np.abs(c * du + s * dv) <= half_l) & (np.abs(-s * du + c * dv) <= half_w)
        inside |= (np.abs(rr - row) <= 1) & (np.abs(cc - col) <= 1)
        for flat, distance in zip((rr * W + cc)[inside].tolist(), np.hypot(du, dv)[inside].tolist()):
            if flat not in owner or distance < owner[flat][0]:
                owner[flat] = (distance, slot)
    for slot, flat in enumerate(centre_cell):  # the centre cells first: a box always regresses its own
        owner[flat] = (-1.0, slot) if owner[flat][0] >= 0 or owner[flat][1] == slot else owner[flat]
    index = np.array(sorted(owner), np.int64)
    slot = np.array([owner[f][1] for f in index.tolist()], np.int64)
    row, col = np.divmod(index, W)
    offset = np.stack([u[rows][slot] - col, v[rows][slot] - row], axis=1).astype(np.float32).reshape(-1, 2)
    count = np.bincount(slot, minlength=len(rows))
    is_centre = np.array([owner[f][0] < 0 for f in index.tolist()], bool)
    weight = (0.5 / np.maximum(count[slot], 1) + 0.5 * is_centre).astype(np.float32)
    return index, slot, offset, weight
