"""Bird's-eye-view picture of one frame: points, ground truth and detections coloured by agreement.

The picture is the grid's x/y range seen from above, x forward pointing up and y left pointing
left, ``pixels_per_metre`` pixels to the metre; a panel to its right holds the title, the counts
and the legend. :func:`world_to_pixel` is the only mapping between the two, so a test (or a reader)
can find any base-frame position in the picture.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from mmfusion_ros.config import GridConfig
from mmfusion_ros.errors import ReportError
from mmfusion_ros.frame import Frame
from mmfusion_ros.types import NS_PER_S, Detections3D

from . import palette
from .palette import SHIFT, agreement_colour, box_corners, checked_flags, cv_points, draw_text, short_reason

__all__ = ['PANEL_WIDTH', 'bev_map_size', 'pixel_to_world', 'render_bev', 'world_to_pixel']

PANEL_WIDTH = 250  # pixels of the title/legend panel right of the map
RING_SPACING_M = 10.0
EGO_LENGTH_M, EGO_WIDTH_M = 4.6, 1.9  # drawn centred on the base frame's origin
VELOCITY_ARROW_S = 1.0  # a detection's arrow shows where it will be in this many seconds
RADAR_TICK_S = 0.5  # a radar point's tick shows this many seconds of its compensated velocity
RADAR_MOVING_MPS = 1.0  # compensated speed from which a radar point counts as moving
LIDAR_GREY = (70, 220)  # grey levels at the bottom and the top of the grid's z range


def bev_map_size(grid: GridConfig, pixels_per_metre: float) -> tuple[int, int]:
    """(width, height) in pixels of the map part of the picture: y extent by x extent."""
    if not (math.isfinite(pixels_per_metre) and pixels_per_metre > 0):
        raise ReportError(f'pixels_per_metre: expected a positive number, got {pixels_per_metre}')
    (x_min, x_max), (y_min, y_max) = grid.x_range, grid.y_range
    return max(1, round((y_max - y_min) * pixels_per_metre)), max(1, round((x_max - x_min) * pixels_per_metre))


def world_to_pixel(xy: np.ndarray, grid: GridConfig, pixels_per_metre: float) -> np.ndarray:
    """Base-frame ``(x, y)`` metres to continuous picture coordinates ``(u, v)`` (u right, v down).

    ``u = (y_max - y) * ppm`` and ``v = (x_max - x) * ppm``: the grid's far-left corner
    ``(x_max, y_max)`` lands on ``(0, 0)`` and its near-right corner ``(x_min, y_min)`` on the map's
    ``(width, height)``. Pixel ``(col, row)`` covers ``[col, col + 1) x [row, row + 1)``, as in
    ``geometry/projection.py``, so a point's pixel is ``(floor(u), floor(v))``. Accepts ``(2,)`` or
    ``(N, 2)`` and returns float64 of the same shape; :func:`pixel_to_world` is the inverse.
    """
    xy = np.asarray(xy, np.float64)
    if xy.shape[-1:] != (2,) or xy.ndim > 2:
        raise ReportError(f'world_to_pixel: expected (2,) or (N, 2) x, y positions, got shape {xy.shape}')
    uv = np.empty_like(xy)
    uv[..., 0] = (grid.y_range[1] - xy[..., 1]) * pixels_per_metre
    uv[..., 1] = (grid.x_range[1] - xy[..., 0]) * pixels_per_metre
    return uv


def pixel_to_world(uv: np.ndarray, grid: GridConfig, pixels_per_metre: float) -> np.ndarray:
    """Inverse of :func:`world_to_pixel`: picture ``(u, v)`` to base-frame ``(x, y)`` metres."""
    uv = np.asarray(uv, np.float64)
    if uv.shape[-1:] != (2,) or uv.ndim > 2:
        raise ReportError(f'pixel_to_world: expected (2,) or (N, 2) u, v coordinates, got shape {uv.shape}')
    xy = np.empty_like(uv)
    xy[..., 0] = grid.x_range[1] - uv[..., 1] / pixels_per_metre
    xy[..., 1] = grid.y_range[1] - uv[..., 0] / pixels_per_metre
    return xy


def render_bev(frame: Frame | None, detections: Detections3D, *, grid: GridConfig,
               truth: Detections3D | None = None, flags: Sequence[Sequence[str]] | None = None,
               pixels_per_metre: float = 6.0, title: str = '') -> np.ndarray:
    """(H, W, 3) uint8 BGR top-down picture of ``frame`` with ``detections`` and ``truth``.

    ``flags[i]`` lists the reasons detection ``i`` is flagged (empty: the modalities agree); it sets
    the box's colour (see ``palette.agreement_colour``) and the first reason is written beside it.
    ``truth`` defaults to the frame's own ground truth. ``frame`` may be ``None`` (boxes only).
    """
    reasons = checked_flags(flags, len(detections))
    if truth is None and frame is not None:
        truth = frame.ground_truth
    for what, boxes in (('detections', detections), ('truth', truth)):
        if frame is not None and boxes is not None and boxes.frame_id and frame.frame_id \
                and boxes.frame_id != frame.frame_id:
            raise ReportError(f'render_bev: {what} are in {boxes.frame_id!r} but the frame is in {frame.frame_id!r}')
    map_width, map_height = bev_map_size(grid, pixels_per_metre)
    ppm = float(pixels_per_metre)

    canvas = np.empty((map_height, map_width, 3), np.uint8)
    canvas[:] = palette.BACKGROUND
    if frame is not None and frame.lidar is not None:
        _draw_lidar(canvas, frame.lidar, grid, ppm)
    _draw_rings(canvas, grid, ppm)
    _draw_ego(canvas, grid, ppm)
    if frame is not None and frame.radar is not None:
        _draw_radar(canvas, frame.radar, grid, ppm)
    if truth is not None and len(truth):
        for footprint in box_corners(truth)[:, :4, :2]:
            cv2.polylines(canvas, [cv_points(world_to_pixel(footprint, grid, ppm))], True, palette.TRUTH, 1,
                          cv2.LINE_8, SHIFT)
    _draw_detections(canvas, detections, reasons, grid, ppm)

    panel = _panel(frame, detections, truth, reasons, grid, title)
    height = max(map_height, panel.shape[0])
    picture = np.empty((height, map_width + PANEL_WIDTH, 3), np.uint8)
    picture[:] = palette.BACKGROUND
    picture[:map_height, :map_width] = canvas
    picture[:, map_width:] = palette.PANEL
    picture[:panel.shape[0], map_width:] = panel
    return picture


# ---------------------------------------------------------------------------------------------------
# Map layers, back to front: lidar, rings, ego, radar, ground truth, detections.


def _draw_rings(canvas: np.ndarray, grid: GridConfig, ppm: float) -> None:
    """Circles every RING_SPACING_M around the ego origin, labelled where they cross straight ahead."""
    corners = np.array([[x, y] for x in grid.x_range for y in grid.y_range])
    farthest = float(np.max(np.hypot(corners[:, 0], corners[:, 1])))
    centre = cv_points(world_to_pixel(np.zeros(2), grid, ppm))
    height, width = canvas.shape[:2]
    for ring in range(1, int(farthest // RING_SPACING_M) + 1):
        radius_m = ring * RING_SPACING_M
        cv2.circle(canvas, tuple(int(c) for c in centre), round(radius_m * ppm * (1 << SHIFT)), palette.RING, 1,
                   cv2.LINE_AA, SHIFT)
        u, v = world_to_pixel(np.array([radius_m, 0.0]), grid, ppm)
        if 0 <= u < width - 30 and 12 <= v < height:
            cv2.putText(canvas, f'{radius_m:g} m', (int(u) + 3, int(v) - 3), palette.FONT, 0.35,
                        palette.RING_LABEL, 1, cv2.LINE_AA)


def _draw_lidar(canvas: np.ndarray, lidar: np.ndarray, grid: GridConfig, ppm: float) -> None:
    """One grey pixel per occupied pixel, the highest point's height setting its shade."""
    height, width = canvas.shape[:2]
    points = lidar[np.all(np.isfinite(lidar[:, :3]), axis=1)]  # (N, 5) x y z intensity dt
    uv = np.floor(world_to_pixel(points[:, :2], grid, ppm)).astype(np.int64)  # (N, 2)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    uv, z = uv[inside], points[inside, 2].astype(np.float64)
    z_min, z_max = grid.z_range
    low, high = LIDAR_GREY
    grey = (low + (high - low) * np.clip((z - z_min) / (z_max - z_min), 0.0, 1.0)).astype(np.uint8)  # (n,)
    shade = np.zeros(height * width, np.uint8)  # 0: no point (every shade is >= LIDAR_GREY[0] > 0)
    np.maximum.at(shade, uv[:, 1] * width + uv[:, 0], grey)
    shade = shade.reshape(height, width)
    hit = shade > 0
    canvas[hit] = shade[hit, None]


