"""Sensor models of the built-in simulator: what the camera, lidar and radar measure in a ``World``.

Every sensor looks through ``Snapshot.cast``. A sensor's pose in map at time ``t`` is the ego pose
(base_link in map) composed with the rig mount (``rig.sensor_to_base``), optionally composed with a
``pose_error`` in the sensor frame: ``true_sensor_to_base = nominal_sensor_to_base @ pose_error``.
That is how extrinsic drift is simulated: the sensor looks somewhere other than where its calibration
says, and reports what it sees in its own (true) frame.

- Camera: an ideal pinhole, one ray per pixel. Pixel ``(column i, row j)`` has its centre at image
  coordinates ``u = i, v = j`` (OpenCV's convention), so a point projecting to ``(u, v)`` lands in
  pixel ``(round(u), round(v))``. Lighting affects only the camera.
- Lidar: a spinning multi-beam lidar turning once per sweep. Each firing casts from the ego pose at
  its own time, and points are reported in the lidar frame at their firing time, so ego motion during
  the sweep distorts the cloud as it does on a real car; undoing that is the pipeline's job.
  Actors are frozen at one snapshot (the caller's, or mid-sweep).
- Radar: a fan of rays grouped into resolution cells, a few returns per object, static metal and
  barriers, clutter. Positions are 2-D (``z = 0`` in the radar frame: automotive radars such as the
  ARS408 measure no elevation), doppler is positive for a growing range.

Randomness only comes from the ``rng`` the caller passes; equal seeds give equal output.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from ..types import PointCloud, RadarPoints, RigidTransform
from .rig import Rig
from .world import MATERIALS, MISS, Snapshot, World, material_id

__all__ = [
    'LIDAR_INTENSITY_MAX',
    'RADAR_RCS_DBSM',
    'RADAR_SOURCE_FIELDS',
    'LidarScan',
    'RadarScan',
    'lidar_directions',
    'project_to_camera',
    'radar_directions',
    'render_camera',
    'render_lidar',
    'render_radar',
    'sensor_pose',
]


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


# Per-material lookup tables, indexed by material id; the extra last row serves misses (id -1).
_ALBEDO = _frozen(np.array([m.albedo for m in MATERIALS] + [(0.0, 0.0, 0.0)], np.float32))
_REFLECTIVITY = _frozen(np.array([m.reflectivity for m in MATERIALS] + [0.0], np.float32))
_EMISSIVE = _frozen(np.array([m.emissive for m in MATERIALS] + [False]))
_LAMP = material_id('lamp')
_GROUND = _frozen(np.isin(np.arange(len(MATERIALS) + 1),
                          [material_id(n) for n in ('asphalt', 'lane_marking', 'sidewalk', 'grass')]))
_RADAR_STATIC = _frozen(np.isin(np.arange(len(MATERIALS) + 1), [material_id(n) for n in ('metal', 'barrier')]))


def sensor_pose(world: World, rig: Rig, sensor: str, t: float | np.ndarray, *,
                pose_error: RigidTransform | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(rotation (..., 3, 3), translation (..., 3))`` of the sensor's published frame in map.

    ``t`` may be an array of times (one pose per time). ``pose_error`` is applied in the sensor frame.
    """
    base_rotation, base_translation = world.ego_pose(t)
    mount = rig.sensor_to_base(sensor)
    if pose_error is not None:
        mount = mount @ pose_error
    rotation = base_rotation @ mount.rotation
    translation = base_rotation @ mount.translation + base_translation
    return rotation, translation


def _sensor_velocity(world: World, position: np.ndarray, t: float) -> np.ndarray:
    """Velocity ``(3,)`` in map of a point rigidly attached to the ego, at map position ``position``."""
    _, ego_origin = world.ego_pose(t)
    linear = world.ego.velocity(t)
    omega = float(world.ego.yaw_rate(t))
    lever = position - ego_origin
    return np.array([linear[0] - omega * lever[1], linear[1] + omega * lever[0], 0.0])


# ---------------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------------

