"""Every sensor's health, updated from each frame before the network runs, and what the fuser gets.

``HealthBoard.update(frame)`` hands each monitor of ``health.py`` its sensor's data of this frame:

- a camera: its image with the image's own stamp (a slower camera's image repeated in the next
  frame is no news), or None when the frame has none, whether the vehicle moved since the last
  frame (a still image from a standing car proves nothing), and whether the lidar's returns in the
  camera's view moved since its last image (nearest depths on a coarse grid of the image: a still
  image of a still view proves nothing either);
- a lidar: its newest sweep, moved into the lidar's own frame (sectors and beams are the lidar's);
- a radar: its newest scan in the radar's frame when the scan is new since the last frame, else None
  (silence is counted in missing scans), with each return marked supported when lidar points stand
  near it and moving when its compensated speed is over ``health.ghost_min_speed_mps`` (ghosts are
  moving returns nothing else sees).

``modality_health()`` is the gated fuser's input: per modality the mean score of its sensors, so one
blacked-out camera of six lowers the camera's weight by a sixth and a dead lidar turns it off.

Calibration (``calibration.py``) rides along: every frame ``calibration.drift_cameras_per_frame``
cameras in turn (round robin: about 4 ms a camera) get their extrinsic drift estimated from the
lidar's edges against their images, and
each new radar scan's returns of the standing world are held against the lidar's current surfaces
for that radar's clock offset (``calibration.radar_offsets: static``; with ``tracks`` instead, once
the detections are tracked (``update_offsets``), from where its returns put the tracked objects
against where the fused detections do). ``states()`` is the worst of a sensor's health and
calibration.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import numpy as np

from ..config import FusionConfig
from ..frame import CameraView, Frame
from ..geometry.projection import project_points
from ..model.config import MODALITIES
from ..types import Detections3D, RigidTransform
from .calibration import (CameraDriftEstimator, DriftEstimate, OffsetEstimate, StaticOffsetEstimator,
                          TimeOffsetEstimator, surface_index)
from .health import CameraHealth, HealthEstimate, LidarHealth, RadarHealth, health_monitors

__all__ = ['HealthBoard']

MOVING_MPS = 0.5  # the vehicle counts as moving above this speed
SUPPORT_CELL_M = 1.0  # a radar return is supported by lidar points above ground within this cell's neighbours
SUPPORT_REACH_M = 60.0  # how far around the vehicle lidar support is judged
GROUND_CLEARANCE_M = 0.3


SAME_SCAN_S = 0.002  # two scans of one radar whose stamps differ by less are the same scan
VIEW_GRID = (16, 9)  # columns, rows: the coarse nearest-depth map a camera's view is compared on
VIEW_MIN_CELLS = 4  # fewer cells with a lidar return in either image: the view's motion is unknown


class HealthBoard:
    def __init__(self, config: FusionConfig) -> None:
        self.config = config
        self.monitors = health_monitors(config)
        self.last: dict[str, HealthEstimate] = {}
        self._last_pose: tuple[int, np.ndarray] | None = None
        self._last_scan: dict[str, float] = {}
        self._fresh: dict[str, tuple[np.ndarray, float]] = {}  # radar -> its new scan this frame: rows, stamp (s)
        self._lidar_now: np.ndarray | None = None  # the frame's newest lidar sweep
        self.drift: dict[str, CameraDriftEstimator] = {}  # made once the lidar's mount is known
        self.offsets = self._offset_estimators()
        self.calibration: dict[str, DriftEstimate | OffsetEstimate] = {}
        self.mounts: dict[str, Any] = {}  # sensor -> its mount on the vehicle, last known (a silent one's too)
        self._turn = 0
        self.ego_velocity = np.full(2, np.nan)  # base axes, m/s, from the last two poses
        # camera -> its last image's stamp and pose, and the lidar's newest sweep then (the frozen test's view)
        self._views: dict[str, tuple[int, RigidTransform, np.ndarray]] = {}

    def reset(self) -> None:
        self.monitors = health_monitors(self.config)
        self.last.clear()
        self._last_pose = None
        self._last_scan.clear()
        self._fresh.clear()
        self._lidar_now = None
        self.drift.clear()
        self.offsets = self._offset_estimators()
        self.calibration.clear()
        self._turn = 0
        self._views.clear()

    def _offset_estimators(self) -> dict[str, StaticOffsetEstimator | TimeOffsetEstimator]:
        kind = {'static': StaticOffsetEstimator, 'tracks': TimeOffsetEstimator}.get(self.config.calibration.radar_offsets)
        return {} if kind is None else {name: kind(name, self.config.calibration)
                                        for name in self.config.sensors_of('radar')}

    def states(self) -> dict[str, str]:
        """Per sensor the worse of its health state and its calibration state."""
        order = {'ok': 0, 'degraded': 1, 'failed': 2}
        out = {name: e.state for name, e in self.last.items()}
        for name, estimate in self.calibration.items():
            if order.get(estimate.state, 0) > order.get(out.get(name, 'ok'), 0):
                out[name] = estimate.state
        return out

    def _ego_moving(self, frame: Frame) -> bool | None:
        if frame.pose is None:
            return None
        here = frame.pose.translation
        moving = None
        if self._last_pose is not None and frame.stamp_ns > self._last_pose[0]:
            dt = (frame.stamp_ns - self._last_pose[0]) / 1e9
            world = (here[:2] - self._last_pose[1][:2]) / dt
            moving = bool(np.linalg.norm(world) > MOVING_MPS)
            self.ego_velocity = frame.pose.rotation[:2, :2].T @ world  # into base axes
        self._last_pose = (frame.stamp_ns, here.copy())
        return moving

    def _view_check(self, view: CameraView, lidar_now: np.ndarray | None) -> Callable[[], bool | None] | None:
        """For a new image: what ``CameraHealth`` asks when it repeats the camera's last one, whether
        the lidar's returns in the view moved since then (``_view_moved``); None when unknown (no
        lidar, no earlier image)."""
        previous = self._views.get(view.name)
        if lidar_now is None or (previous is not None and previous[0] == view.stamp_ns):
            return None
        self._views[view.name] = (view.stamp_ns, view.camera_to_base, lidar_now)
        if previous is None:
            return None
        return functools.partial(self._view_moved, view, previous[1], previous[2], lidar_now)

    def _view_moved(self, view: CameraView, before_pose: RigidTransform, before: np.ndarray,
                    now: np.ndarray) -> bool | None:
        """Whether a share ``health.frozen_view_change_share`` of the ``VIEW_GRID`` cells with a lidar
        return in either sweep gained, lost, or moved their nearest return by over
        ``health.frozen_view_change_m``, ``before`` seen from the camera's pose then; None when too
        few cells hold a return."""
        earlier = self._nearest_depths(before, before_pose, view)
        nearest = self._nearest_depths(now, view.camera_to_base, view)
        seen = np.isfinite(nearest) | np.isfinite(earlier)
        if seen.sum() < VIEW_MIN_CELLS:
            return None
        config = self.config.health
        with np.errstate(invalid='ignore'):
            moved = seen & ~(np.abs(nearest - earlier) <= config.frozen_view_change_m)
        return bool(moved.sum() >= config.frozen_view_change_share * seen.sum())

    @staticmethod
    def _nearest_depths(sweep: np.ndarray, camera_to_base: RigidTransform, view: CameraView) -> np.ndarray:
        """(columns * rows,) the nearest depth of ``sweep``'s returns in each ``VIEW_GRID`` cell of the
        camera's image, inf where none lands."""
        intrinsics = view.intrinsics
        hits = project_points(np.ascontiguousarray(sweep[:, :3], np.float32), camera_to_base.inverse().matrix[None],
                              intrinsics.k[None], np.zeros((1, 5)), np.array([[intrinsics.width, intrinsics.height]]))
        columns, rows = VIEW_GRID
        cells = (hits.uv[:, 1] * rows / intrinsics.height).astype(np.int64) * columns + \
            (hits.uv[:, 0] * columns / intrinsics.width).astype(np.int64)
        nearest = np.full(columns * rows, np.inf)
        np.minimum.at(nearest, np.clip(cells, 0, columns * rows - 1), hits.depth)
        return nearest

    def _travel_focus(self, view: CameraView) -> np.ndarray | None:
        """Where the direction of travel projects in ``view``'s image (homogeneous pixels), or None."""
        if not np.isfinite(self.ego_velocity).all():
            return None
        direction = view.camera_to_base.rotation.T @ np.array([*self.ego_velocity, 0.0])  # camera axes
        return view.intrinsics.k @ direction

    def update(self, frame: Frame) -> dict[str, HealthEstimate]:
        stamp = frame.stamp_ns
        moving = self._ego_moving(frame)
        self.mounts.update(frame.sensor_to_base)
        views = {view.name: view for view in frame.cameras}
        support_grid = None  # built once a frame, when a radar needs it
        standing: dict[str, np.ndarray] = {}  # radar -> its new scan's returns of the standing world (R, 2)
        lidar_now = None
        if frame.lidar is not None and len(frame.lidar):
            age = frame.lidar[:, 4]
            lidar_now = frame.lidar[age <= age.min() + 1e-3]
        self._lidar_now = lidar_now
        self._fresh.clear()
        for name, monitor in self.monitors.items():
            if isinstance(monitor, CameraHealth):
                # The image's own stamp: a 12 Hz camera in 20 Hz frames shows the same image twice, which
                # is no news, not a frozen camera.
                view = views.get(name)
                if view is None:
                    self.last[name] = monitor.update(stamp, None, ego_moving=moving)
                else:
                    self.last[name] = monitor.update(view.stamp_ns, view.pixels, ego_moving=moving,
                                                     travel_focus=self._travel_focus(view) if moving else None,
                                                     view_changed=self._view_check(view, lidar_now))
            elif isinstance(monitor, LidarHealth):
                self.last[name] = monitor.update(stamp, self._sensor_points(frame, name, 'lidar'))
            elif isinstance(monitor, RadarHealth):
                newest = self._newest_scan(frame, name)
                points = supported = travelling = None
                if newest is not None and name in frame.sensor_to_base:
                    rows, scan_stamp = newest
                    if abs(self._last_scan.get(name, -np.inf) - scan_stamp) >= SAME_SCAN_S:
                        self._last_scan[name] = scan_stamp  # news from this radar (else: the same scan again)
                        self._fresh[name] = (rows, scan_stamp)
                        points = self._in_sensor(frame, name, frame.radar[rows])  # type: ignore[index]
                        if lidar_now is not None:
                            if support_grid is None:
                                support_grid = self._support_grid(lidar_now)
                            supported = self._lidar_support(frame.radar[rows, :2], support_grid)  # type: ignore[index]
                            speed = np.hypot(frame.radar[rows, 3], frame.radar[rows, 4])  # type: ignore[index]
                            travelling = speed > self.config.health.ghost_min_speed_mps
                            if isinstance(self.offsets.get(name), StaticOffsetEstimator) and moving:
                                still = speed < self.config.calibration.static_offset_max_speed_mps
                                standing[name] = frame.radar[rows[still], :2].astype(np.float64)  # type: ignore[index]
                scan_ns = int(round(self._last_scan[name] * 1e9)) if name in self._last_scan else None
                self.last[name] = monitor.update(stamp, points, supported, scan_ns, travelling)
        if standing and lidar_now is not None:
            self._update_static_offsets(standing, lidar_now)
        self._update_drift(frame, lidar_now)
        return dict(self.last)

    def _update_drift(self, frame: Frame, lidar_now: np.ndarray | None) -> None:
        lidar = next(iter(frame.lidar_sensors), None)
        if lidar_now is None or not frame.cameras or lidar not in frame.sensor_to_base:
            return
        if not self.drift:
            origin = frame.sensor_to_base[lidar].translation
            self.drift = {name: CameraDriftEstimator(name, self.config.calibration, origin)
                          for name in self.config.sensors_of('camera')}
        count = self.config.calibration.drift_cameras_per_frame or len(frame.cameras)
        blind = self._blind()
        for i in range(min(count, len(frame.cameras))):
            view = frame.cameras[(self._turn + i) % len(frame.cameras)]
            if view.name in self.drift and view.name not in blind:
                self.calibration[view.name] = self.drift[view.name].update(view, lidar_now[:, :3])
        self._turn += count

    def _blind(self) -> set[str]:
        return {n for n, e in self.last.items() if e.modality == 'camera' and e.state == 'failed'}

    def blind_radars(self) -> list[str]:
        """Radars health calls silent or failed."""
        return [n for n, e in self.last.items() if e.modality == 'radar' and (e.state == 'failed' or 'silent' in e.conditions)]

    def degraded_sensors(self) -> dict[str, str]:
        """Sensors whose health is not ok (sensor -> modality), radars whose clock is off and cameras
        whose calibration has drifted; a lidar whose only trouble is a lost sector is left out (what
        lies in the sector is judged per object)."""
        out = {}
        for name, e in self.last.items():
            trouble = set(e.conditions) - {'warming_up'}
            if e.modality == 'lidar':
                trouble -= {'sector_loss'}
            if e.state != 'ok' and trouble:
                out[name] = e.modality
        for name, estimate in self.calibration.items():
            if isinstance(estimate, OffsetEstimate) and estimate.state != 'ok' and name in self.offsets:
                out[name] = 'radar'
            elif isinstance(estimate, DriftEstimate) and estimate.state != 'ok':
                out[name] = 'camera'
        return out

    def occluded_regions(self) -> dict[str, tuple[float, float, float, float]]:
        """Cameras whose only trouble is an occlusion, each as the stuck region's bounds (x0, y0, x1,
        y1, fractions of the image): what lies outside it the camera still sees."""
        regions = {}
        keys = ('occluded_x0', 'occluded_y0', 'occluded_x1', 'occluded_y1')
        for name, e in self.last.items():
            box = tuple(float(e.estimates.get(k, np.nan)) for k in keys)
            if e.modality == 'camera' and set(e.conditions) - {'warming_up'} == {'occluded'} \
                    and all(np.isfinite(box)):
                regions[name] = box  # type: ignore[assignment]
        return regions

    def lost_lidar_sectors(self) -> dict[str, tuple[Any, float, float]]:
        """Lidars health calls sector_loss, each as (its mount, the lost arc's start and end in degrees
        of azimuth in the lidar's frame, counter-clockwise)."""
        lost = {}
        for name, e in self.last.items():
            start, end = e.estimates.get('sector_start_deg', np.nan), e.estimates.get('sector_end_deg', np.nan)
            if e.modality == 'lidar' and 'sector_loss' in e.conditions and name in self.mounts \
                    and np.isfinite(start) and np.isfinite(end):
                lost[name] = (self.mounts[name], float(start), float(end))
        return lost

    def radar_mounts(self) -> dict[str, Any]:
        return {n: m for n, m in self.mounts.items() if n in self.config.sensors and
                self.config.sensors[n].modality == 'radar'}

    def _update_static_offsets(self, standing: Mapping[str, np.ndarray], lidar_now: np.ndarray) -> None:
        """New radar scans' standing returns to their clock estimators, against one nearest-neighbour
        index over the lidar's raised points near any of them (within the largest shift an offset
        can make at this speed, plus the score's reach)."""
        calibration = self.config.calibration
        speed = float(np.linalg.norm(self.ego_velocity))
        reach = calibration.static_offset_search_ms * 1e-3 * speed + 3 * calibration.static_offset_sigma_m
        surfaces = self._surfaces_near(lidar_now, np.concatenate(list(standing.values())), reach)
        for name, xy in standing.items():
            self.calibration[name] = self.offsets[name].update(xy, surfaces, self.ego_velocity,
                                                               scan=self._fresh[name][1])

    def update_offsets(self, frame: Frame, detections: Detections3D, settled: np.ndarray) -> None:
        """Radar clock offsets from the tracked objects: with ``calibration.radar_offsets: tracks``
        from where the radar puts them against their tracks; with ``static`` and
        ``static_offset_moving_objects``, the returns of this frame's new scans on moving tracked
        objects against the lidar's points of them (``_add_moving_returns``)."""
        mode = self.config.calibration.radar_offsets
        if mode == 'tracks':
            self._update_offsets(frame, detections, settled)
        elif mode == 'static' and self.config.calibration.static_offset_moving_objects:
            self._add_moving_returns(frame, detections, settled)

    def _add_moving_returns(self, frame: Frame, detections: Detections3D, settled: np.ndarray) -> None:
        """Each new scan's returns in the box (grown by a metre) of a detection whose track has a
        velocity, and that do not stand, to their radar's clock estimator: with the track's velocity
        relative to the vehicle, and the distance the object moved from the scan to the frame (the
        lidar's sweep: the return's age times the track's velocity). At a crossing, where the vehicle
        waits, the standing world shows no clock; the traffic crossing in front does."""
        moving = settled & np.isfinite(detections.velocities).all(axis=1) if len(detections) else np.zeros(0, bool)
        if not self._fresh or not moving.any() or frame.radar is None or self._lidar_now is None \
                or not np.isfinite(self.ego_velocity).all():
            return
        from ..geometry.boxes import points_in_boxes

        calibration = self.config.calibration
        boxes = _grown_boxes(detections)[moving]
        velocity = detections.velocities[moving]  # over the ground, base axes
        found = {}
        for name, (rows, scan_stamp) in self._fresh.items():
            if name not in self.offsets or not len(rows):
                continue
            radar = frame.radar[rows]
            speed = np.hypot(radar[:, 3], radar[:, 4])
            box_of, _ = points_in_boxes(np.ascontiguousarray(radar[:, :3]), boxes)
            keep = (box_of >= 0) & (speed >= calibration.static_offset_max_speed_mps)
            if keep.any():
                v = velocity[box_of[keep]]
                found[name] = (radar[keep, :2].astype(np.float64), v - self.ego_velocity,
                               v * radar[keep, -1:].astype(np.float64), scan_stamp)
        if not found:
            return
        speed = max(float(np.linalg.norm(rel, axis=1).max()) for _, rel, _, _ in found.values())
        lead = max(float(np.linalg.norm(ahead, axis=1).max()) for _, _, ahead, _ in found.values())
        reach = calibration.static_offset_search_ms * 1e-3 * speed + lead + 3 * calibration.static_offset_sigma_m
        surfaces = self._surfaces_near(self._lidar_now, np.concatenate([xy for xy, _, _, _ in found.values()]), reach)
        for name, (xy, relative, ahead, scan_stamp) in found.items():
            self.calibration[name] = self.offsets[name].add_moving(xy, surfaces, relative, ahead, scan=scan_stamp)

    def _update_offsets(self, frame: Frame, detections: Detections3D, settled: np.ndarray) -> None:
        """Feed each radar's clock offset estimator with this frame's tracked objects it sees.

        Per object with a settled track velocity and at least two returns of that radar's newest scan in
        its box (grown by a metre): observed = the returns' mean position, reference = the detection's
        centre, velocity = the track's minus the vehicle's (how the object moves as the radar sees it).
        """
        if frame.radar is None or not len(detections) or not np.isfinite(self.ego_velocity).all():
            return
        from ..geometry.boxes import points_in_boxes

        boxes = _grown_boxes(detections)
        for name, estimator in self.offsets.items():
            rows = self._rows(frame, name, 'radar')
            if rows is None:
                continue
            age = frame.radar[rows, -1]
            rows = rows[age <= age.min() + 1e-3]
            box_of, _ = points_in_boxes(np.ascontiguousarray(frame.radar[rows, :3]), boxes)
            observed, reference, velocity, sigma = [], [], [], []
            for i in np.flatnonzero(settled):
                mine = box_of == i
                if mine.sum() < 2 or not np.isfinite(detections.velocities[i]).all():
                    continue
                observed.append(frame.radar[rows[mine], :2].mean(axis=0))
                reference.append(detections.centers[i, :2])
                velocity.append(detections.velocities[i] - self.ego_velocity)
                sigma.append(1.0 / np.sqrt(mine.sum()))
            if observed:
                self.calibration[name] = estimator.update(np.array(observed), np.array(reference),
                                                          np.array(velocity), np.array(sigma))

    def modality_health(self) -> tuple[float, float, float]:
        scores = {m: [e.score for e in self.last.values() if e.modality == m] for m in MODALITIES}
        return tuple(float(np.mean(v)) if v else 1.0 for v in scores.values())  # type: ignore[return-value]

    # -- per-sensor data of a frame -------------------------------------------------------------------

    @staticmethod
    def _rows(frame: Frame, name: str, modality: str) -> np.ndarray | None:
        cloud = frame.lidar if modality == 'lidar' else frame.radar
        source = frame.lidar_sensor if modality == 'lidar' else frame.radar_sensor
        names = frame.lidar_sensors if modality == 'lidar' else frame.radar_sensors
        if cloud is None or source is None or name not in names:
            return None
        rows = np.flatnonzero(source == names.index(name))
        return rows if len(rows) else None

    def _newest_rows(self, frame: Frame, name: str, modality: str) -> tuple[np.ndarray, float] | None:
        """The rows of the sensor's newest scan in the frame and that scan's age (None: nothing from it)."""
        rows = self._rows(frame, name, modality)
        if rows is None:
            return None
        cloud = frame.lidar if modality == 'lidar' else frame.radar
        age = cloud[rows, -1]  # type: ignore[index]
        newest = float(age.min())
        return rows[age <= newest + 1e-3], newest

    def _newest_scan(self, frame: Frame, name: str) -> tuple[np.ndarray, float] | None:
        """A radar's newest scan in the frame: its rows (none for a scan without returns) and its stamp
        in seconds; from ``frame.scan_stamps`` where the frame has it, else from the rows' age (float32
        seconds: equal only to within rounding). None: nothing from that radar."""
        newest = self._newest_rows(frame, name, 'radar')
        if name not in frame.scan_stamps:
            return None if newest is None else (newest[0], frame.stamp_ns / 1e9 - newest[1])
        stamp_s = frame.scan_stamps[name] / 1e9
        age = max(0.0, (frame.stamp_ns - frame.scan_stamps[name]) / 1e9)  # as the rows carry it
        if newest is None or abs(newest[1] - age) >= SAME_SCAN_S:
            return np.zeros(0, np.int64), stamp_s  # the newest scan had no returns
        return newest[0], stamp_s

    @staticmethod
    def _in_sensor(frame: Frame, name: str, rows: np.ndarray) -> np.ndarray:
        """Cloud rows' points in the sensor's own frame (its mount must be known)."""
        return frame.sensor_to_base[name].inverse().apply(rows[:, :3].astype(np.float64)).astype(np.float32)

    def _sensor_points(self, frame: Frame, name: str, modality: str) -> np.ndarray | None:
        """The sensor's newest scan in its own frame (None: nothing from it in this frame)."""
        newest = self._newest_rows(frame, name, modality)
        if newest is None or name not in frame.sensor_to_base:
            return None
        cloud = frame.lidar if modality == 'lidar' else frame.radar
        return self._in_sensor(frame, name, cloud[newest[0]])  # type: ignore[index]

    @staticmethod
    def _raised(lidar_now: np.ndarray) -> np.ndarray:
        """The sweep's points above the ground (higher than its lowest point by GROUND_CLEARANCE_M)."""
        return lidar_now[lidar_now[:, 2] > lidar_now[:, 2].min() + GROUND_CLEARANCE_M] if len(lidar_now) else lidar_now

    @classmethod
    def _surfaces_near(cls, lidar_now: np.ndarray, returns_xy: np.ndarray, reach: float) -> Any:
        """A nearest-neighbour index over the sweep's points above the ground within ``reach`` of any
        of ``returns_xy`` (R, 2); None where there are none."""
        raised = cls._raised(lidar_now)
        near = _within(raised[:, :2], returns_xy, reach) if len(returns_xy) else np.zeros(len(raised), bool)
        return surface_index(raised[near]) if near.any() else None

    @classmethod
    def _support_grid(cls, lidar_now: np.ndarray) -> np.ndarray:
        """Cells (SUPPORT_CELL_M, +-SUPPORT_REACH_M, one-cell border) near lidar points above the ground."""
        raised = cls._raised(lidar_now)
        reach = SUPPORT_REACH_M
        cells = int(2 * reach / SUPPORT_CELL_M)
        occupied = np.zeros((cells + 2, cells + 2), bool)  # a one-cell border, so neighbours never wrap
        ij = np.floor((raised[:, :2] + reach) / SUPPORT_CELL_M).astype(np.int64) + 1
        keep = np.all((ij >= 1) & (ij <= cells), axis=1)
        occupied[ij[keep, 0], ij[keep, 1]] = True
        grown = occupied.copy()  # each occupied cell and its eight neighbours
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                grown[1:-1, 1:-1] |= occupied[1 + dx:cells + 1 + dx, 1 + dy:cells + 1 + dy]
        return grown

    @staticmethod
    def _lidar_support(xy: np.ndarray, grown: np.ndarray) -> np.ndarray:
        """(R,) bool per radar return at ``xy`` (R, 2), base frame: near lidar points above the ground."""
        reach = SUPPORT_REACH_M
        cells = grown.shape[0] - 2
        ij = np.floor((xy + reach) / SUPPORT_CELL_M).astype(np.int64) + 1
        inside = np.all((ij >= 1) & (ij <= cells), axis=1)
        supported = np.ones(len(xy), bool)  # beyond the lidar's reach: no evidence of a ghost
        supported[inside] = grown[ij[inside, 0], ij[inside, 1]]
        return supported


