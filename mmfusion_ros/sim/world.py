"""The simulated world: meshes with materials, moving actors, the ego path, and ray casting into it.

Every sensor sees the same world through ``Snapshot.cast``: one open3d ``RaycastingScene`` holding the
static geometry and every actor placed at one instant. Sensors that take time to scan (the lidar)
cast from the ego pose at each ray's own time against a snapshot taken in the middle of the scan.

Frames: the world frame is ``map`` (z up, ground at z = 0). Actor meshes are built in the actor's own
frame (x forward, y left, z up, origin at the centre of the box's bottom face) and placed by their
trajectory. Time inside the simulator is float seconds from the scene start; bags get integer
nanoseconds (``start_ns + round(t * 1e9)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import open3d as o3d

__all__ = [
    'CLASSES',
    'MATERIALS',
    'Actor',
    'Hits',
    'Material',
    'Mesh',
    'Snapshot',
    'Trajectory',
    'World',
    'material_id',
]

CLASSES = ('car', 'truck', 'bus', 'pedestrian', 'cyclist')
MISS = -2  # Hits.actor for a ray that hit nothing
STATIC = -1  # Hits.actor for a ray that hit static geometry


@dataclass(frozen=True)
class Material:
    """How a surface looks to each sensor."""

    name: str
    albedo: tuple[float, float, float]  # camera colour, linear RGB in [0, 1]
    reflectivity: float  # lidar intensity at normal incidence, [0, 1]
    emissive: bool = False  # lamps: lit whatever the light (night scenes)


# Material ids are indices into this table; meshes store one id per triangle.
MATERIALS: tuple[Material, ...] = (
    Material('asphalt', (0.22, 0.22, 0.23), 0.10),
    Material('lane_marking', (0.92, 0.92, 0.88), 0.65),
    Material('sidewalk', (0.55, 0.54, 0.50), 0.25),
    Material('grass', (0.20, 0.42, 0.15), 0.30),
    Material('building', (0.62, 0.52, 0.43), 0.35),
    Material('window', (0.25, 0.35, 0.45), 0.05),
    Material('metal', (0.55, 0.57, 0.60), 0.55),
    Material('barrier', (0.85, 0.45, 0.10), 0.50),
    Material('tire', (0.05, 0.05, 0.05), 0.05),
    Material('glass', (0.15, 0.20, 0.25), 0.05),
    Material('lamp', (1.00, 0.95, 0.70), 0.80, emissive=True),
    Material('paint_red', (0.70, 0.08, 0.08), 0.45),
    Material('paint_blue', (0.10, 0.20, 0.65), 0.45),
    Material('paint_white', (0.85, 0.85, 0.85), 0.50),
    Material('paint_black', (0.08, 0.08, 0.09), 0.35),
    Material('paint_silver', (0.60, 0.62, 0.64), 0.50),
    Material('paint_yellow', (0.85, 0.70, 0.10), 0.50),
    Material('paint_green', (0.10, 0.45, 0.20), 0.45),
    Material('cloth_dark', (0.15, 0.15, 0.22), 0.20),
    Material('cloth_bright', (0.80, 0.30, 0.20), 0.30),
    Material('skin', (0.80, 0.60, 0.48), 0.30),
    Material('concrete', (0.63, 0.62, 0.58), 0.40),
    Material('tail_light', (0.85, 0.06, 0.04), 0.60, emissive=True),
    Material('paint_orange', (0.88, 0.42, 0.08), 0.50),
    Material('paint_teal', (0.05, 0.45, 0.48), 0.45),
    Material('cloth_blue', (0.16, 0.26, 0.52), 0.25),
)
_MATERIAL_IDS = {m.name: i for i, m in enumerate(MATERIALS)}


def material_id(name: str) -> int:
    try:
        return _MATERIAL_IDS[name]
    except KeyError:
        raise KeyError(f'unknown material {name!r}; known: {", ".join(_MATERIAL_IDS)}') from None


@dataclass(frozen=True, eq=False)
class Mesh:
    """Triangles with one material per triangle."""

    vertices: np.ndarray  # (V, 3) float32
    triangles: np.ndarray  # (T, 3) int32 indices into vertices
    materials: np.ndarray  # (T,) int32 indices into MATERIALS

    def __post_init__(self) -> None:
        vertices = np.ascontiguousarray(self.vertices, np.float32)
        triangles = np.ascontiguousarray(self.triangles, np.int32)
        materials = np.ascontiguousarray(self.materials, np.int32)
        assert vertices.ndim == 2 and vertices.shape[1] == 3, f'vertices {vertices.shape}'
        assert triangles.ndim == 2 and triangles.shape[1] == 3, f'triangles {triangles.shape}'
        assert materials.shape == (len(triangles),), f'{len(triangles)} triangles, {materials.shape} materials'
        assert len(triangles) == 0 or (triangles.min() >= 0 and triangles.max() < len(vertices))
        object.__setattr__(self, 'vertices', vertices)
        object.__setattr__(self, 'triangles', triangles)
        object.__setattr__(self, 'materials', materials)

    @staticmethod
    def merge(meshes: list[Mesh]) -> Mesh:
        if not meshes:
            return Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        return Mesh(np.concatenate([m.vertices for m in meshes]),
                    np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]),
                    np.concatenate([m.materials for m in meshes]))

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> Mesh:
        """The mesh moved rigidly: ``v' = rotation @ v + translation``."""
        vertices = self.vertices.astype(np.float64) @ np.asarray(rotation).T + translation
        return Mesh(vertices, self.triangles, self.materials)