# Day: sky light from everywhere plus a high sun (from -x, +y in map) that casts shadows.
_SUN_DIRECTION = _frozen(np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82]))
_DAY_AMBIENT = 0.38
_DAY_SUN = 0.75
_DAY_SKY_HORIZON = _frozen(np.array([0.62, 0.72, 0.86]))  # linear RGB
_DAY_SKY_ZENITH = _frozen(np.array([0.16, 0.32, 0.72]))
_DAY_FOG_M = 600.0  # distance at which 63% of a surface's colour is replaced by haze
# Night: a trace of ambient light, street lamps, the ego's headlights.
_NIGHT_AMBIENT = 0.008
_NIGHT_SKY_HORIZON = _frozen(np.array([0.0025, 0.0025, 0.004]))
_NIGHT_SKY_ZENITH = _frozen(np.array([0.0004, 0.0004, 0.0012]))
_NIGHT_FOG_M = 250.0
_EMISSIVE_RADIANCE = 1.0  # lamps at night render at their albedo, unlit by anything else
# Two low-beam headlights in base_link (x is set from ego_size); intensity in irradiance x m^2 each.
_HEADLIGHT_XYZ = _frozen(np.array([[0.0, 0.7, 0.70], [0.0, -0.7, 0.70]]))
_HEADLIGHT_INTENSITY = 300.0
_HEADLIGHT_AIM_DEG = -1.5  # beam axis below the horizontal
_HEADLIGHT_SIGMA_DEG = (14.0, 3.5)  # beam spread, horizontal and vertical
_NIGHT_IRRADIANCE_MAX = 1.0  # what the camera's exposure can hold before it saturates anyway
# Street lamps: every lamp-material cluster of the static mesh lights the ground below it.
_STREET_LAMP_INTENSITY = 8.0  # irradiance x m^2 straight down
_STREET_LAMP_RANGE_M = 80.0
_STREET_LAMP_MAX = 24  # nearest lamps to the camera that light the image
_SHADOW_OFFSET_M = 0.02
_DAY_NOISE = 1.5 / 255  # sensor noise, 1 sigma in display (gamma) units
_NIGHT_NOISE = 3.0 / 255


def _pixel_rays(rig: Rig, sensor: str) -> np.ndarray:
    """Unit ray directions ``(H * W, 3)`` in the camera's optical frame, row-major from the top left."""
    camera = rig.camera
    k = camera.intrinsics(sensor).k
    columns, rows = np.meshgrid(np.arange(camera.width, dtype=np.float64),
                                np.arange(camera.height, dtype=np.float64))
    pixels = np.stack([columns.ravel(), rows.ravel(), np.ones(columns.size)], axis=1)
    rays = pixels @ np.linalg.inv(k).T
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _sky(directions: np.ndarray, lighting: str) -> np.ndarray:
    """Linear RGB ``(N, 3)`` of the sky seen along map-frame unit ``directions``."""
    horizon, zenith = ((_DAY_SKY_HORIZON, _DAY_SKY_ZENITH) if lighting == 'day'
                       else (_NIGHT_SKY_HORIZON, _NIGHT_SKY_ZENITH))
    height = np.sqrt(np.clip(directions[:, 2], 0.0, 1.0))[:, None]
    return horizon * (1 - height) + zenith * height


def _point_light(points: np.ndarray, normals: np.ndarray, light: np.ndarray, intensity: float) -> np.ndarray:
    """Irradiance ``(N,)`` at ``points`` from an isotropic point light, falling off as 1 / r^2."""
    to_light = light - points
    distance_sq = np.maximum(np.einsum('ni,ni->n', to_light, to_light), 0.25)
    cosine = np.einsum('ni,ni->n', normals, to_light) / np.sqrt(distance_sq)
    return intensity * np.clip(cosine, 0.0, None) / distance_sq


