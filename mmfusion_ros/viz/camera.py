"""Detections drawn into the camera images: each 3D box as its 12 projected edges.

Corners go from base_link into the camera's optical frame with ``view.camera_to_base`` and through
the view's intrinsics with ``cv2.projectPoints`` (``cv2.fisheye.projectPoints`` for
``equidistant``), the lens model ``geometry/projection.py`` follows. That module's
``project_points`` is not used here: it keeps only the points that land inside the image, and a box
edge must be drawn from corners that lie outside it, cut at the border by ``cv2.clipLine``.

Edges are cut where they pass behind the camera (depth ``NEAR_M``), so a box beside the car is
drawn in part; a box wholly behind the camera or wholly outside the image draws nothing. With a
distorting lens each edge is drawn as a polyline of ``DISTORTED_SEGMENTS`` pieces.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from mmfusion_ros.errors import ReportError
from mmfusion_ros.frame import CameraView
from mmfusion_ros.types import CameraIntrinsics, Detections3D

from . import palette
from .palette import SHIFT, agreement_colour, box_corners, checked_flags, cv_points, draw_text, short_reason

__all__ = ['NEAR_M', 'camera_mosaic', 'render_camera']

NEAR_M = 0.3  # metres in front of the camera where edges are cut
DISTORTED_SEGMENTS = 8  # pieces per edge when the lens distorts
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))
LINE_THICKNESS = 2
LABEL_SCALE = 0.4


def render_camera(view: CameraView, detections: Detections3D, *,
                  flags: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 BGR copy of ``view``'s image with ``detections`` (base frame) drawn in.

    Box colours follow ``palette.agreement_colour`` as in the bird's-eye view; each visible box is
    labelled with its class, score and, when flagged, its first flag reason.
    """
    reasons = checked_flags(flags, len(detections))
    image = cv2.cvtColor(view.pixels, cv2.COLOR_RGB2BGR)
    if not len(detections):
        return image
    height, width = image.shape[:2]
    base_to_camera = view.camera_to_base.inverse()
    corners = base_to_camera.apply(box_corners(detections).reshape(-1, 3)).reshape(-1, 8, 3)  # (N, 8, 3) optical
    segments = DISTORTED_SEGMENTS if view.intrinsics.is_distorted else 1
    fixed_rect = (0, 0, width << SHIFT, height << SHIFT)
    # Farthest first, so nearer boxes are drawn over the ones they hide; flagged over agreeing.
    order = sorted(range(len(detections)), key=lambda i: (len(reasons[i]) > 0, -float(corners[i, :, 2].mean())))
    labels = []  # (depth, detection, colour, drawn extent) of each box that shows
    for i in order:
        polylines = _edges_in_front(corners[i], segments)
        if not polylines:
            continue  # wholly behind the camera
        uv = _project(np.concatenate(polylines), view.intrinsics)  # (P, 2) continuous pixel coordinates
        fixed = cv_points(uv)
        colour = agreement_colour(reasons[i])
        drawn: list[tuple[int, int]] = []
        start = 0
        for polyline in polylines:
            for k in range(start, start + len(polyline) - 1):
                visible, p, q = cv2.clipLine(fixed_rect, tuple(map(int, fixed[k])), tuple(map(int, fixed[k + 1])))
                if visible:
                    cv2.line(image, p, q, colour, LINE_THICKNESS, cv2.LINE_AA, SHIFT)
                    drawn.extend((p, q))
            start += len(polyline)
        if drawn:  # nothing drawn: the box lies wholly outside the image
            extent = np.array(drawn, np.float64) / (1 << SHIFT)  # (D, 2) OpenCV pixel coordinates
            labels.append((float(corners[i, :, 2].min()), i, colour, extent))
    _draw_labels(image, detections, reasons, sorted(labels, key=lambda label: label[0]))
    return image