def _draw_ego(canvas: np.ndarray, grid: GridConfig, ppm: float) -> None:
    half_l, half_w = EGO_LENGTH_M / 2, EGO_WIDTH_M / 2
    body = np.array([[half_l, half_w], [half_l, -half_w], [-half_l, -half_w], [-half_l, half_w]])
    cv2.fillPoly(canvas, [cv_points(world_to_pixel(body, grid, ppm))], palette.EGO, cv2.LINE_AA, SHIFT)
    nose = np.array([[half_l, 0.0], [half_l - 1.2, half_w * 0.7], [half_l - 1.2, -half_w * 0.7]])
    cv2.fillPoly(canvas, [cv_points(world_to_pixel(nose, grid, ppm))], palette.BACKGROUND, cv2.LINE_AA, SHIFT)


def _draw_radar(canvas: np.ndarray, radar: np.ndarray, grid: GridConfig, ppm: float) -> None:
    """A cross per point; moving points (compensated speed >= RADAR_MOVING_MPS) get a velocity tick."""
    height, width = canvas.shape[:2]
    points = radar[np.all(np.isfinite(radar[:, :2]), axis=1)]  # (N, 7) x y z vx_comp vy_comp rcs dt
    uv = world_to_pixel(points[:, :2], grid, ppm)
    velocity = points[:, 3:5].astype(np.float64)  # (N, 2), NaN where unmeasured
    speed = np.hypot(velocity[:, 0], velocity[:, 1])
    moving = np.isfinite(speed) & (speed >= RADAR_MOVING_MPS)
    ticks = world_to_pixel(points[:, :2] + np.nan_to_num(velocity) * RADAR_TICK_S, grid, ppm)
    for k in range(len(points)):
        u, v = uv[k]
        if not (-5 <= u < width + 5 and -5 <= v < height + 5):
            continue
        colour = palette.RADAR_MOVING if moving[k] else palette.RADAR_STATIC
        cv2.drawMarker(canvas, (int(u), int(v)), colour, cv2.MARKER_CROSS, 7, 1, cv2.LINE_8)
        if moving[k]:
            start, end = cv_points(np.stack([uv[k], ticks[k]]))
            cv2.line(canvas, tuple(map(int, start)), tuple(map(int, end)), colour, 1, cv2.LINE_8, SHIFT)