def _yaw_rotation(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class Trajectory:
    """A planar path sampled densely in time: position by linear interpolation, heading unwrapped.

    Knots should be dense (10 Hz or more) so that turns are smooth; velocity is the finite
    difference of the segment a time falls in, so it is exactly consistent with the positions.
    Before the first and after the last knot an actor stands still at the end point.
    """

    times: np.ndarray  # (K,) float64 seconds, strictly increasing
    xy: np.ndarray  # (K, 2) float64 metres in map
    yaw: np.ndarray  # (K,) float64 radians, unwrapped (no jumps of 2 pi)

    def __post_init__(self) -> None:
        times = np.asarray(self.times, np.float64)
        xy = np.asarray(self.xy, np.float64)
        yaw = np.unwrap(np.asarray(self.yaw, np.float64))
        assert times.ndim == 1 and len(times) >= 2 and np.all(np.diff(times) > 0), 'times must increase'
        assert xy.shape == (len(times), 2) and yaw.shape == times.shape
        object.__setattr__(self, 'times', times)
        object.__setattr__(self, 'xy', xy)
        object.__setattr__(self, 'yaw', yaw)

    def pose(self, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position ``(..., 2)`` and heading ``(...)`` at time(s) ``t``."""
        t = np.clip(np.asarray(t, np.float64), self.times[0], self.times[-1])
        x = np.interp(t, self.times, self.xy[:, 0])
        y = np.interp(t, self.times, self.xy[:, 1])
        return np.stack([x, y], axis=-1), np.interp(t, self.times, self.yaw)

    def velocity(self, t: float | np.ndarray) -> np.ndarray:
        """Velocity ``(..., 2)`` in map at time(s) ``t`` (zero outside the knots)."""
        t = np.asarray(t, np.float64)
        segment = np.clip(np.searchsorted(self.times, t, side='right') - 1, 0, len(self.times) - 2)
        dt = self.times[segment + 1] - self.times[segment]
        v = (self.xy[segment + 1] - self.xy[segment]) / dt[..., None]
        inside = (t >= self.times[0]) & (t <= self.times[-1])
        return np.where(inside[..., None], v, 0.0)

    def yaw_rate(self, t: float | np.ndarray) -> np.ndarray:
        t = np.asarray(t, np.float64)
        segment = np.clip(np.searchsorted(self.times, t, side='right') - 1, 0, len(self.times) - 2)
        rate = (self.yaw[segment + 1] - self.yaw[segment]) / (self.times[segment + 1] - self.times[segment])
        return np.where((t >= self.times[0]) & (t <= self.times[-1]), rate, 0.0)


@dataclass(frozen=True, eq=False)
class Actor:
    """A moving object of one class: its mesh in its own frame and where it goes."""

    track_id: int
    label: str  # one of CLASSES
    size: np.ndarray  # (3,) length, width, height of its box, metres
    mesh: Mesh  # in the actor frame, inside the box, origin at the centre of the bottom face
    trajectory: Trajectory

    def __post_init__(self) -> None:
        assert self.label in CLASSES, f'unknown class {self.label!r}'
        object.__setattr__(self, 'size', np.asarray(self.size, np.float64))

    def box_at(self, t: float) -> tuple[np.ndarray, float, np.ndarray]:
        """Box centre ``(3,)`` in map, yaw, and velocity ``(2,)`` in map at time ``t``."""
        xy, yaw = self.trajectory.pose(t)
        centre = np.array([xy[0], xy[1], self.size[2] / 2])
        return centre, float(yaw), self.trajectory.velocity(t)

    def mesh_at(self, t: float) -> Mesh:
        xy, yaw = self.trajectory.pose(t)
        return self.mesh.transformed(_yaw_rotation(float(yaw)), np.array([xy[0], xy[1], 0.0]))


class Hits(NamedTuple):
    """What each ray hit. Misses have ``distance = inf``, ``actor = MISS``, ``material = -1``."""

    distance: np.ndarray  # (N,) float32 along the (unit) ray direction
    actor: np.ndarray  # (N,) int32 index into World.actors, STATIC or MISS
    material: np.ndarray  # (N,) int32 index into MATERIALS, -1 for a miss
    normal: np.ndarray  # (N, 3) float32 surface normal (world frame), zero for a miss


class Snapshot:
    """The world frozen at one instant, ready for ray casting."""

    def __init__(self, world: World, t: float) -> None:
        self.t = t
        self.scene = o3d.t.geometry.RaycastingScene()
        self._actor_of_geometry: list[int] = []
        self._materials_of_geometry: list[np.ndarray] = []
        for index, mesh in [(STATIC, world.static)] + [(i, a.mesh_at(t)) for i, a in enumerate(world.actors)]:
            if len(mesh.triangles) == 0:
                continue
            tmesh = o3d.t.geometry.TriangleMesh()
            tmesh.vertex.positions = o3d.core.Tensor(mesh.vertices)
            tmesh.triangle.indices = o3d.core.Tensor(mesh.triangles)
            geometry_id = self.scene.add_triangles(tmesh)
            assert geometry_id == len(self._actor_of_geometry)
            self._actor_of_geometry.append(index)
            self._materials_of_geometry.append(mesh.materials)
        self._actor_lookup = np.array(self._actor_of_geometry + [MISS], np.int32)
        offsets = np.cumsum([0] + [len(m) for m in self._materials_of_geometry])
        self._material_offsets = offsets[:-1]
        self._materials = np.concatenate(self._materials_of_geometry + [np.array([-1], np.int32)])

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> Hits:
        """Cast ``(N, 3)`` rays (directions need not be unit; distances are along unit directions)."""
        origins = np.asarray(origins, np.float32).reshape(-1, 3)
        directions = np.asarray(directions, np.float32).reshape(-1, 3)
        norms = np.linalg.norm(directions, axis=1, keepdims=True)
        unit = directions / np.maximum(norms, 1e-12)
        rays = o3d.core.Tensor(np.ascontiguousarray(np.concatenate([origins, unit], axis=1)))
        result = self.scene.cast_rays(rays)
        distance = result['t_hit'].numpy()
        geometry = result['geometry_ids'].numpy().astype(np.int64)
        primitive = result['primitive_ids'].numpy().astype(np.int64)
        hit = np.isfinite(distance)
        geometry = np.where(hit, geometry, len(self._actor_of_geometry))
        actor = self._actor_lookup[geometry]
        material = np.full(len(distance), -1, np.int32)
        material[hit] = self._materials[self._material_offsets[geometry[hit]] + primitive[hit]]
        normal = np.where(hit[:, None], result['primitive_normals'].numpy(), 0.0).astype(np.float32)
        return Hits(distance.astype(np.float32), actor, material, normal)


@dataclass(frozen=True, eq=False)
class World:
    """Everything the sensors can see, generated from a scenario and a seed."""

    seed: int
    static: Mesh  # in map
    actors: tuple[Actor, ...]
    ego: Trajectory  # base_link's path: base_link sits on the ground under the ego's box centre
    ego_size: np.ndarray = field(default_factory=lambda: np.array([4.6, 1.9, 1.7]))
    duration_s: float = 20.0

    def snapshot(self, t: float) -> Snapshot:
        return Snapshot(self, t)

    def ego_pose(self, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rotation (..., 3, 3), translation (..., 3))`` of base_link in map at time(s) t."""
        xy, yaw = self.ego.pose(t)
        c, s = np.cos(yaw), np.sin(yaw)
        zero, one = np.zeros_like(c), np.ones_like(c)
        rotation = np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1),
                             np.stack([zero, zero, one], -1)], -2)
        translation = np.concatenate([xy, np.zeros_like(xy[..., :1])], axis=-1)
        return rotation, translation