def _grown_boxes(detections: Detections3D, margin_m: float = 1.0) -> np.ndarray:
    """(N, 7) the detections' boxes (centre, size, yaw) grown by ``margin_m`` on every side: a radar
    return of the object may lie a little outside its box."""
    boxes = np.column_stack([detections.centers, detections.sizes, detections.yaws])
    boxes[:, 3:6] += 2 * margin_m
    return boxes


def _within(points: np.ndarray, centres: np.ndarray, reach: float) -> np.ndarray:
    """(N,) bool: which of ``points`` (N, 2) lie in a square cell (of side ``reach``) next to one of a
    ``centres`` (M, 2) cell: everything within ``reach`` of a centre, and some more."""
    cell = max(reach, 0.1)
    keys = lambda xy: np.floor(xy / cell).astype(np.int64)  # noqa: E731
    taken = keys(centres)
    near = {(int(i) + di, int(j) + dj) for i, j in taken for di in (-1, 0, 1) for dj in (-1, 0, 1)}
    cells = keys(points)
    lookup = np.array(sorted(near), np.int64)
    code = lambda ij: ij[:, 0] * 1_000_003 + ij[:, 1]  # noqa: E731
    return np.isin(code(cells), code(lookup))


def health_statuses(estimates: Mapping[str, HealthEstimate]) -> list:
    """The estimates as DiagnosticStatus entries, sensors in order."""
    return [estimate.status() for estimate in estimates.values()]