def _street_lamp_light(points: np.ndarray, normals: np.ndarray, lamps: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Irradiance ``(N,)`` from downward-facing street lamps ``(L, 3)``, all at once as ``(N, L)`` products.

    Coordinates are taken relative to ``centre`` (the camera) so float32 keeps centimetres.
    """
    if len(lamps) == 0:
        return np.zeros(len(points))
    points = (points - centre).astype(np.float32)
    lamps = (lamps - centre).astype(np.float32)
    normals = normals.astype(np.float32)
    # |lamp - p|^2 and n . (lamp - p) from matrix products rather than (N, L, 3) differences.
    distance_sq = points @ (-2.0 * lamps.T)
    distance_sq += np.einsum('ni,ni->n', points, points)[:, None]
    distance_sq += np.einsum('li,li->l', lamps, lamps)[None, :]
    np.maximum(distance_sq, 0.25, out=distance_sq)
    facing = normals @ lamps.T
    facing -= np.einsum('ni,ni->n', normals, points)[:, None]
    np.maximum(facing, 0.0, out=facing)
    # Luminaires shine downwards: intensity falls with the cosine from straight down.
    below = lamps[None, :, 2] - points[:, 2:3]
    np.maximum(below, 0.0, out=below)
    facing *= below
    facing /= distance_sq * distance_sq
    return _STREET_LAMP_INTENSITY * facing.sum(axis=1, dtype=np.float64)


def _headlight_beam(points: np.ndarray, light: np.ndarray, base_rotation: np.ndarray) -> np.ndarray:
    """Relative beam strength ``(N,)`` of a low-beam headlight at ``light`` (map) towards ``points``.

    Gaussian in the horizontal and vertical angle off the beam axis (base_link x, aimed slightly
    down), so the road is lit from a few metres ahead and little light goes above the horizon.
    """
    local = (points - light) @ base_rotation  # base_link axes
    horizontal = np.degrees(np.arctan2(local[:, 1], local[:, 0]))
    vertical = np.degrees(np.arctan2(local[:, 2], np.hypot(local[:, 0], local[:, 1])))
    beam = np.exp(-0.5 * ((horizontal / _HEADLIGHT_SIGMA_DEG[0]) ** 2
                          + ((vertical - _HEADLIGHT_AIM_DEG) / _HEADLIGHT_SIGMA_DEG[1]) ** 2))
    return np.where(local[:, 0] > 0, beam, 0.0)


def _street_lamps(world: World, camera_origin: np.ndarray) -> np.ndarray:
    """Positions ``(L, 3)`` of the street lamps nearest the camera: lamp triangles clustered on a 2 m grid."""
    static = world.static
    lamp = static.materials == _LAMP
    if not np.any(lamp):
        return np.zeros((0, 3))
    centroids = static.vertices[static.triangles[lamp]].mean(axis=1).astype(np.float64)
    cells, inverse = np.unique(np.floor(centroids / 2.0).astype(np.int64), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    counts = np.bincount(inverse, minlength=len(cells))
    lamps = np.stack([np.bincount(inverse, centroids[:, i], len(cells)) for i in range(3)], axis=1)
    lamps = lamps / counts[:, None] - np.array([0.0, 0.0, 0.3])  # light leaves just below the lamp body
    distance = np.linalg.norm(lamps - camera_origin, axis=1)
    near = np.flatnonzero(distance < _STREET_LAMP_RANGE_M)
    return lamps[near[np.argsort(distance[near])[:_STREET_LAMP_MAX]]]


def render_camera(snapshot: Snapshot, world: World, rig: Rig, sensor: str, t: float, *,
                  lighting: Literal['day', 'night'] = 'day', pose_error: RigidTransform | None = None,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """The image ``(H, W, 3)`` uint8 RGB that camera ``sensor`` takes at time ``t``.

    Shading is albedo x (ambient + sun, with cast shadows) by day; by night a faint ambient, the
    ego's headlights, street lamps, and self-lit lamp materials. Distance haze blends towards the
    horizon colour; rays that hit nothing show a sky gradient. Colours are computed in linear RGB and
    written with a 2.2 display gamma. Without ``rng`` the image is noise-free and deterministic; with
    it, a little Gaussian sensor noise is added (more at night).
    """
    if lighting not in ('day', 'night'):
        raise ValueError(f'render_camera({sensor!r}): lighting {lighting!r} is not day or night')
    height, width = rig.camera.height, rig.camera.width
    rotation, origin = sensor_pose(world, rig, sensor, t, pose_error=pose_error)
    directions = _pixel_rays(rig, sensor) @ rotation.T  # (H*W, 3) unit, map frame
    hits = snapshot.cast(np.broadcast_to(origin, directions.shape), directions)
    hit = hits.actor != MISS

    colour = _sky(directions, lighting)  # (H*W, 3) linear RGB; surfaces overwrite below
    distance = hits.distance[hit].astype(np.float64)
    points = origin + directions[hit] * distance[:, None]
    normals = hits.normal[hit].astype(np.float64)
    facing = np.einsum('ni,ni->n', normals, directions[hit])
    normals *= np.where(facing > 0, -1.0, 1.0)[:, None]  # turn every normal towards the camera
    material = hits.material[hit]
    albedo = _ALBEDO[material].astype(np.float64)

    if lighting == 'day':
        sun = np.clip(normals @ _SUN_DIRECTION, 0.0, None)
        lit = np.flatnonzero(sun > 0)
        if len(lit):
            shadow = snapshot.cast(points[lit] + normals[lit] * _SHADOW_OFFSET_M,
                                   np.broadcast_to(_SUN_DIRECTION, (len(lit), 3)))
            sun[lit[shadow.actor != MISS]] = 0.0
        irradiance = _DAY_AMBIENT + _DAY_SUN * sun
        surface = albedo * irradiance[:, None]
        fog_metres = _DAY_FOG_M
    else:
        irradiance = np.full(len(points), _NIGHT_AMBIENT)
        base_rotation, base_origin = world.ego_pose(t)
        headlights = _HEADLIGHT_XYZ.copy()
        headlights[:, 0] = world.ego_size[0] / 2
        for light in headlights @ base_rotation.T + base_origin:
            irradiance += (_point_light(points, normals, light, _HEADLIGHT_INTENSITY)
                           * _headlight_beam(points, light, base_rotation))
        irradiance += _street_lamp_light(points, normals, _street_lamps(world, origin), origin)
        surface = albedo * np.minimum(irradiance, _NIGHT_IRRADIANCE_MAX)[:, None]
        emissive = _EMISSIVE[material]
        surface[emissive] = albedo[emissive] * _EMISSIVE_RADIANCE
        fog_metres = _NIGHT_FOG_M
    haze = (1.0 - np.exp(-distance / fog_metres))[:, None]
    horizon = _DAY_SKY_HORIZON if lighting == 'day' else _NIGHT_SKY_HORIZON
    colour[hit] = surface * (1 - haze) + horizon * haze

    display = np.clip(colour, 0.0, 1.0) ** (1 / 2.2)
    if rng is not None:
        display = display + rng.normal(0.0, _DAY_NOISE if lighting == 'day' else _NIGHT_NOISE, display.shape)
    image = np.round(np.clip(display, 0.0, 1.0) * 255).astype(np.uint8)
    return image.reshape(height, width, 3)


def project_to_camera(points_map: np.ndarray, world: World, rig: Rig, sensor: str, t: float, *,
                      pose_error: RigidTransform | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates ``uv (N, 2)`` and depth ``(N,)`` (optical z, metres) of map points.

    Points behind the camera (depth <= 0) get ``uv = NaN``. ``(round(u), round(v))`` is the pixel a
    point falls in, as ``render_camera`` draws it; whether it lies inside the image is the caller's test.
    """
    points = np.asarray(points_map, np.float64).reshape(-1, 3)
    rotation, origin = sensor_pose(world, rig, sensor, t, pose_error=pose_error)
    optical = (points - origin) @ rotation  # R^T (p - o), row-wise
    depth = optical[:, 2]
    k = rig.camera.intrinsics(sensor).k
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = (optical[:, :2] / depth[:, None]) * np.diag(k)[:2] + k[:2, 2]
    uv[depth <= 0] = np.nan
    return uv, depth


# ---------------------------------------------------------------------------------------------
# Lidar
# ---------------------------------------------------------------------------------------------

LIDAR_INTENSITY_MAX = 255.0  # intensity is reflectivity x |cos incidence| x falloff, scaled to 0-255 (nuScenes)
_LIDAR_FALLOFF_M = 100.0  # intensity halves at this range: 1 / (1 + (r / 100)^2)
_LIDAR_INTENSITY_NOISE = 0.05  # relative, 1 sigma


class LidarScan(NamedTuple):
    """One sweep and, per point, the actor it hit (-1, ``world.STATIC``, for static geometry and ground)."""

    cloud: PointCloud
    actor: np.ndarray  # (N,) int32 index into World.actors or STATIC


def lidar_directions(rig: Rig) -> tuple[np.ndarray, np.ndarray]:
    """Beam elevations ``(beams,)`` and firing azimuths ``(steps,)`` of one sweep, radians, lidar frame.

    Beams are evenly spaced, index 0 the lowest. The sweep starts looking backwards (azimuth pi) and
    turns clockwise seen from above (azimuth decreasing), so the front is scanned at mid-sweep.
    """
    model = rig.lidar
    elevation = np.radians(np.linspace(model.elevation_deg[0], model.elevation_deg[1], model.beams))
    azimuth = np.pi - 2 * np.pi * np.arange(model.azimuth_steps) / model.azimuth_steps
    return elevation, azimuth


def render_lidar(world: World, rig: Rig, sensor: str, t_start: float, rng: np.random.Generator, *,
                 sweep_s: float = 0.05, snapshot: Snapshot | None = None,
                 pose_error: RigidTransform | None = None) -> LidarScan:
    """One lidar sweep starting at ``t_start`` (the message stamp), lasting ``sweep_s``.

    Firing ``k`` happens at ``t_start + k * sweep_s / steps`` and casts from the ego pose at that time
    into ``snapshot`` (default: the world at mid-sweep). Each point is ``range x beam direction`` in
    the lidar frame at its own firing time, not motion-compensated. Returns beyond ``max_range`` or
    below ``min_range`` (after noise), misses and dropped returns give no point. Fields:
    ``intensity`` float32 in [0, 255], ``ring`` uint16 (0 = lowest beam), ``time`` float32 seconds
    since ``t_start``. The stamp is ``round(t_start * 1e9)`` and the frame id the sensor name; the
    caller restamps as needed.
    """
    if not sweep_s > 0:
        raise ValueError(f'render_lidar({sensor!r}): sweep_s must be positive, got {sweep_s}')
    model = rig.lidar
    beams, steps = model.beams, model.azimuth_steps
    if snapshot is None:
        snapshot = world.snapshot(t_start + sweep_s / 2)
    elevation, azimuth = lidar_directions(rig)
    # (steps, beams, 3) unit directions in the lidar frame
    local = np.stack([np.cos(elevation)[None, :] * np.cos(azimuth)[:, None],
                      np.cos(elevation)[None, :] * np.sin(azimuth)[:, None],
                      np.broadcast_to(np.sin(elevation)[None, :], (steps, beams))], axis=-1)
    firing_dt = np.arange(steps) * (sweep_s / steps)
    rotation, origin = sensor_pose(world, rig, sensor, t_start + firing_dt, pose_error=pose_error)
    directions = np.einsum('kij,kbj->kbi', rotation, local)  # (steps, beams, 3) in map
    origins = np.broadcast_to(origin[:, None, :], (steps, beams, 3))
    hits = snapshot.cast(origins.reshape(-1, 3), directions.reshape(-1, 3))

    # Noise for every ray, drawn whether it hits or not, so the draws do not depend on the scene.
    count = steps * beams
    range_noise = rng.normal(0.0, model.range_noise, count)
    intensity_noise = rng.normal(1.0, _LIDAR_INTENSITY_NOISE, count)
    kept = rng.random(count) >= model.dropout

    true_range = hits.distance.astype(np.float64)
    measured = true_range + range_noise
    keep = (hits.actor != MISS) & kept & (true_range <= model.max_range)
    keep &= (measured >= model.min_range) & (measured <= model.max_range)
    index = np.flatnonzero(keep)

    local = local.reshape(-1, 3)[index]
    cosine = np.abs(np.einsum('ni,ni->n', hits.normal[index].astype(np.float64),
                              directions.reshape(-1, 3)[index]))
    falloff = 1.0 / (1.0 + (true_range[index] / _LIDAR_FALLOFF_M) ** 2)
    intensity = LIDAR_INTENSITY_MAX * _REFLECTIVITY[hits.material[index]] * cosine * falloff
    intensity = np.clip(intensity * intensity_noise[index], 0.0, LIDAR_INTENSITY_MAX)
    firing, ring = np.divmod(index, beams)
    cloud = PointCloud(
        stamp_ns=int(round(t_start * 1e9)), frame_id=sensor,
        xyz=(local * measured[index, None]).astype(np.float32),
        fields={'intensity': intensity.astype(np.float32), 'ring': ring.astype(np.uint16),
                'time': firing_dt[firing].astype(np.float32)})
    return LidarScan(cloud, hits.actor[index].astype(np.int32))


# ---------------------------------------------------------------------------------------------
# Radar
# ---------------------------------------------------------------------------------------------

RADAR_SOURCE_FIELDS = ('doppler', 'rcs', 'vx', 'vy', 'vx_comp', 'vy_comp')
# Mean radar cross section (dBsm) by what was hit; each return adds Gaussian spread.
RADAR_RCS_DBSM = {'car': 10.0, 'truck': 20.0, 'bus': 20.0, 'pedestrian': -5.0, 'cyclist': 0.0,
                  'static': 5.0, 'clutter': -10.0}
_RCS_SIGMA_DB = 2.5
_CLUTTER_RCS_SIGMA_DB = 3.0
_RADAR_CELL_RANGE_M = 0.5  # resolution cell: one return per cell, the strongest ray in it
_RADAR_CELL_AZIMUTH_DEG = 2.0
_RADAR_STATIC_GRID_M = 2.0  # static structures: at most one return per grid square of the map
_RADAR_STATIC_MAX = 16  # strongest static returns kept per scan
_RADAR_GROUND_NORMAL_Z = 0.9  # hits on surfaces flatter than this (ground, roofs) give no return
_CLUTTER_MIN_RANGE_M = 1.0


class RadarScan(NamedTuple):
    """One radar scan and, per return, the actor it came from (-1 for static structures and clutter)."""

    points: RadarPoints
    actor: np.ndarray  # (N,) int32 index into World.actors, or -1


def _rank_within_groups(groups: np.ndarray, strength: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order (by group, strongest first) and each element's rank inside its group in that order."""
    if len(groups) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((-strength, groups))
    sorted_groups = groups[order]
    starts = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    return order, np.arange(len(order)) - first


def _strongest_per_cell(keys: list[np.ndarray], strength: np.ndarray) -> np.ndarray:
    """Indices of the strongest element of each distinct key tuple."""
    if len(strength) == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((-strength, *reversed(keys)))
    stacked = np.stack([k[order] for k in keys])
    first = np.r_[True, np.any(stacked[:, 1:] != stacked[:, :-1], axis=0)]
    return order[first]


def radar_directions(rig: Rig) -> np.ndarray:
    """Unit ray directions ``(elevation_rays * azimuth_rays, 3)`` of one scan in the radar frame."""
    model = rig.radar
    azimuth = np.radians(np.linspace(-model.hfov_deg / 2, model.hfov_deg / 2, model.azimuth_rays))
    elevation = (np.radians(np.linspace(-model.vfov_deg / 2, model.vfov_deg / 2, model.elevation_rays))
                 if model.elevation_rays > 1 else np.zeros(1))
    el, az = np.meshgrid(elevation, azimuth, indexing='ij')
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)


def render_radar(snapshot: Snapshot, world: World, rig: Rig, sensor: str, t: float,
                 rng: np.random.Generator, *, pose_error: RigidTransform | None = None) -> RadarScan:
    """One radar scan at time ``t`` against ``snapshot`` (which should be the world at ``t``).

    A fan of rays over the field of view finds surfaces within ``max_range``; hits on flat surfaces
    (ground, roofs) are ignored, static geometry counts only where it is metal or barrier. Hits are
    pooled into resolution cells (range x azimuth) keeping the strongest (most head-on) ray each;
    an actor is detected with ``detection_probability`` and then gives its ``returns_per_object``
    strongest cells; static structures give one return per 2 m map square, each detected with
    ``detection_probability``, the strongest few kept. Poisson clutter adds false returns with the
    doppler of static ground.

    Per return: range and azimuth noise; ``doppler`` = (target - sensor velocity) . line of sight +
    noise, where the sensor velocity includes the ego's yaw rate at the mount and the target velocity
    its own yaw rate at the hit point; ``velocity`` = doppler along the measured bearing;
    ``velocity_comp`` = (doppler + sensor velocity . line of sight) along the bearing, i.e. the
    target's ground radial velocity plus the same noise. ``rcs`` by class (``RADAR_RCS_DBSM``) with
    Gaussian spread. Stamp ``round(t * 1e9)``, frame id the sensor name.
    """
    model = rig.radar
    rotation, origin = sensor_pose(world, rig, sensor, t, pose_error=pose_error)
    local = radar_directions(rig)  # (R, 3) radar frame
    directions = local @ rotation.T
    hits = snapshot.cast(np.broadcast_to(origin, directions.shape), directions)
    distance = hits.distance.astype(np.float64)
    flat = np.abs(hits.normal[:, 2]) > _RADAR_GROUND_NORMAL_Z
    usable = (hits.actor != MISS) & (distance <= model.max_range) & ~flat & ~_GROUND[hits.material]
    usable &= (hits.actor >= 0) | _RADAR_STATIC[hits.material]
    rays = np.flatnonzero(usable)

    # Resolution cells: one return per (object, range bin, azimuth bin), the most head-on ray.
    strength = np.abs(np.einsum('ni,ni->n', hits.normal[rays].astype(np.float64), directions[rays]))
    points = origin + directions[rays] * distance[rays, None]
    actor = hits.actor[rays].astype(np.int64)
    static_square = np.floor(points[:, :2] / _RADAR_STATIC_GRID_M).astype(np.int64)
    range_bin = np.floor(distance[rays] / _RADAR_CELL_RANGE_M).astype(np.int64)
    azimuth_bin = np.floor(np.degrees(np.arctan2(local[rays, 1], local[rays, 0])) / _RADAR_CELL_AZIMUTH_DEG)
    is_static = actor < 0
    # Static hits pool by map square instead of by cell: one return per square.
    range_bin = np.where(is_static, static_square[:, 0], range_bin)
    azimuth_bin = np.where(is_static, static_square[:, 1], azimuth_bin.astype(np.int64))
    cells = _strongest_per_cell([is_static.astype(np.int64), actor, range_bin, azimuth_bin], strength)
    rays, strength, points, actor = rays[cells], strength[cells], points[cells], actor[cells]

    # Detection: whole actors by detection_probability (one draw per actor in the world, so draws do
    # not depend on what is in view); static squares one by one; then the strongest few per group.
    actor_detected = rng.random(max(len(world.actors), 1)) < model.detection_probability
    static_detected = rng.random(len(rays)) < model.detection_probability
    detected = np.where(actor >= 0, actor_detected[np.maximum(actor, 0)], static_detected)
    rays, strength, points, actor = rays[detected], strength[detected], points[detected], actor[detected]
    order, rank = _rank_within_groups(actor, strength)
    limit = np.where(actor[order] >= 0, model.returns_per_object, _RADAR_STATIC_MAX)
    chosen = np.sort(order[rank < limit])
    rays, points, actor = rays[chosen], points[chosen], actor[chosen]

    # Clutter: false returns anywhere in the field of view, behaving like static ground.
    clutter = int(rng.poisson(model.clutter_per_scan))
    clutter_azimuth = np.radians(rng.uniform(-model.hfov_deg / 2, model.hfov_deg / 2, clutter))
    clutter_range = rng.uniform(min(_CLUTTER_MIN_RANGE_M, model.max_range / 2), model.max_range, clutter)
    clutter_local = np.stack([np.cos(clutter_azimuth), np.sin(clutter_azimuth), np.zeros(clutter)], axis=1)

    # Geometry in the radar frame: true bearing and horizontal range of every return.
    line_local = np.concatenate([local[rays], clutter_local])  # (N, 3) unit, radar frame
    horizontal = np.linalg.norm(line_local[:, :2], axis=1)
    true_range = np.concatenate([distance[rays] * horizontal[:len(rays)], clutter_range])
    bearing = np.arctan2(line_local[:, 1], line_local[:, 0])
    n = len(line_local)

    # Velocities in map: targets (actors move and turn; static and clutter stand still) and sensor.
    target_velocity = np.zeros((n, 3))
    for index in np.unique(actor[actor >= 0]):
        trajectory = world.actors[index].trajectory
        centre, _ = trajectory.pose(t)
        velocity, omega = trajectory.velocity(t), float(trajectory.yaw_rate(t))
        mine = np.flatnonzero(actor == index)
        lever = points[mine, :2] - centre
        target_velocity[mine, 0] = velocity[0] - omega * lever[:, 1]
        target_velocity[mine, 1] = velocity[1] + omega * lever[:, 0]
    line_map = line_local @ rotation.T
    sensor_radial = line_map @ _sensor_velocity(world, origin, t)
    target_radial = np.einsum('ni,ni->n', target_velocity, line_map)

    range_noise = rng.normal(0.0, model.range_noise, n)
    bearing_noise = rng.normal(0.0, np.radians(model.azimuth_noise_deg), n)
    doppler_noise = rng.normal(0.0, model.doppler_noise, n)
    actor_rcs = np.array([RADAR_RCS_DBSM[a.label] for a in world.actors] + [RADAR_RCS_DBSM['static']])
    class_rcs = np.r_[actor_rcs[np.where(actor >= 0, actor, -1)], np.full(clutter, RADAR_RCS_DBSM['clutter'])]
    rcs_sigma = np.r_[np.full(len(actor), _RCS_SIGMA_DB), np.full(clutter, _CLUTTER_RCS_SIGMA_DB)]
    rcs = class_rcs + rng.normal(0.0, 1.0, n) * rcs_sigma

    half_fov = np.radians(model.hfov_deg / 2)
    measured_bearing = np.clip(bearing + bearing_noise, -half_fov, half_fov)
    measured_range = np.maximum(true_range + range_noise, 0.1)
    along = np.stack([np.cos(measured_bearing), np.sin(measured_bearing)], axis=1)
    doppler = target_radial - sensor_radial + doppler_noise
    compensated = doppler + sensor_radial
    xyz = np.concatenate([along * measured_range[:, None], np.zeros((n, 1))], axis=1)
    radar = RadarPoints(
        stamp_ns=int(round(t * 1e9)), frame_id=sensor, xyz=xyz.astype(np.float32),
        doppler=doppler.astype(np.float32), rcs=rcs.astype(np.float32),
        velocity=(along * doppler[:, None]).astype(np.float32),
        velocity_comp=(along * compensated[:, None]).astype(np.float32),
        source_fields=RADAR_SOURCE_FIELDS)
    actor_per_return = np.concatenate([np.where(actor >= 0, actor, -1), np.full(clutter, -1)]).astype(np.int32)
    return RadarScan(radar, actor_per_return)
