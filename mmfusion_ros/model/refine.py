"""Long vehicles' boxes refined with the lidar's points, after decoding.

The network regresses a truck's or a bus's box from a BEV map in which the lidar usually sees only
the vehicle's near end and one side: the far end is hidden behind the vehicle itself. Where it can
not tell a 9 m truck from a 12 m bus, it regresses a length between the two and puts the centre
half that length from the near end: a bus comes out 2 m short with its centre 1 m toward the
sensor, a truck 0.5 m long (measured on the held-out scenes), and no box of either is within the
0.5 m the strictest AP threshold asks for. The near end itself, which the lidar does see, lies
within 0.15 m of the truth in three cases out of four.

``refine_long_boxes`` therefore re-places each box of a refined class (``RefineSection.lengths``)
from the current sweep's points on the vehicle (above its floor, below its roof, within
``lateral_margin_m`` of its sides and ``margin_m`` beyond its ends):

1. the heading: the direction within ``yaw_search_deg`` of the network's that fits the points best
   as the sides of a rectangle (the closeness criterion of L-shape fitting: each point's distance to
   the nearest edge of its bounding rectangle in that direction, summed as ``1 / max(d, 0.25 m)``);
2. the extent the points cover along that heading (1st to 99th percentile);
3. the class: an extent longer than halfway between two refined classes' lengths is the longer
   class (a truck label on 11.5 m of points is a bus); a short extent proves nothing (the far end
   may be hidden) and changes no label;
4. the length and centre: an extent within ``both_ends_tolerance_m`` of the length or longer means
   both ends are seen: the box spans them. Otherwise the box keeps the end nearer the sensor and
   extends from it by the class's typical length (or the network's, when that is longer). Trusting
   a shorter extent instead (the network's length as the bound) was measured worse: the network's
   short bus lengths then pass a half-seen bus as whole (bus AP at 0.5 m 0.42 -> 0.20). So a
   vehicle shorter than its class's typical length is drawn that long;
5. across the heading the same with the network's width: both sides seen, the box is between them;
   else it keeps the side nearer the sensor (the network's lateral error on trucks, 0.4 m median,
   alone keeps most of their boxes beyond 0.5 m).

Width, height, z, velocity and score are the network's. Boxes of other classes, and boxes with fewer
than ``min_points`` points, are left as they are. Measured on the 20 held-out simulator scenes (601
frames; the 10000-step weights): truck AP 0.40 -> 0.62, bus 0.30 -> 0.59, mAP 0.673 -> 0.775. Cars are
not refined: their boxes are better than this (the same steps with the network's length took car AP
0.88 -> 0.75), and a queue of them reads as one long vehicle. Splitting a vehicle's points at gaps along it
was measured worse too (mAP 0.755 -> 0.70 at 2 m gaps): a side seen at a grazing angle has gaps of
metres.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import RefineSection
from ..errors import ConfigError
from ..types import Detections3D

__all__ = ['check_refined_classes', 'refine_long_boxes']

_CLOSENESS_FLOOR_M = 0.25  # L-shape fitting: nearer an edge than this counts as on it


def check_refined_classes(config: RefineSection, classes: tuple[str, ...]) -> None:
    """ConfigError when ``config.lengths`` names a class the network does not detect (a misspelt class
    would silently leave its boxes unrefined)."""
    unknown = sorted(set(config.lengths) - set(classes))
    if config.enabled and unknown:
        raise ConfigError(f'refine.lengths: {", ".join(map(repr, unknown))} not among the network\'s classes '
                          f'({", ".join(classes)})')


def refine_long_boxes(detections: Detections3D, lidar: np.ndarray | None,
                      config: RefineSection = RefineSection()) -> Detections3D:
    """``detections`` with the boxes of ``config.lengths``' classes refined by ``lidar`` (N, >= 3:
    x, y, z in the detections' frame, then intensity and dt, the age of each point's sweep, in
    seconds, when there are 5 columns). A new object: the input is not changed."""
    refined = [i for i, label in enumerate(detections.labels) if label in config.lengths]
    if not config.enabled or not refined or lidar is None or not len(lidar):
        return detections
    lidar = np.asarray(lidar)
    current = np.isfinite(lidar[:, :3]).all(axis=1)
    if lidar.shape[1] >= 5:
        current &= lidar[:, 4] <= config.max_point_age_s
    points = lidar[current, :3].astype(np.float64)
    centers, sizes, yaws = detections.centers.copy(), detections.sizes.copy(), detections.yaws.copy()
    labels = list(detections.labels)
    by_length = sorted(config.lengths.items(), key=lambda item: item[1])
    for i in refined:
        box = _refine_box(points, centers[i], sizes[i], float(yaws[i]), labels[i], by_length, config)
        if box is not None:
            centers[i, :2], sizes[i, 0], yaws[i], labels[i] = box
    return dataclasses.replace(detections, centers=centers, sizes=sizes, yaws=yaws, labels=tuple(labels))


def _on_vehicle(points: np.ndarray, center: np.ndarray, size: np.ndarray, yaw: float,
                config: RefineSection) -> tuple[np.ndarray, np.ndarray]:
    """(along, across) heading coordinates (K,) each of the points on the vehicle, relative to ``center``."""
    heading = np.array([math.cos(yaw), math.sin(yaw)])
    rel = points[:, :2] - center[:2]
    along = rel @ heading
    across = rel @ np.array([-heading[1], heading[0]])
    floor = center[2] - size[2] / 2
    keep = ((np.abs(across) <= size[1] / 2 + config.lateral_margin_m)
            & (np.abs(along) <= size[0] / 2 + config.margin_m)
            & (points[:, 2] > floor + 0.4) & (points[:, 2] < floor + size[2] + 0.5))
    return along[keep], across[keep]


def _fit_heading(xy: np.ndarray, yaw: float, config: RefineSection) -> float:
    """The heading within the search window whose rectangle's edges the points ``xy`` (K, 2) hug best."""
    offsets = np.radians(np.arange(-config.yaw_search_deg, config.yaw_search_deg + 1e-9, config.yaw_step_deg))
    candidates = yaw + offsets  # (Y,)
    axes = np.stack([np.cos(candidates), np.sin(candidates)], axis=1)  # (Y, 2)
    along = axes @ xy.T  # (Y, K)
    across = np.stack([-axes[:, 1], axes[:, 0]], axis=1) @ xy.T
    def edge_distance(v: np.ndarray) -> np.ndarray:
        return np.minimum(v.max(axis=1, keepdims=True) - v, v - v.min(axis=1, keepdims=True))
    distance = np.maximum(np.minimum(edge_distance(along), edge_distance(across)), _CLOSENESS_FLOOR_M)
    closeness = (1.0 / distance).sum(axis=1)  # (Y,)
    # Ties (a flat wall of points fits several headings equally): the one nearest the network's.
    best = np.flatnonzero(closeness >= closeness.max() * (1 - 1e-9))
    return float(candidates[best[np.argmin(np.abs(offsets[best]))]])