def camera_mosaic(views: Sequence[CameraView], detections: Detections3D,
                  flags: Sequence[Sequence[str]] | None = None, columns: int = 3, *,
                  height: int | None = None) -> np.ndarray:
    """Every view rendered by :func:`render_camera`, scaled to one ``height``, named, in rows of ``columns``.

    ``height`` defaults to the smallest view's. Rows shorter than the widest are padded with black on
    the right. With no views (a frame without cameras) the mosaic is a small note saying so.
    """
    if columns < 1:
        raise ReportError(f'camera_mosaic: columns must be at least 1, got {columns}')
    if not views:
        note = np.zeros((60, 320, 3), np.uint8)
        draw_text(note, 'no camera images in this frame', (10, 35), palette.DIM_TEXT, 0.5)
        return note
    tile_height = int(height) if height is not None else min(view.pixels.shape[0] for view in views)
    if tile_height < 1:
        raise ReportError(f'camera_mosaic: height must be at least 1 pixel, got {height}')
    tiles = []
    for view in views:
        rendered = render_camera(view, detections, flags=flags)
        view_height, view_width = rendered.shape[:2]
        tile_width = max(1, round(view_width * tile_height / view_height))
        shrink = tile_height < view_height
        tile = cv2.resize(rendered, (tile_width, tile_height),
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        draw_text(tile, view.name.encode('ascii', 'replace').decode('ascii'), (6, 16), palette.TEXT, 0.45,
                  backing=(0, 0, 0))
        tiles.append(tile)
    rows = [cv2.hconcat(tiles[k:k + columns]) for k in range(0, len(tiles), columns)]
    width = max(row.shape[1] for row in rows)
    mosaic = np.zeros((tile_height * len(rows), width, 3), np.uint8)
    for r, row in enumerate(rows):
        mosaic[r * tile_height:(r + 1) * tile_height, :row.shape[1]] = row
    return mosaic


def _edges_in_front(corners: np.ndarray, segments: int) -> list[np.ndarray]:
    """The box's edges as polylines of optical-frame points, each cut to depth >= NEAR_M."""
    polylines = []
    for a, b in BOX_EDGES:
        p, q = corners[a], corners[b]
        if p[2] < NEAR_M and q[2] < NEAR_M:
            continue
        if p[2] < NEAR_M:
            p = p + (q - p) * (NEAR_M - p[2]) / (q[2] - p[2])
        elif q[2] < NEAR_M:
            q = q + (p - q) * (NEAR_M - q[2]) / (p[2] - q[2])
        steps = np.linspace(0.0, 1.0, segments + 1)[:, None]  # (S + 1, 1)
        polylines.append(p + (q - p) * steps)  # (S + 1, 3)
    return polylines


def _project(points: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(P, 3) optical-frame points in front of the camera to (P, 2) image coordinates."""
    objects = np.ascontiguousarray(points, np.float64).reshape(-1, 1, 3)
    no_motion = np.zeros(3)
    if intrinsics.distortion_model == 'equidistant':
        uv, _ = cv2.fisheye.projectPoints(objects, no_motion, no_motion, intrinsics.k, intrinsics.d[:4])
    else:
        distortion = intrinsics.d if intrinsics.is_distorted else None
        uv, _ = cv2.projectPoints(objects, no_motion, no_motion, intrinsics.k, distortion)
    return uv.reshape(-1, 2)


def _draw_labels(image: np.ndarray, detections: Detections3D, reasons: list[tuple[str, ...]],
                 labels: list[tuple[float, int, palette.Colour, np.ndarray]]) -> None:
    """Class, score and first flag reason above each box, nearest box first; a label that would
    cover one already placed moves up a line at a time, then below its box."""
    height, width = image.shape[:2]
    placed: list[tuple[int, int, int, int]] = []  # (left, top, right, bottom) of each label
    for _, i, colour, extent in labels:
        text = f'{detections.labels[i]} {detections.scores[i]:.2f}'
        if reasons[i]:
            text += f' | {short_reason(reasons[i])}'
        text = text.encode('ascii', 'replace').decode('ascii')
        (text_width, text_height), baseline = cv2.getTextSize(text, palette.FONT, LABEL_SCALE, 1)
        line = text_height + baseline + 4
        x = int(np.clip(extent[:, 0].min(), 2, max(2, width - text_width - 2)))
        above = int(extent[:, 1].min()) - baseline - 3
        below = int(extent[:, 1].max()) + text_height + 5
        candidates = [above - k * line for k in range(4)] + [below + k * line for k in range(3)]
        candidates = [int(np.clip(y, text_height + 2, height - baseline - 1)) for y in candidates]
        box = lambda y: (x - 2, y - text_height - 2, x + text_width + 2, y + baseline)  # noqa: E731
        free = [y for y in candidates if not any(_overlap(box(y), other) for other in placed)]
        y = free[0] if free else candidates[0]
        placed.append(box(y))
        draw_text(image, text, (x, y), colour, LABEL_SCALE, backing=(0, 0, 0))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