def _draw_detections(canvas: np.ndarray, detections: Detections3D, reasons: list[tuple[str, ...]],
                     grid: GridConfig, ppm: float) -> None:
    """Rotated footprints with a heading tick and a velocity arrow; flagged boxes last, labelled."""
    if not len(detections):
        return
    footprints = box_corners(detections)[:, :4, :2]  # (N, 4, 2): front-left, front-right, rear-right, rear-left
    order = sorted(range(len(detections)), key=lambda i: len(reasons[i]))  # agreeing boxes underneath
    labels = []
    for i in order:
        colour = agreement_colour(reasons[i])
        footprint_uv = world_to_pixel(footprints[i], grid, ppm)  # (4, 2)
        cv2.polylines(canvas, [cv_points(footprint_uv)], True, colour, 2, cv2.LINE_8, SHIFT)
        centre = detections.centers[i, :2]
        front = footprints[i, :2].mean(axis=0)
        centre_px, front_px = cv_points(world_to_pixel(np.stack([centre, front]), grid, ppm))
        cv2.line(canvas, tuple(map(int, centre_px)), tuple(map(int, front_px)), colour, 1, cv2.LINE_8, SHIFT)
        velocity = detections.velocities[i]
        if np.all(np.isfinite(velocity)) and np.hypot(*velocity) * VELOCITY_ARROW_S * ppm >= 4:
            tip_px = cv_points(world_to_pixel(centre + velocity * VELOCITY_ARROW_S, grid, ppm))
            cv2.arrowedLine(canvas, tuple(map(int, centre_px)), tuple(map(int, tip_px)), colour, 1, cv2.LINE_8,
                            SHIFT, 0.25)
        if reasons[i]:
            labels.append((footprint_uv, short_reason(reasons[i]), colour))
    width = canvas.shape[1]
    for footprint_uv, text, colour in labels:  # after every box, so no box covers a label
        (text_width, text_height), _ = cv2.getTextSize(text, palette.FONT, 0.4, 1)
        x = int(footprint_uv[:, 0].max()) + 5
        if x + text_width > width:
            x = int(footprint_uv[:, 0].min()) - 5 - text_width
        y = int(footprint_uv[:, 1].mean()) + text_height // 2
        draw_text(canvas, text, (x, y), colour, 0.4, backing=palette.BACKGROUND)


# ---------------------------------------------------------------------------------------------------
# Panel: title, counts, legend.