def _refine_box(points: np.ndarray, center: np.ndarray, size: np.ndarray, yaw: float, label: str,
                by_length: list[tuple[str, float]], config: RefineSection) -> tuple[np.ndarray, float, float, str] | None:
    reach = math.hypot(size[0] / 2 + config.margin_m, size[1] / 2 + config.lateral_margin_m)
    points = points[(np.abs(points[:, 0] - center[0]) <= reach) & (np.abs(points[:, 1] - center[1]) <= reach)]
    along, across = _on_vehicle(points, center, size, yaw, config)
    if len(along) < config.min_points:
        return None
    c, s = math.cos(yaw), math.sin(yaw)
    yaw = _fit_heading(np.column_stack([along * c - across * s, along * s + across * c]), yaw, config)
    along, across = _on_vehicle(points, center, size, yaw, config)
    if len(along) < config.min_points:
        return None
    low, high = np.percentile(along, [1, 99])
    extent = float(high - low)
    for (shorter, short_length), (longer, long_length) in zip(by_length, by_length[1:]):
        if label == shorter and extent > (short_length + long_length) / 2:
            label = longer
    heading = np.array([math.cos(yaw), math.sin(yaw)])
    normal = np.array([-heading[1], heading[0]])
    length = max(float(size[0]), config.lengths[label])
    middle, length = _span(center[:2], heading, low, high, length, config.both_ends_tolerance_m)
    side_low, side_high = np.percentile(across, [1, 99])
    beside, _ = _span(center[:2], normal, side_low, side_high, float(size[1]), config.both_ends_tolerance_m)
    return center[:2] + middle * heading + beside * normal, length, math.remainder(yaw, 2 * math.pi), label


def _span(center: np.ndarray, axis: np.ndarray, low: float, high: float, length: float,
          tolerance: float) -> tuple[float, float]:
    """(middle, length) along ``axis`` of a vehicle ``length`` long whose points cover [low, high] from
    ``center``: both ends, if the points cover the length; else the end nearer the sensor."""
    if high - low >= length - tolerance:
        return (low + high) / 2, high - low
    if np.linalg.norm(center + low * axis) <= np.linalg.norm(center + high * axis):
        return low + length / 2, length
    return high - length / 2, length