def _panel(frame: Frame | None, detections: Detections3D, truth: Detections3D | None,
           reasons: list[tuple[str, ...]], grid: GridConfig, title: str) -> np.ndarray:
    panel = np.empty((900, PANEL_WIDTH, 3), np.uint8)
    panel[:] = palette.PANEL
    y = 8
    for line in _wrapped(title, PANEL_WIDTH - 20, 0.5):
        y += 20
        draw_text(panel, line, (10, y), palette.TEXT, 0.5)
    flagged = sum(1 for r in reasons if r)
    lines = [f'stamp {detections.stamp_ns / NS_PER_S:.3f} s',
             f'detections {len(detections)}  flagged {flagged}']
    if truth is not None:
        lines.append(f'ground truth {len(truth)}')
    if frame is not None:
        lines.append(f'lidar {_count(frame.lidar)}  radar {_count(frame.radar)}  cameras {len(frame.cameras)}')
        for sensor, why in list(frame.missing.items())[:4]:
            lines.extend(_wrapped(f'missing {sensor}: {why}', PANEL_WIDTH - 20, 0.4))
    (x_min, x_max), (y_min, y_max) = grid.x_range, grid.y_range
    lines.append(f'x {x_min:g}..{x_max:g} m  y {y_min:g}..{y_max:g} m')
    y += 8
    for line in lines:
        y += 17
        draw_text(panel, line, (10, y), palette.TEXT, 0.4)
    y += 33
    draw_text(panel, 'legend', (10, y), palette.DIM_TEXT, 0.4)
    for draw_swatch, text in _LEGEND:
        y += 19
        draw_swatch(panel, 12, y - 10)
        draw_text(panel, text, (46, y), palette.TEXT, 0.4)
    return panel[:y + 14]


def _count(points: np.ndarray | None) -> str:
    return '-' if points is None else f'{len(points):,}'


def _wrapped(text: str, width: int, scale: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels; ASCII only (the Hershey fonts have nothing else)."""
    text = text.encode('ascii', 'replace').decode('ascii')
    lines: list[str] = []
    for word in text.split():
        candidate = f'{lines[-1]} {word}' if lines else word
        if lines and cv2.getTextSize(candidate, palette.FONT, scale, 1)[0][0] <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _box_swatch(colour: palette.Colour, thickness: int):
    def draw(panel: np.ndarray, x: int, y: int) -> None:
        cv2.rectangle(panel, (x, y), (x + 24, y + 10), colour, thickness)
    return draw


def _lidar_swatch(panel: np.ndarray, x: int, y: int) -> None:
    low, high = LIDAR_GREY
    for k in range(25):
        panel[y + 2:y + 9, x + k] = low + (high - low) * k // 24


def _radar_swatch(colour: palette.Colour, tick: bool):
    def draw(panel: np.ndarray, x: int, y: int) -> None:
        cv2.drawMarker(panel, (x + 6, y + 5), colour, cv2.MARKER_CROSS, 7, 1)
        if tick:
            cv2.line(panel, (x + 6, y + 5), (x + 22, y + 1), colour, 1, cv2.LINE_AA)
    return draw


def _ego_swatch(panel: np.ndarray, x: int, y: int) -> None:
    cv2.rectangle(panel, (x + 8, y - 2), (x + 16, y + 12), palette.EGO, cv2.FILLED)


def _ring_swatch(panel: np.ndarray, x: int, y: int) -> None:
    cv2.ellipse(panel, (x + 12, y + 12), (12, 10), 0, 200, 340, palette.RING, 1, cv2.LINE_AA)


def _arrow_swatch(panel: np.ndarray, x: int, y: int) -> None:
    cv2.arrowedLine(panel, (x, y + 5), (x + 24, y + 5), palette.AGREES, 1, cv2.LINE_8, 0, 0.3)


_LEGEND = (
    (_box_swatch(palette.AGREES, 2), 'detection, modalities agree'),
    (_box_swatch(palette.FLAGGED_ONE, 2), 'flagged: 1 reason (label)'),
    (_box_swatch(palette.FLAGGED_SEVERAL, 2), 'flagged: 2+ reasons'),
    (_box_swatch(palette.TRUTH, 1), 'ground truth'),
    (_arrow_swatch, f'velocity over {VELOCITY_ARROW_S:g} s'),
    (_lidar_swatch, 'lidar, light = high'),
    (_radar_swatch(palette.RADAR_STATIC, False), 'radar, static'),
    (_radar_swatch(palette.RADAR_MOVING, True), f'radar, moving ({RADAR_TICK_S:g} s tick)'),
    (_ego_swatch, 'ego vehicle (forward = up)'),
    (_ring_swatch, f'range rings, {RING_SPACING_M:g} m'),
)
