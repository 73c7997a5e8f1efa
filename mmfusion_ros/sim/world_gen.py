"""Procedural worlds for the built-in simulator: streets, buildings, traffic and the ego's drive.

``generate_world(scenario, seed)`` turns a scenario into a ``World`` in four stages:

1. the layout: a grid of signalled street crossings (``urban``, and ``intersection`` as a single
   larger crossing) or a straight six-lane highway;
2. the ego's drive along one lane of it (``intersection``: a left or right turn through the crossing);
3. the static scene around that drive: ground at least ``GROUND_MARGIN`` metres beyond the route,
   lane markings, crosswalks, buildings with window bands, poles, traffic lights, parked cars;
4. traffic near the drive. Every actor follows a lane, bike lane or sidewalk with a speed profile
   (slower in curves, stopping at red lights, pedestrians waiting at the kerb), and a placement is
   kept only if its box, slightly inflated, never overlaps the ego's or an earlier actor's at any
   knot time. Placements start from an encounter: a random point of the path near where the ego is
   at a random time, so most actors pass within sensor range.

All randomness comes from ``np.random.default_rng(seed)``. Each stage and each actor class draws
from its own child generator and each actor from its own grandchild, so adding an actor at the end
of a class leaves the actors placed before it unchanged.

The ground is flat (z = 0, markings at z = 0.01): ``World`` stands every actor at z = 0, so raised
sidewalks would bury pedestrians' feet. Traffic is right-hand.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple, Sequence, Union

import numpy as np

from .scenario import Scenario
from .world import CLASSES, Actor, Mesh, Trajectory, World, material_id

__all__ = [
    'EGO_SIZE',
    'GROUND_MARGIN',
    'KNOT_RATE_HZ',
    'actor_mesh',
    'box_mesh',
    'boxes_mesh',
    'cylinder_mesh',
    'flat_rects_mesh',
    'generate_world',
    'hexahedron_mesh',
    'sample_actor_size',
    'wall_quads_mesh',
]

_log = logging.getLogger(__name__)

KNOT_RATE_HZ = 20.0  # trajectory knots per second, ego and actors
LEAD_S = 1.0  # trajectories start this long before 0 and end this long after the duration
GROUND_MARGIN = 130.0  # metres of ground beyond the ego's route on every side
EGO_SIZE = (4.6, 1.9, 1.7)

ENCOUNTER_RADIUS = 40.0  # an actor's path passes this close to the ego at its encounter time
PLACEMENT_ATTEMPTS = 120  # per actor; the encounter radius widens after every 30 failures
STANDING_EVERY = 4  # the 1st, 5th, 9th ... pedestrian stands still the whole time; the others walk

MaterialSpec = Union[str, Sequence[str]]

# ----------------------------------------------------------------------------------------------
# Mesh primitives. Triangles wind counter-clockwise seen from outside, so normals point outwards.
# ----------------------------------------------------------------------------------------------

# Corners of a hexahedron: bottom (-x-y, +x-y, +x+y, -x+y), then top in the same order.
_UNIT_CORNERS = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
                          [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], np.float64) / 2
# Faces bottom, top, -y, +x, +y, -x; two triangles each.
_HEX_TRIANGLES = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                           [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]], np.int32)


def _face_materials(material: MaterialSpec) -> np.ndarray:
    """Six face material ids (bottom, top, -y, +x, +y, -x) from one name or six."""
    names = [material] * 6 if isinstance(material, str) else list(material)
    assert len(names) == 6, f'a hexahedron needs 1 or 6 materials, got {len(names)}'
    return np.array([material_id(n) for n in names], np.int32)


def hexahedron_mesh(corners: np.ndarray, material: MaterialSpec) -> Mesh:
    """A solid with six quadrilateral faces from its 8 corners (order of ``_UNIT_CORNERS``)."""
    corners = np.asarray(corners, np.float64)
    assert corners.shape == (8, 3), f'corners {corners.shape}'
    return Mesh(corners, _HEX_TRIANGLES, np.repeat(_face_materials(material), 2))


def boxes_mesh(lo: np.ndarray, hi: np.ndarray, material: MaterialSpec) -> Mesh:
    """Axis-aligned boxes from their min and max corners ``(K, 3)``, all of one material."""
    lo, hi = np.atleast_2d(lo).astype(np.float64), np.atleast_2d(hi).astype(np.float64)
    K = len(lo)
    vertices = (lo + hi)[:, None] / 2 + (hi - lo)[:, None] * _UNIT_CORNERS[None]  # (K, 8, 3)
    triangles = _HEX_TRIANGLES[None] + 8 * np.arange(K, dtype=np.int32)[:, None, None]  # (K, 12, 3)
    materials = np.tile(np.repeat(_face_materials(material), 2), K)
    return Mesh(vertices.reshape(-1, 3), triangles.reshape(-1, 3), materials)


def box_mesh(size: Sequence[float], centre: Sequence[float], material: MaterialSpec) -> Mesh:
    """An axis-aligned box of ``size`` (x, y, z extents) around ``centre``."""
    size, centre = np.asarray(size, np.float64), np.asarray(centre, np.float64)
    return hexahedron_mesh(centre + size * _UNIT_CORNERS, material)


def _span(lo: Sequence[float], hi: Sequence[float], material: MaterialSpec) -> Mesh:
    """The box between two opposite corners."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return box_mesh(hi - lo, (lo + hi) / 2, material)


def _frustum(bottom: Sequence[float], top: Sequence[float], z0: float, z1: float,
             material: MaterialSpec) -> Mesh:
    """A solid between two horizontal rectangles ``(x0, x1, y0, y1)`` at heights z0 and z1."""
    (bx0, bx1, by0, by1), (tx0, tx1, ty0, ty1) = bottom, top
    corners = [[bx0, by0, z0], [bx1, by0, z0], [bx1, by1, z0], [bx0, by1, z0],
               [tx0, ty0, z1], [tx1, ty0, z1], [tx1, ty1, z1], [tx0, ty1, z1]]
    return hexahedron_mesh(np.array(corners), material)


@functools.lru_cache(maxsize=16)
def _unit_cylinder(sides: int) -> tuple[np.ndarray, np.ndarray]:
    """Radius 1, from z = -1/2 to 1/2: ring vertices bottom then top, then the two cap centres."""
    angle = 2 * np.pi * np.arange(sides) / sides
    ring = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    vertices = np.concatenate([np.c_[ring, np.full(sides, -0.5)], np.c_[ring, np.full(sides, 0.5)],
                               [[0.0, 0.0, -0.5], [0.0, 0.0, 0.5]]])
    i = np.arange(sides)
    j = (i + 1) % sides
    bottom_centre, top_centre = 2 * sides, 2 * sides + 1
    triangles = np.concatenate([
        np.stack([i, j, sides + j], 1), np.stack([i, sides + j, sides + i], 1),  # side
        np.stack([np.full(sides, top_centre), sides + i, sides + j], 1),  # top cap
        np.stack([np.full(sides, bottom_centre), j, i], 1),  # bottom cap
    ])
    return vertices, triangles.astype(np.int32)


# Proper rotations taking the unit cylinder's z axis onto each axis (so winding is preserved).
_AXIS_ROTATIONS = {
    'x': np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
    'y': np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    'z': np.eye(3),
}


def cylinder_mesh(radius: float, length: float, centre: Sequence[float], axis: Literal['x', 'y', 'z'],
                  material: str, sides: int = 8) -> Mesh:
    """A closed prism with ``sides`` faces inscribed in the cylinder (it stays inside its bounds)."""
    vertices, triangles = _unit_cylinder(sides)
    vertices = vertices * np.array([radius, radius, length])
    vertices = vertices @ _AXIS_ROTATIONS[axis].T + np.asarray(centre, np.float64)
    return Mesh(vertices, triangles, np.full(len(triangles), material_id(material)))


def flat_rects_mesh(rects: np.ndarray, z: float, materials: np.ndarray | str) -> Mesh:
    """Horizontal rectangles ``(K, 4)`` as ``x0, x1, y0, y1`` at height z, facing up."""
    rects = np.asarray(rects, np.float64).reshape(-1, 4)
    K = len(rects)
    x0, x1, y0, y1 = rects.T
    vertices = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1),
                         np.stack([x0, y1], 1)], 1)  # (K, 4, 2)
    vertices = np.concatenate([vertices, np.full((K, 4, 1), z)], axis=2).reshape(-1, 3)
    quad = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    triangles = (quad[None] + 4 * np.arange(K, dtype=np.int32)[:, None, None]).reshape(-1, 3)
    ids = (np.full(K, material_id(materials)) if isinstance(materials, str)
           else np.asarray(materials, np.int32))
    return Mesh(vertices, triangles, np.repeat(ids, 2))


def wall_quads_mesh(p0: np.ndarray, p1: np.ndarray, z0: np.ndarray, z1: np.ndarray, material: str) -> Mesh:
    """Vertical rectangles from ground points ``p0`` to ``p1`` ``(K, 2)``, between heights z0 and z1.

    Each faces to the right of the direction p0 -> p1 (walk a footprint counter-clockwise seen from
    above and the quads face outwards).
    """
    p0, p1 = np.atleast_2d(p0).astype(np.float64), np.atleast_2d(p1).astype(np.float64)
    K = len(p0)
    z0, z1 = np.broadcast_to(z0, (K,)), np.broadcast_to(z1, (K,))
    vertices = np.stack([np.c_[p0, z0], np.c_[p1, z0], np.c_[p1, z1], np.c_[p0, z1]], 1).reshape(-1, 3)
    quad = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    triangles = (quad[None] + 4 * np.arange(K, dtype=np.int32)[:, None, None]).reshape(-1, 3)
    return Mesh(vertices, triangles, np.full(2 * K, material_id(material)))


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _placed(mesh: Mesh, xy: Sequence[float], yaw: float) -> Mesh:
    return mesh.transformed(_yaw_matrix(yaw), np.array([xy[0], xy[1], 0.0]))


# ----------------------------------------------------------------------------------------------
# Actors: sizes and meshes, built in the actor frame (x forward, origin at the bottom-face centre)
# and kept inside the (length, width, height) box.
# ----------------------------------------------------------------------------------------------

_SIZE_RANGES = {  # (low, high) of length, width, height in metres
    'car': ((4.2, 1.80, 1.45), (4.9, 2.00, 1.75)),
    'truck': ((8.0, 2.45, 3.0), (10.0, 2.55, 3.4)),
    'bus': ((11.5, 2.55, 3.1), (12.5, 2.60, 3.3)),
    'pedestrian': ((0.45, 0.50, 1.55), (0.65, 0.70, 1.90)),
    'cyclist': ((1.70, 0.55, 1.60), (1.90, 0.70, 1.85)),
}
_PAINTS = ('paint_red', 'paint_blue', 'paint_white', 'paint_black', 'paint_silver', 'paint_yellow',
           'paint_green', 'paint_orange', 'paint_teal')
_CARGO_PAINTS = ('paint_white', 'paint_silver', 'paint_white', 'paint_blue', 'paint_red')
_BUS_PAINTS = ('paint_yellow', 'paint_blue', 'paint_red', 'paint_white', 'paint_green', 'paint_orange',
               'paint_teal')
_TOPS = ('cloth_bright', 'cloth_dark', 'cloth_blue', 'paint_white', 'paint_green', 'paint_yellow')
_TROUSERS = ('cloth_dark', 'cloth_blue', 'paint_black')
_FRAMES = ('metal', 'paint_red', 'paint_blue', 'paint_black')


def sample_actor_size(label: str, rng: np.random.Generator) -> np.ndarray:
    """Length, width and height of one actor of a class, uniform within the class's range."""
    low, high = _SIZE_RANGES[label]
    return rng.uniform(low, high)


def _lights(L: float, W: float, z: float, inset: float) -> list[Mesh]:
    """Two headlights at the front face and two tail lights at the rear, inside the box."""
    parts = []
    for side in (-1, 1):
        y = side * (W / 2 - inset)
        parts.append(_span((L / 2 - 0.05, y - 0.14, z - 0.07), (L / 2, y + 0.14, z + 0.07), 'lamp'))
        parts.append(_span((-L / 2, y - 0.14, z - 0.07), (-L / 2 + 0.05, y + 0.14, z + 0.07), 'tail_light'))
    return parts


def _wheels(xs: Sequence[float], W: float, radius: float, width: float) -> list[Mesh]:
    return [cylinder_mesh(radius, width, (x, side * (W / 2 - width / 2), radius), 'y', 'tire')
            for x in xs for side in (-1, 1)]


def _car_mesh(size: np.ndarray, paint: str) -> Mesh:
    """Lower body, a glass cabin narrowing to a painted roof, four wheels, lights."""
    L, W, H = size
    wheel = 0.2 * H
    belt = 0.6 * H  # top of the lower body
    parts = [
        _span((-L / 2, -W / 2 + 0.04, 0.25), (L / 2, W / 2 - 0.04, belt), paint),
        _frustum((-0.38 * L, 0.22 * L, -W / 2 + 0.1, W / 2 - 0.1),
                 (-0.3 * L, 0.05 * L, -W / 2 + 0.22, W / 2 - 0.22),
                 belt, H, ('glass', paint, 'glass', 'glass', 'glass', 'glass')),
        *_wheels((0.3 * L, -0.3 * L), W, wheel, 0.22),
        *_lights(L, W, belt - 0.14, 0.3),
    ]
    return Mesh.merge(parts)


def _truck_mesh(size: np.ndarray, cab_paint: str, cargo_paint: str) -> Mesh:
    """Cab with windscreen, cargo box on a chassis, three axles, lights."""
    L, W, H = size
    cab = 2.3
    parts = [
        _span((-L / 2 + 0.1, -W / 2 + 0.35, 0.55), (L / 2 - 0.3, W / 2 - 0.35, 0.9), 'metal'),
        _span((L / 2 - cab, -W / 2 + 0.05, 0.55), (L / 2, W / 2 - 0.05, 0.82 * H), cab_paint),
        _span((L / 2 - 0.04, -W / 2 + 0.2, 0.55 * H), (L / 2, W / 2 - 0.2, 0.78 * H), 'glass'),
        _span((-L / 2, -W / 2, 0.9), (L / 2 - cab - 0.15, W / 2, H), cargo_paint),
        *_wheels((L / 2 - 1.3, -L / 2 + 1.4, -L / 2 + 2.5), W, 0.5, 0.3),
        *_lights(L, W, 0.75, 0.35),
    ]
    return Mesh.merge(parts)


def _bus_mesh(size: np.ndarray, paint: str) -> Mesh:
    """A long body with a glass band along both sides, windscreen and rear window, wheels, lights."""
    L, W, H = size
    x0, x1, y = -L / 2 + 0.6, L / 2 - 0.4, W / 2 - 0.01
    band = (0.55 * H, 0.85 * H)
    windows = wall_quads_mesh(
        np.array([[x0, -y], [x1, y], [L / 2 - 0.01, -W / 2 + 0.2], [-L / 2 + 0.01, W / 2 - 0.3]]),
        np.array([[x1, -y], [x0, y], [L / 2 - 0.01, W / 2 - 0.2], [-L / 2 + 0.01, -W / 2 + 0.3]]),
        np.array([band[0], band[0], 0.35 * H, 0.6 * H]), np.array([band[1], band[1], 0.88 * H, band[1]]),
        'glass')
    parts = [
        _span((-L / 2, -W / 2 + 0.04, 0.32), (L / 2, W / 2 - 0.04, H), paint),
        windows,
        *_wheels((L / 2 - 2.6, -L / 2 + 3.0), W, 0.5, 0.3),
        *_lights(L, W, 0.7, 0.35),
    ]
    return Mesh.merge(parts)


def _pedestrian_mesh(size: np.ndarray, top: str, trousers: str) -> Mesh:
    """Two legs mid-stride, torso, arms, neck and head."""
    L, W, H = size
    parts = [
        box_mesh((0.44 * L, 0.24 * W, 0.47 * H), (0.28 * L, -0.15 * W, 0.235 * H), trousers),
        box_mesh((0.44 * L, 0.24 * W, 0.47 * H), (-0.28 * L, 0.15 * W, 0.235 * H), trousers),
        box_mesh((0.5 * L, 0.56 * W, 0.33 * H), (0.0, 0.0, 0.635 * H), top),
        box_mesh((0.3 * L, 0.16 * W, 0.30 * H), (0.0, -0.37 * W, 0.64 * H), top),
        box_mesh((0.3 * L, 0.16 * W, 0.30 * H), (0.0, 0.37 * W, 0.64 * H), top),
        box_mesh((0.2 * L, 0.14 * W, 0.04 * H), (0.0, 0.0, 0.82 * H), 'skin'),
        box_mesh((0.42 * L, 0.30 * W, 0.16 * H), (0.02 * L, 0.0, 0.92 * H), 'skin'),
    ]
    return Mesh.merge(parts)


def _cyclist_mesh(size: np.ndarray, top: str, frame: str) -> Mesh:
    """A bicycle (two thin wheels, tubes, handlebar) and a rider leaning forward."""
    L, W, H = size
    sx, sz = L / 1.8, H / 1.7
    wheel = 0.33 * sx
    front, rear = L / 2 - wheel - 0.01, -(L / 2 - wheel - 0.01)
    parts = [
        cylinder_mesh(wheel, 0.05, (front, 0.0, wheel), 'y', 'tire', sides=10),
        cylinder_mesh(wheel, 0.05, (rear, 0.0, wheel), 'y', 'tire', sides=10),
        _span((rear, -0.03, wheel - 0.03), (0.05 * sx, 0.03, wheel + 0.03), frame),  # chain stay
        _span((-0.25 * sx, -0.03, 0.62 * sz), (front - 0.06, 0.03, 0.67 * sz), frame),  # top tube
        _span((-0.27 * sx, -0.03, wheel), (-0.21 * sx, 0.03, 0.88 * sz), frame),  # seat post
        _span((front - 0.03, -0.03, wheel), (front + 0.03, 0.03, 1.0 * sz), frame),  # fork and stem
        _span((front - 0.05, -W / 2 + 0.02, 0.97 * sz), (front, W / 2 - 0.02, 1.02 * sz), 'metal'),  # handlebar
        _span((-0.25 * sx, -0.17, 0.4 * sz), (0.05 * sx, -0.06, 0.9 * sz), 'cloth_dark'),
        _span((-0.25 * sx, 0.06, 0.4 * sz), (0.05 * sx, 0.17, 0.9 * sz), 'cloth_dark'),
        _frustum((-0.32 * sx, -0.05 * sx, -0.18, 0.18), (-0.05 * sx, 0.2 * sx, -0.18, 0.18),
                 0.9 * sz, 1.36 * sz, top),  # torso leaning forward
        _span((0.05 * sx, -0.22, 1.1 * sz), (front - 0.05, -0.15, 1.2 * sz), top),  # arms
        _span((0.05 * sx, 0.15, 1.1 * sz), (front - 0.05, 0.22, 1.2 * sz), top),
        _span((0.02 * sx, -0.1, 1.42 * sz), (0.24 * sx, 0.1, H), 'skin'),
    ]
    return Mesh.merge(parts)


def actor_mesh(label: str, size: np.ndarray, rng: np.random.Generator) -> Mesh:
    """The mesh of one actor of a class with colours drawn from ``rng``."""
    if label == 'car':
        return _car_mesh(size, rng.choice(_PAINTS))
    if label == 'truck':
        return _truck_mesh(size, rng.choice(_PAINTS), rng.choice(_CARGO_PAINTS))
    if label == 'bus':
        return _bus_mesh(size, rng.choice(_BUS_PAINTS))
    if label == 'pedestrian':
        return _pedestrian_mesh(size, rng.choice(_TOPS), rng.choice(_TROUSERS))
    if label == 'cyclist':
        return _cyclist_mesh(size, rng.choice(_TOPS), rng.choice(_FRAMES))
    raise KeyError(f'unknown class {label!r}; known: {", ".join(CLASSES)}')


# ----------------------------------------------------------------------------------------------
# Paths and motion along them.
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Route:
    """A planar path sampled densely: straight segments joined by circular arcs."""

    xy: np.ndarray  # (N, 2) metres in map
    s: np.ndarray  # (N,) arc length from the start, increasing
    heading: np.ndarray  # (N,) tangent direction, unwrapped
    curvature: np.ndarray  # (N,) 1 / radius; 0 on straight parts

    @staticmethod
    def through(waypoints: Sequence[Sequence[float]], radius: float = 10.0, step: float = 0.5) -> _Route:
        """Straight lines between the waypoints with each interior corner rounded by an arc."""
        points = np.asarray(waypoints, np.float64)
        xy, heading, curvature = [], [], []
        current = points[0]

        def straight(start: np.ndarray, end: np.ndarray) -> None:
            length = float(np.linalg.norm(end - start))
            if length < 1e-9:
                return
            n = max(1, math.ceil(length / step))
            f = np.arange(n) / n
            xy.append(start + f[:, None] * (end - start))
            heading.append(np.full(n, math.atan2(*(end - start)[::-1])))
            curvature.append(np.zeros(n))

        for before, corner, after in zip(points[:-2], points[1:-1], points[2:]):
            d_in = (corner - before) / np.linalg.norm(corner - before)
            d_out = (after - corner) / np.linalg.norm(after - corner)
            turn = math.atan2(d_in[0] * d_out[1] - d_in[1] * d_out[0], float(d_in @ d_out))
            if abs(turn) < 1e-9:
                continue
            tangent = radius * math.tan(abs(turn) / 2)
            start = corner - d_in * tangent
            straight(current, start)
            side = math.copysign(1.0, turn)
            h0 = math.atan2(d_in[1], d_in[0])
            n = max(2, math.ceil(radius * abs(turn) / (step * 0.4)))
            h = h0 + turn * np.arange(n) / n
            centre = start + side * radius * np.array([-math.sin(h0), math.cos(h0)])
            xy.append(centre - side * radius * np.stack([-np.sin(h), np.cos(h)], axis=1))
            heading.append(h)
            curvature.append(np.full(n, 1.0 / radius))
            current = corner + d_out * tangent
        straight(current, points[-1])
        xy.append(points[-1][None])
        heading.append(heading[-1][-1:])
        curvature.append(np.zeros(1))
        xy_all = np.concatenate(xy)
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy_all, axis=0), axis=1))])
        return _Route(xy_all, s, np.unwrap(np.concatenate(heading)), np.concatenate(curvature))

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``(..., 2)`` and headings at arc lengths ``s`` (clamped to the route)."""
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        return np.stack([x, y], axis=-1), np.interp(s, self.s, self.heading)

    def window(self, s0: float, s1: float) -> _Route:
        """The part between arc lengths s0 and s1 (arc lengths keep counting from the full start)."""
        i0 = max(int(np.searchsorted(self.s, s0)) - 1, 0)
        i1 = min(int(np.searchsorted(self.s, s1)) + 1, len(self.s))
        return _Route(self.xy[i0:i1], self.s[i0:i1], self.heading[i0:i1], self.curvature[i0:i1])

    def nearest_s(self, xy: Sequence[float]) -> float:
        return float(self.s[np.argmin(np.sum((self.xy - np.asarray(xy)) ** 2, axis=1))])


@dataclass(frozen=True)
class _Dynamics:
    """How an actor moves along its path."""

    cruise: float  # m/s on straight parts
    accel: float  # m/s^2, speeding up and braking
    lateral_accel: float  # m/s^2, limits the speed in curves


def _pass_times(route: _Route, dyn: _Dynamics,
                stops: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """When each route sample is passed, from t = 0 at the start, as a ``(times, s)`` table.

    The speed is the highest that respects the cruise speed, the curve limit, the acceleration
    limit and coming to rest at every stop ``(s, wait)``; each stop holds for ``wait`` seconds
    (the table then has the stop's ``s`` twice). Forward and backward acceleration passes are
    running minima of ``v^2 -/+ 2 a s``.
    """
    s = route.s - route.s[0]
    vmax2 = np.full(len(s), dyn.cruise ** 2)
    curved = route.curvature > 0
    vmax2[curved] = np.minimum(vmax2[curved], dyn.lateral_accel / route.curvature[curved])
    stop_index = np.clip(np.searchsorted(route.s, [stop for stop, _ in stops]), 0, len(s) - 1)
    vmax2[stop_index] = 0.0
    two_a_s = 2 * dyn.accel * s
    v2 = np.minimum(vmax2, two_a_s + np.minimum.accumulate(vmax2 - two_a_s))
    v2 = np.minimum(v2, np.minimum.accumulate((vmax2 + two_a_s)[::-1])[::-1] - two_a_s)
    v = np.sqrt(np.maximum(v2, 0.0))
    dt = np.diff(s) / np.maximum((v[:-1] + v[1:]) / 2, 1e-3)
    t = np.concatenate([[0.0], np.cumsum(dt)])
    held = [(int(i), wait) for i, (_, wait) in zip(stop_index, stops) if wait > 0]
    for i, wait in held:
        t[i + 1:] += wait
    s = route.s
    if held:
        at = [i + 1 for i, _ in held]
        t = np.insert(t, at, [t[i] + wait for i, wait in held])
        s = np.insert(s, at, [s[i] for i, _ in held])
    return t, s


class _Path(NamedTuple):
    """A route and where it enters and leaves the parts where signals rule (junctions or roads)."""

    route: _Route
    entries: np.ndarray  # sample indices of the first sample inside
    exits: np.ndarray  # sample indices of the first sample outside again


def _path(route: _Route, inside: np.ndarray) -> _Path:
    entries = np.flatnonzero(~inside[:-1] & inside[1:]) + 1
    return _Path(route, entries, np.flatnonzero(inside[:-1] & ~inside[1:]) + 1)


class _Gate(NamedTuple):
    """A place on a path where the signal of a crossing decides whether to go on."""

    s: float  # where to stand while waiting
    axis: Literal['x', 'y']  # the axis of travel through the crossing
    crossing: tuple[int, int]
    length: float  # how far it is across (pedestrians need time to get over)


def _follow(route: _Route, dyn: _Dynamics, knot_t: np.ndarray, s_anchor: float, t_anchor: float,
            gates: Sequence[_Gate], signals: _Signals | None, walker: bool,
            acceptable: Callable[[np.ndarray], bool]) -> tuple[np.ndarray, np.ndarray] | None:
    """Positions and headings at the knot times of an actor meant to be at ``s_anchor`` at ``t_anchor``.

    Every gate is considered in order along the path: at red the actor stops there until green,
    which delays everything after it. A stop before the anchor makes the actor late for it, so
    while its positions are not ``acceptable`` its start is moved earlier by the delay and the
    signals are consulted again, a few times; None if that does not help.
    """
    reach = dyn.cruise * (knot_t[-1] - knot_t[0]) + 50.0  # the farthest it gets either side of the anchor
    route = route.window(s_anchor - reach, s_anchor + reach)
    plain = _pass_times(route, dyn, [])
    shift = t_anchor - float(np.interp(s_anchor, plain[1], plain[0]))
    for _ in range(4):
        t_tab, s_tab = _stop_at_red(route, dyn, knot_t, shift, gates, signals, walker, plain)
        xy, yaw = route.at(np.interp(knot_t - shift, t_tab, s_tab))
        if acceptable(xy):
            return xy, yaw
        shift -= float(np.interp(s_anchor, s_tab, t_tab)) + shift - t_anchor
    return None


def _stop_at_red(route: _Route, dyn: _Dynamics, knot_t: np.ndarray, shift: float, gates: Sequence[_Gate],
                 signals: _Signals | None, walker: bool, plain: tuple[np.ndarray, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The ``_pass_times`` table with a stop at every gate the actor reaches at red (times + shift)."""
    stops: list[tuple[float, float]] = []
    t_tab, s_tab = plain
    for gate in gates:
        if not route.s[0] < gate.s < route.s[-1]:
            continue
        assert signals is not None
        arrival = float(np.interp(gate.s, s_tab, t_tab)) + shift
        if not knot_t[0] - signals.cycle < arrival < knot_t[-1]:
            continue
        need = gate.length / dyn.cruise if walker else 0.0
        if signals.may_go(gate.crossing, gate.axis, arrival, need):
            continue
        t_tab, s_tab = _pass_times(route, dyn, stops + [(gate.s, 0.0)])
        arrival = float(np.interp(gate.s, s_tab, t_tab)) + shift
        stops.append((gate.s, signals.until_green(gate.crossing, gate.axis, arrival, need)))
        t_tab, s_tab = _pass_times(route, dyn, stops)
    return t_tab, s_tab


# ----------------------------------------------------------------------------------------------
# Traffic signals: two phases (one per street axis) with an all-red gap between them.
# ----------------------------------------------------------------------------------------------

class _Signals:
    """Fixed-time signals at every crossing of a street grid."""

    def __init__(self, shape: tuple[int, int], green: float, all_red: float,
                 rng: np.random.Generator) -> None:
        self.green, self.all_red = green, all_red
        self.cycle = 2 * (green + all_red)
        self.offsets = rng.uniform(0, self.cycle, shape)  # start of the x-axis green, per crossing

    def _phase(self, crossing: tuple[int, int], axis: str, t: float) -> float:
        """Seconds since this axis's green last started."""
        start = self.offsets[crossing] + (0.0 if axis == 'x' else self.green + self.all_red)
        return (t - start) % self.cycle

    def may_go(self, crossing: tuple[int, int], axis: str, t: float, need: float) -> bool:
        """Green, and long enough left (with the all-red gap) to take ``need`` seconds across."""
        phase = self._phase(crossing, axis, t)
        return phase < self.green and self.green - phase + self.all_red >= need

    def until_green(self, crossing: tuple[int, int], axis: str, t: float, need: float) -> float:
        """Seconds to wait from ``t`` until going is allowed."""
        if self.may_go(crossing, axis, t, need):
            return 0.0
        return self.cycle - self._phase(crossing, axis, t)

    def green_for(self, crossing: tuple[int, int], axis: str, t: float, lead: float) -> None:
        """Time this crossing so that ``axis`` turned green ``lead`` seconds before ``t``."""
        start = t - lead - (0.0 if axis == 'x' else self.green + self.all_red)
        self.offsets[crossing] = start % self.cycle


# ----------------------------------------------------------------------------------------------
# Collision-free placement.
# ----------------------------------------------------------------------------------------------

# Half-extents added to a box (along, across) while placing, so that kept actors keep a gap.
_PLACEMENT_MARGINS = {'car': (0.6, 0.3), 'truck': (0.6, 0.3), 'bus': (0.6, 0.3), 'cyclist': (0.4, 0.25),
                      'pedestrian': (0.15, 0.15), 'ego': (0.6, 0.3), 'static': (0.2, 0.2)}


def _boxes_overlap(ca: np.ndarray, ya: np.ndarray, ha: np.ndarray,
                  cb: np.ndarray, yb: np.ndarray, hb: np.ndarray) -> np.ndarray:
    """Whether rotated rectangles overlap, by separating axes: centres ``(..., 2)``, yaws, half sizes."""
    ua = np.stack([np.cos(ya), np.sin(ya)], -1)
    va = np.stack([-np.sin(ya), np.cos(ya)], -1)
    ub = np.stack([np.cos(yb), np.sin(yb)], -1)
    vb = np.stack([-np.sin(yb), np.cos(yb)], -1)
    d = cb - ca
    ha, hb = np.broadcast_to(ha, d.shape), np.broadcast_to(hb, d.shape)
    separated = np.zeros(d.shape[:-1], bool)
    for n in (ua, va, ub, vb):
        ra = ha[..., 0] * np.abs(np.sum(n * ua, -1)) + ha[..., 1] * np.abs(np.sum(n * va, -1))
        rb = hb[..., 0] * np.abs(np.sum(n * ub, -1)) + hb[..., 1] * np.abs(np.sum(n * vb, -1))
        separated |= np.abs(np.sum(n * d, -1)) > ra + rb
    return ~separated


class _Occupancy:
    """The inflated boxes placed so far, at every knot time."""

    def __init__(self, n_times: int) -> None:
        self.n_times = n_times
        self._xy: list[np.ndarray] = []
        self._yaw: list[np.ndarray] = []
        self._half: list[np.ndarray] = []
        self._stacked: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, xy: np.ndarray, yaw: np.ndarray, half: np.ndarray) -> None:
        self._xy.append(np.broadcast_to(xy, (self.n_times, 2)))
        self._yaw.append(np.broadcast_to(yaw, (self.n_times,)))
        self._half.append(np.asarray(half, np.float64))
        self._stacked = None

    def overlaps(self, xy: np.ndarray, yaw: np.ndarray, half: np.ndarray) -> bool:
        if not self._xy:
            return False
        if self._stacked is None:
            self._stacked = (np.stack(self._xy), np.stack(self._yaw), np.stack(self._half))
        XY, YAW, HALF = self._stacked  # (M, T, 2), (M, T), (M, 2)
        reach = np.hypot(HALF[:, 0], HALF[:, 1]) + math.hypot(*half)
        near = np.sum((XY - xy[None]) ** 2, axis=-1) < reach[:, None] ** 2
        m, t = np.nonzero(near)
        if m.size == 0:
            return False
        return bool(_boxes_overlap(xy[t], yaw[t], half, XY[m, t], YAW[m, t], HALF[m]).any())


def _inflated_half(label: str, size: np.ndarray) -> np.ndarray:
    return np.asarray(size[:2], np.float64) / 2 + _PLACEMENT_MARGINS[label]


# ----------------------------------------------------------------------------------------------
# Layouts. Each knows its geometry, builds its static scene, and offers paths for each class.
# ----------------------------------------------------------------------------------------------

_DIRECTIONS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # east, north, west, south


def _right_of(direction: np.ndarray) -> np.ndarray:
    return np.array([direction[1], -direction[0]])


def _speed_range(label: str, layout: str) -> tuple[float, float]:
    if label == 'pedestrian':
        return 1.0, 1.8
    if label == 'cyclist':
        return 3.0, 7.0
    if layout == 'highway':
        return {'car': (22.0, 33.0), 'truck': (20.0, 25.0), 'bus': (20.0, 26.0)}[label]
    return {'car': (7.0, 14.0), 'truck': (5.0, 11.0), 'bus': (5.0, 10.0)}[label]


def _dynamics(label: str, cruise: float) -> _Dynamics:
    if label == 'pedestrian':
        return _Dynamics(cruise, 1.0, 2.0)
    if label == 'cyclist':
        return _Dynamics(cruise, 1.0, 2.5)
    return _Dynamics(cruise, 2.0 if label == 'car' else 1.2, 3.5)


@dataclass(frozen=True)
class _StreetProfile:
    """Cross-section of a city street, from its centre line outwards on each side."""

    lanes: int  # driving lanes per direction
    lane_width: float = 3.5
    bike_lane: float = 1.5
    parking_lane: float = 2.3
    sidewalk: float = 4.0

    @property
    def half_road(self) -> float:
        return self.lanes * self.lane_width + self.bike_lane + self.parking_lane

    def lane_offset(self, lane: int) -> float:
        """Centre of driving lane ``lane`` (0 next to the centre line), to the right of travel."""
        return (lane + 0.5) * self.lane_width

    @property
    def bike_offset(self) -> float:
        return self.lanes * self.lane_width + self.bike_lane / 2

    @property
    def parking_offset(self) -> float:
        return self.lanes * self.lane_width + self.bike_lane + self.parking_lane / 2


Bounds = tuple[float, float, float, float]  # x0, x1, y0, y1


def _free_intervals(lo: float, hi: float, centres: np.ndarray,
                    half: float) -> list[tuple[float, float, bool, bool]]:
    """Parts of [lo, hi] outside every ``[c - half, c + half]``; flags say whether each end is a street."""
    out, start, start_street = [], lo, False
    for c in np.sort(centres):
        if c + half <= lo or c - half >= hi:
            continue
        if c - half > start:
            out.append((start, c - half, start_street, True))
        start, start_street = max(start, c + half), True
    if start < hi:
        out.append((start, hi, start_street, False))
    return out


class _GridLayout:
    """Streets on a grid of crossings (``pitch`` apart; ``None`` for one crossing at the origin)."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator, profile: _StreetProfile,
                 pitch: float | None, building_heights: tuple[float, float]) -> None:
        self.name = scenario.layout
        self.profile = profile
        self.pitch = pitch
        self.building_heights = building_heights
        self.duration = scenario.duration_s
        self.ego_speed = scenario.ego_speed
        span = scenario.duration_s + 2 * LEAD_S
        # how far paths reach either side of their crossing: the ego's drive, the fastest actor's, slack
        self.leads = {role: (scenario.ego_speed + vmax) * span + 400.0
                      for role, vmax in (('vehicle', 14.0), ('cyclist', 7.0), ('pedestrian', 2.0))}
        if pitch is None:
            self.xs = self.ys = np.zeros(1)
        else:  # every street any path can reach
            n = math.ceil((scenario.ego_speed * span + max(self.leads.values()) + GROUND_MARGIN) / pitch)
            self.xs = self.ys = pitch * np.arange(-n, n + 1)
        self.turn = rng.choice(('left', 'right')) if pitch is None else 'straight'
        # long enough for a pedestrian at 1.2 m/s to cross the street
        green = max(14.0, (2 * profile.half_road + 1.0) / 1.2)
        self.signals = _Signals((len(self.xs), len(self.ys)), green, 3.0, rng)
        self._route_cache: dict[tuple, _Path] = {}
        self.near_crossings: list[tuple[int, int]] = []

    # -- geometry queries -----------------------------------------------------------------
    def _to_street(self, v: np.ndarray) -> np.ndarray:
        """Distance from coordinates to the nearest street centre line (streets sit at pitch multiples)."""
        if self.pitch is None:
            return np.abs(v)
        return np.abs((v + self.pitch / 2) % self.pitch - self.pitch / 2)

    def in_road(self, xy: np.ndarray) -> np.ndarray:
        hr = self.profile.half_road
        return (self._to_street(xy[:, 0]) < hr) | (self._to_street(xy[:, 1]) < hr)

    def in_junction(self, xy: np.ndarray) -> np.ndarray:
        hr = self.profile.half_road
        return (self._to_street(xy[:, 0]) < hr) & (self._to_street(xy[:, 1]) < hr)

    def is_walkable(self, xy: np.ndarray) -> bool:
        return not bool(self.in_road(np.atleast_2d(xy))[0])

    def crossing_centre(self, crossing: tuple[int, int]) -> np.ndarray:
        return np.array([self.xs[crossing[0]], self.ys[crossing[1]]])

    # -- paths ----------------------------------------------------------------------------
    def crossing_route(self, crossing: tuple[int, int], k_in: int, maneuver: str, offset_in: float,
                       offset_out: float, role: str = 'vehicle') -> _Path:
        """A lane path through a crossing: arriving in direction ``k_in``, going straight or turning."""
        key = (crossing, k_in, maneuver, offset_in, offset_out, role)
        lead = self.leads[role]
        if key in self._route_cache:
            return self._route_cache[key]
        centre = self.crossing_centre(crossing)
        d_in = _DIRECTIONS[k_in]
        k_out = (k_in + {'straight': 0, 'left': 1, 'right': -1}[maneuver]) % 4
        d_out = _DIRECTIONS[k_out]
        hr = self.profile.half_road
        if maneuver == 'straight':
            line = centre + _right_of(d_in) * offset_in
            route = _Route.through([line - d_in * lead, line + d_in * lead])
        else:
            corner = centre + _right_of(d_in) * offset_in + _right_of(d_out) * offset_out
            radius = hr + offset_out if maneuver == 'left' else max(7.5, hr + 0.5 - offset_out)
            route = _Route.through([corner - d_in * lead, corner, corner + d_out * lead], radius)
        self._route_cache[key] = path = _path(route, self.in_junction(route.xy))
        return path

    def ego_route(self) -> tuple[_Path, float, float]:
        """The ego's path and where it is at which time (an anchor for its speed profile)."""
        p = self.profile
        if self.turn == 'straight':
            lane = p.lane_offset(0)
            path = self.crossing_route(self._index_of((0.0, 0.0)), 0, 'straight', lane, lane)
            return path, path.route.nearest_s((-40.0, -p.lane_offset(0))), 0.0
        lane = 0 if self.turn == 'left' else p.lanes - 1
        path = self.crossing_route((0, 0), 0, self.turn, p.lane_offset(lane), p.lane_offset(lane))
        s_junction = float(path.route.s[path.entries[0]])
        if self.ego_speed <= 0:  # waiting at the stop line
            return path, s_junction - p.sidewalk - 0.8 - EGO_SIZE[0] / 2, 0.0
        return path, s_junction, 0.4 * self.duration

    def _index_of(self, xy: Sequence[float]) -> tuple[int, int]:
        return int(np.argmin(np.abs(self.xs - xy[0]))), int(np.argmin(np.abs(self.ys - xy[1])))

    def gates(self, path: _Path, walker: bool, length: float) -> list[_Gate]:
        """Where a path meets signals: stop lines for vehicles and cyclists, kerbs for pedestrians."""
        p = self.profile
        route, exits = path.route, path.exits
        gates = []
        for i in path.entries:
            later = exits[exits > i]
            across = float(route.s[later[0]] - route.s[i]) if len(later) else 0.0
            h = route.heading[i]
            axis: Literal['x', 'y'] = 'x' if abs(math.cos(h)) >= abs(math.sin(h)) else 'y'
            setback = 0.3 + length / 2 if walker else p.sidewalk + 0.8 + length / 2
            gates.append(_Gate(float(route.s[i]) - setback, axis, self._index_of(route.xy[i]), across))
        return gates

    def time_signals(self, ego_path: _Path, ego_s: np.ndarray, knot_t: np.ndarray) -> None:
        """Crossings the ego passes turn green for it 35 % into their green phase."""
        for gate in self.gates(ego_path, False, EGO_SIZE[0]):
            if ego_s[0] <= gate.s <= ego_s[-1] and ego_s[-1] > ego_s[0]:
                t = float(np.interp(gate.s, ego_s, knot_t))
                self.signals.green_for(gate.crossing, gate.axis, t, 0.35 * self.signals.green)

    def set_near(self, ego_xy: np.ndarray) -> None:
        """Remember the crossings within reach of the ego's drive: traffic is placed around them.

        The reach goes a block beyond the encounter radius: in dense traffic placements widen their
        search, and side streets then give them room.
        """
        reach = ENCOUNTER_RADIUS + self.profile.half_road + 60.0
        coarse = ego_xy[::10]
        dx = self.xs[:, None, None] - coarse[None, None, :, 0]
        dy = self.ys[None, :, None] - coarse[None, None, :, 1]
        near = np.min(dx ** 2 + dy ** 2, axis=2) < reach ** 2  # (nx, ny)
        self.near_crossings = [(int(i), int(j)) for i, j in zip(*np.nonzero(near))]

    def vehicle_route(self, rng: np.random.Generator, label: str) -> tuple[_Path, float]:
        p = self.profile
        crossing = self.near_crossings[rng.integers(len(self.near_crossings))]
        k_in = int(rng.integers(4))
        maneuver = rng.choice(('straight', 'straight', 'left', 'right'))
        if maneuver == 'straight':
            lane = int(rng.integers(p.lanes))
            lane_out = lane
        else:
            lane = lane_out = 0 if maneuver == 'left' else p.lanes - 1
        path = self.crossing_route(crossing, k_in, str(maneuver), p.lane_offset(lane),
                                   p.lane_offset(lane_out))
        return path, rng.uniform(*_speed_range(label, self.name))

    def cyclist_route(self, rng: np.random.Generator) -> tuple[_Path, float]:
        crossing = self.near_crossings[rng.integers(len(self.near_crossings))]
        offset = self.profile.bike_offset
        path = self.crossing_route(crossing, int(rng.integers(4)), 'straight', offset, offset, 'cyclist')
        return path, rng.uniform(*_speed_range('cyclist', self.name))

    def walkway(self, rng: np.random.Generator) -> tuple[_Path, float]:
        """A straight line along a sidewalk; it crosses side streets on their crosswalks."""
        p = self.profile
        centre = self.crossing_centre(self.near_crossings[rng.integers(len(self.near_crossings))])
        k = int(rng.integers(4))
        d = _DIRECTIONS[k]
        lateral = (p.half_road + rng.uniform(1.0, p.sidewalk - 0.9)) * rng.choice((-1, 1))
        line = centre + _right_of(d) * lateral
        lead = self.leads['pedestrian']
        route = _Route.through([line - d * lead, line + d * lead])
        return _path(route, self.in_road(route.xy)), rng.uniform(*_speed_range('pedestrian', self.name))

    def parking_slots(self, ego_xy: np.ndarray, bounds: Bounds) -> list[tuple[np.ndarray, float, float]]:
        """``(centre, heading, distance to the ego route)`` of parking-lane slots, 6.5 m long."""
        p = self.profile
        clear = p.half_road + p.sidewalk + 6.0
        x0, x1, y0, y1 = bounds
        coarse = ego_xy[::5]
        slots = []
        x_streets = self.ys[(self.ys > y0) & (self.ys < y1)]  # streets along x, by their y
        y_streets = self.xs[(self.xs > x0) & (self.xs < x1)]
        for axis, streets, across, lo, hi in (('x', x_streets, self.xs, x0, x1),
                                              ('y', y_streets, self.ys, y0, y1)):
            along = np.arange(math.ceil(lo / 6.5), math.floor(hi / 6.5)) * 6.5 + 3.25
            along = along[np.min(np.abs(along[:, None] - across[None]), axis=1) > clear]
            for c, side in ((c, side) for c in streets for side in (-1, 1)):
                lateral = np.full_like(along, c + side * p.parking_offset)
                xy = np.stack([along, lateral] if axis == 'x' else [lateral, along], axis=1)
                # right-hand traffic: an x street's north side drives west, a y street's east side north
                if axis == 'x':
                    heading = math.pi if side > 0 else 0.0
                else:
                    heading = math.pi / 2 if side > 0 else -math.pi / 2
                dist = np.min(np.linalg.norm(xy[:, None] - coarse[None], axis=2), axis=1)
                slots.extend((xy[i], heading, float(dist[i])) for i in range(len(xy)))
        return slots

    # -- static scene ---------------------------------------------------------------------
    def static_scene(self, bounds: Bounds, ego_xy: np.ndarray, rng: np.random.Generator) -> list[Mesh]:
        x0, x1, y0, y1 = bounds
        p = self.profile
        hr, sw = p.half_road, p.sidewalk
        xs_in = self.xs[(self.xs > x0 - hr - sw) & (self.xs < x1 + hr + sw)]
        ys_in = self.ys[(self.ys > y0 - hr - sw) & (self.ys < y1 + hr + sw)]
        parts = [self._ground(bounds, xs_in, ys_in)]
        parts.append(self._markings(bounds, xs_in, ys_in))
        parts.extend(self._buildings(bounds, xs_in, ys_in, rng))
        coarse = ego_xy[::5]

        def near_route(xy: Sequence[float], reach: float) -> bool:
            return bool(np.min(np.linalg.norm(coarse - np.asarray(xy), axis=1)) < reach)

        # street lamps every 35 m on both kerbs, away from crossings, their arms reaching over the road
        for axis, streets, across, lo, hi in (('x', ys_in, xs_in, x0, x1), ('y', xs_in, ys_in, y0, y1)):
            along = np.arange(math.ceil(lo / 35.0), math.floor(hi / 35.0) + 1) * 35.0
            along = along[np.min(np.abs(along[:, None] - across[None]), axis=1) > hr + sw + 1.5]
            lateral = np.array([0.0, 1.0]) if axis == 'x' else np.array([1.0, 0.0])
            for c, side, a in ((c, side, a) for c in streets for side in (-1, 1) for a in along):
                xy = (np.array([a, c]) if axis == 'x' else np.array([c, a])) + side * (hr + 0.4) * lateral
                if near_route(xy, 100.0):
                    towards_road = math.atan2(-side * lateral[1], -side * lateral[0])
                    parts.append(_placed(_street_lamp(), xy, towards_road))
        for X, Y in ((X, Y) for X in xs_in for Y in ys_in if near_route((X, Y), 150.0)):
            parts.extend(_placed(_traffic_light(p), (X, Y), k * math.pi / 2) for k in range(4))
        return parts

    def _ground(self, bounds: Bounds, xs_in: np.ndarray, ys_in: np.ndarray) -> Mesh:
        """The ground split into road, sidewalk and grass cells along every street edge."""
        x0, x1, y0, y1 = bounds
        hr, sw = self.profile.half_road, self.profile.sidewalk
        edges = np.array([-hr - sw, -hr, hr, hr + sw])

        def breaks(lo: float, hi: float, centres: np.ndarray) -> np.ndarray:
            b = (centres[:, None] + edges[None]).ravel()
            return np.unique(np.concatenate([[lo, hi], b[(b > lo) & (b < hi)]]))

        bx, by = breaks(x0, x1, xs_in), breaks(y0, y1, ys_in)
        cx, cy = (bx[:-1] + bx[1:]) / 2, (by[:-1] + by[1:]) / 2
        dx = np.min(np.abs(cx[:, None] - xs_in[None]), axis=1) if len(xs_in) else np.full(len(cx), np.inf)
        dy = np.min(np.abs(cy[:, None] - ys_in[None]), axis=1) if len(ys_in) else np.full(len(cy), np.inf)
        road = (dx[:, None] < hr) | (dy[None, :] < hr)
        walk = ~road & ((dx[:, None] < hr + sw) | (dy[None, :] < hr + sw))
        materials = np.where(road, material_id('asphalt'),
                             np.where(walk, material_id('sidewalk'), material_id('grass')))
        ix, iy = np.meshgrid(np.arange(len(cx)), np.arange(len(cy)), indexing='ij')
        rects = np.stack([bx[ix], bx[ix + 1], by[iy], by[iy + 1]], -1).reshape(-1, 4)
        return flat_rects_mesh(rects, 0.0, materials.reshape(-1))

    def _markings(self, bounds: Bounds, xs_in: np.ndarray, ys_in: np.ndarray) -> Mesh:
        """Lane lines between crossings; crosswalks and stop lines at every crossing."""
        p = self.profile
        hr, sw = p.half_road, p.sidewalk
        rects: list[tuple[float, float, float, float]] = []  # in (along, lateral) of each street

        def solid(a0: float, a1: float, lateral: float, width: float) -> None:
            rects.append((a0, a1, lateral - width / 2, lateral + width / 2))

        def dashed(a0: float, a1: float, lateral: float, width: float, dash: float, period: float) -> None:
            for a in np.arange(math.ceil(a0 / period) * period, a1 - dash, period):
                solid(a, a + dash, lateral, width)

        world_rects: list[np.ndarray] = []
        clear = hr + sw + 1.0
        for axis, positions, across, lo, hi in (('x', ys_in, xs_in, bounds[0], bounds[1]),
                                                ('y', xs_in, ys_in, bounds[2], bounds[3])):
            cuts = [lo] + [v for c in np.sort(across) for v in (c - clear, c + clear)] + [hi]
            segments = [(max(a, lo), min(b, hi)) for a, b in zip(cuts[::2], cuts[1::2])
                        if min(b, hi) - max(a, lo) > 1.0]
            for c in positions:
                rects.clear()
                for a0, a1 in segments:
                    if p.lanes == 1:
                        dashed(a0, a1, 0.0, 0.15, 3.0, 9.0)
                    else:
                        solid(a0, a1, -0.15, 0.12)
                        solid(a0, a1, 0.15, 0.12)
                    for side in (-1, 1):
                        for lane in range(1, p.lanes):
                            dashed(a0, a1, side * lane * p.lane_width, 0.15, 3.0, 9.0)
                        solid(a0, a1, side * p.lanes * p.lane_width, 0.15)
                        solid(a0, a1, side * (p.lanes * p.lane_width + p.bike_lane), 0.1)
                if rects:
                    r = np.array(rects)
                    world_rects.append(r + [0, 0, c, c] if axis == 'x' else r[:, [2, 3, 0, 1]] + [c, c, 0, 0])
        stripes = np.arange(-hr + 0.5, hr - 0.3, 1.1)
        for X in xs_in:
            for Y in ys_in:
                for k in range(4):
                    a, l = _DIRECTIONS[k], _DIRECTIONS[(k + 1) % 4]
                    local = [(hr + 0.5, hr + sw - 0.5, s - 0.25, s + 0.25) for s in stripes]
                    local.append((hr + sw + 0.3, hr + sw + 0.7, 0.0, p.lanes * p.lane_width + p.bike_lane))
                    for u0, u1, v0, v1 in local:
                        c0 = np.array([X, Y]) + u0 * a + v0 * l
                        c1 = np.array([X, Y]) + u1 * a + v1 * l
                        world_rects.append(np.array([[min(c0[0], c1[0]), max(c0[0], c1[0]),
                                                      min(c0[1], c1[1]), max(c0[1], c1[1])]]))
        if not world_rects:
            return Mesh.merge([])
        return flat_rects_mesh(np.concatenate(world_rects), 0.01, 'lane_marking')

    def _buildings(self, bounds: Bounds, xs_in: np.ndarray, ys_in: np.ndarray,
                   rng: np.random.Generator) -> list[Mesh]:
        """Buildings along the street sides of every lot (the land between street corridors)."""
        x0, x1, y0, y1 = bounds
        corridor = self.profile.half_road + self.profile.sidewalk
        footprints = []
        for lx0, lx1, west, east in _free_intervals(x0, x1, xs_in, corridor):
            for ly0, ly1, south, north in _free_intervals(y0, y1, ys_in, corridor):
                depth = min(20.0, (min(lx1 - lx0, ly1 - ly0) - 4.0) / 2)
                if depth < 6.0:
                    continue
                # rows along the south and north sides run the full length; the west and east rows
                # stop short of the corners those already fill
                corner = depth + 3.5
                y_start, y_end = ly0 + (corner if south else 0.0), ly1 - (corner if north else 0.0)
                if south:
                    footprints += _row(rng, lx0, lx1, 'x', ly0, +1, depth)
                if north:
                    footprints += _row(rng, lx0, lx1, 'x', ly1, -1, depth)
                if west:
                    footprints += _row(rng, y_start, y_end, 'y', lx0, +1, depth)
                if east:
                    footprints += _row(rng, y_start, y_end, 'y', lx1, -1, depth)
        if not footprints:
            return []
        fp = np.array(footprints)  # (B, 4) x0, x1, y0, y1
        low, high = self.building_heights
        heights = np.where(rng.random(len(fp)) < 0.15, rng.uniform(high, 1.6 * high, len(fp)),
                           rng.uniform(low, high, len(fp)))
        lo = np.c_[fp[:, 0], fp[:, 2], np.zeros(len(fp))]
        hi = np.c_[fp[:, 1], fp[:, 3], heights]
        return [boxes_mesh(lo, hi, 'building'), _window_bands(fp, heights)]


def _row(rng: np.random.Generator, start: float, end: float, axis: str, edge: float, inward: int,
         max_depth: float) -> list[tuple[float, float, float, float]]:
    """Footprints ``(x0, x1, y0, y1)`` of buildings side by side along one lot edge."""
    out = []
    pos = start + rng.uniform(0.0, 4.0)
    while end - pos > 8.0:
        width = min(rng.uniform(10.0, 28.0), end - pos)
        setback = rng.uniform(0.5, 3.0)
        depth = rng.uniform(min(10.0, max_depth), max_depth)
        near, far = edge + inward * setback, edge + inward * (setback + depth)
        lateral = (min(near, far), max(near, far))
        out.append((pos, pos + width, *lateral) if axis == 'x' else (*lateral, pos, pos + width))
        pos += width + rng.uniform(0.0, 6.0)
    return out


def _window_bands(footprints: np.ndarray, heights: np.ndarray) -> Mesh:
    """One band of windows per storey on every facade, 3 cm in front of it."""
    floor = 3.2
    p0, p1, z0 = [], [], []
    for (x0, x1, y0, y1), h in zip(footprints, heights):
        storeys = np.arange(int((h - 1.0) // floor)) * floor + 1.0
        if len(storeys) == 0:
            continue
        o, i = 0.03, 1.0  # offset in front of the facade, inset from its corners
        # counter-clockwise around the footprint: south, east, north, west facades
        corners0 = np.array([[x0 + i, y0 - o], [x1 + o, y0 + i], [x1 - i, y1 + o], [x0 - o, y1 - i]])
        corners1 = np.array([[x1 - i, y0 - o], [x1 + o, y1 - i], [x0 + i, y1 + o], [x0 - o, y0 + i]])
        for z in storeys:
            p0.append(corners0)
            p1.append(corners1)
            z0.append(np.full(4, z))
    if not p0:
        return Mesh.merge([])
    z0_all = np.concatenate(z0)
    return wall_quads_mesh(np.concatenate(p0), np.concatenate(p1), z0_all, z0_all + 1.4, 'window')


@functools.lru_cache(maxsize=1)
def _street_lamp() -> Mesh:
    """A 7.5 m pole at the origin with its arm and lamp reaching along +x."""
    return Mesh.merge([
        cylinder_mesh(0.09, 7.5, (0.0, 0.0, 3.75), 'z', 'metal', sides=6),
        _span((0.0, -0.05, 7.4), (2.0, 0.05, 7.5), 'metal'),
        _span((1.5, -0.15, 7.25), (2.1, 0.15, 7.4), 'lamp'),
    ])


@functools.lru_cache(maxsize=4)
def _traffic_light(profile: _StreetProfile) -> Mesh:
    """The signal for traffic arriving on the east arm of a crossing at the origin (rotate for others).

    The pole stands on the corner to the right of the arriving traffic; a mast over its lanes
    carries one signal head per lane, lit towards the arriving traffic.
    """
    hr = profile.half_road
    corner = hr + 0.4
    parts = [
        cylinder_mesh(0.12, 6.0, (corner, corner, 3.0), 'z', 'metal'),
        _span((corner - 0.05, 0.3, 5.75), (corner + 0.05, corner, 5.9), 'metal'),
    ]
    for lane in range(profile.lanes):
        c = profile.lane_offset(lane)
        parts.append(_span((corner - 0.15, c - 0.18, 4.95), (corner + 0.15, c + 0.18, 5.75), 'paint_black'))
        parts.append(_span((corner + 0.15, c - 0.1, 5.5), (corner + 0.2, c + 0.1, 5.7), 'tail_light'))
    return Mesh.merge(parts)


_NONE = np.zeros(0, np.int64)  # no signals on a highway


class _HighwayLayout:
    """A straight highway along x: 3 + 3 lanes, a concrete median barrier, guard rails, lamp poles."""

    lanes = 3
    lane_width = 3.75
    median = 0.3  # half width of the barrier
    inner_shoulder = 1.0
    outer_shoulder = 3.0

    def __init__(self, scenario: Scenario) -> None:
        self.name = 'highway'
        self.edge = self.median + self.inner_shoulder + self.lanes * self.lane_width  # outer lane edge
        self.half_road = self.edge + self.outer_shoulder
        self.rail = self.half_road + 0.25
        self.signals = None
        self.lead = (scenario.ego_speed + 33.0) * (scenario.duration_s + 2 * LEAD_S) + 400.0

    def lane_offset(self, lane: int) -> float:
        return self.median + self.inner_shoulder + (lane + 0.5) * self.lane_width

    def _line(self, lateral: float, eastbound: bool) -> _Route:
        """A straight path at ``lateral`` metres to the right of the centre line for its direction."""
        if eastbound:
            return _Route.through([(-self.lead, -lateral), (self.lead, -lateral)])
        return _Route.through([(self.lead, lateral), (-self.lead, lateral)])

    @functools.cached_property
    def _lanes(self) -> dict[tuple[int, bool], _Route]:
        return {(lane, east): self._line(self.lane_offset(lane), east)
                for lane in range(self.lanes) for east in (True, False)}

    def ego_route(self) -> tuple[_Path, float, float]:
        route = self._lanes[(1, True)]
        return _Path(route, _NONE, _NONE), route.nearest_s((0.0, -self.lane_offset(1))), 0.0

    def set_near(self, ego_xy: np.ndarray) -> None:
        """The highway has no crossings to remember: traffic is placed along its lanes."""

    def time_signals(self, ego_path: _Path, ego_s: np.ndarray, knot_t: np.ndarray) -> None:
        """A highway has no traffic lights."""

    def is_walkable(self, xy: np.ndarray) -> bool:
        return True

    def gates(self, path: _Path, walker: bool, length: float) -> list[_Gate]:
        return []

    def vehicle_route(self, rng: np.random.Generator, label: str) -> tuple[_Path, float]:
        lane = int(rng.integers(self.lanes)) if label == 'car' else int(rng.integers(1, self.lanes))
        low, high = _speed_range(label, 'highway')
        if label == 'car':  # keep right unless faster: each lane has its own speed band
            low, high = ((28.0, 33.0), (24.0, 29.0), (22.0, 26.0))[lane]
        return _Path(self._lanes[(lane, bool(rng.random() < 0.55))], _NONE, _NONE), rng.uniform(low, high)

    def cyclist_route(self, rng: np.random.Generator) -> tuple[_Path, float]:
        route = self._line(self.edge + self.outer_shoulder / 2, bool(rng.random() < 0.5))
        return _Path(route, _NONE, _NONE), rng.uniform(*_speed_range('cyclist', 'highway'))

    def walkway(self, rng: np.random.Generator) -> tuple[_Path, float]:
        route = self._line(self.rail + rng.uniform(2.0, 8.0), bool(rng.random() < 0.5))
        return _Path(route, _NONE, _NONE), rng.uniform(*_speed_range('pedestrian', 'highway'))

    def parking_slots(self, ego_xy: np.ndarray, bounds: Bounds) -> list[tuple[np.ndarray, float, float]]:
        """Breakdown spots on the outer shoulders."""
        lateral = self.edge + self.outer_shoulder / 2
        along = np.arange(math.ceil(bounds[0] / 8.0), math.floor(bounds[1] / 8.0)) * 8.0
        slots = []
        for side, heading in ((-1, 0.0), (1, math.pi)):
            for a in along:
                xy = np.array([a, side * lateral])
                slots.append((xy, heading, float(np.min(np.linalg.norm(ego_xy[::5] - xy, axis=1)))))
        return slots

    def static_scene(self, bounds: Bounds, ego_xy: np.ndarray, rng: np.random.Generator) -> list[Mesh]:
        x0, x1, y0, y1 = bounds
        hr, edge, inner = self.half_road, self.edge, self.median + self.inner_shoulder
        ground = flat_rects_mesh(
            np.array([[x0, x1, -hr, hr], [x0, x1, hr, max(y1, hr + 1)], [x0, x1, min(y0, -hr - 1), -hr]]),
            0.0, np.array([material_id('asphalt'), material_id('grass'), material_id('grass')]))
        lines = []
        for side in (-1, 1):
            for lateral, width in ((inner, 0.2), (edge, 0.2)):
                lines.append((x0, x1, side * lateral - width / 2, side * lateral + width / 2))
            for lane in range(1, self.lanes):
                lateral = side * (inner + lane * self.lane_width)
                for a in np.arange(math.ceil(x0 / 12.0) * 12.0, x1 - 3.0, 12.0):
                    lines.append((a, a + 3.0, lateral - 0.075, lateral + 0.075))
        parts = [ground, flat_rects_mesh(np.array(lines), 0.01, 'lane_marking'),
                 _frustum((x0, x1, -self.median, self.median), (x0, x1, -0.12, 0.12), 0.0, 0.9, 'concrete')]
        posts = np.arange(math.ceil(x0 / 4.0), math.floor(x1 / 4.0) + 1) * 4.0
        for side in (-1, 1):
            rail = side * self.rail
            parts.append(_span((x0, rail - 0.05, 0.45), (x1, rail + 0.05, 0.8), 'metal'))
            post_y = np.full_like(posts, rail + side * 0.12)
            parts.append(boxes_mesh(np.c_[posts - 0.06, post_y - 0.06, np.zeros_like(posts)],
                                    np.c_[posts + 0.06, post_y + 0.06, np.full_like(posts, 0.75)], 'metal'))
            pos = x0 + rng.uniform(0.0, 150.0)
            while pos < x1:  # noise walls in stretches
                length = rng.uniform(60.0, 200.0)
                wall = side * (self.rail + 16.0)
                end = min(pos + length, x1)
                parts.append(_span((pos, wall - 0.15, 0.0), (end, wall + 0.15, 4.0), 'concrete'))
                pos += length + rng.uniform(80.0, 250.0)
        pole = Mesh.merge([
            cylinder_mesh(0.15, 10.0, (0.0, 0.0, 5.0), 'z', 'metal', sides=6),
            _span((-0.05, -2.5, 9.9), (0.05, 2.5, 10.0), 'metal'),
            _span((-0.15, -2.6, 9.75), (0.15, -2.0, 9.9), 'lamp'),
            _span((-0.15, 2.0, 9.75), (0.15, 2.6, 9.9), 'lamp'),
        ])
        for a in np.arange(math.ceil(x0 / 60.0), math.floor(x1 / 60.0) + 1) * 60.0:
            parts.append(_placed(pole, (a, 0.0), 0.0))
        return parts


_Layout = Union[_GridLayout, _HighwayLayout]


def _make_layout(scenario: Scenario, rng: np.random.Generator) -> _Layout:
    if scenario.layout == 'highway':
        return _HighwayLayout(scenario)
    if scenario.layout == 'intersection':
        return _GridLayout(scenario, rng, _StreetProfile(lanes=2, sidewalk=4.5), None, (8.0, 30.0))
    return _GridLayout(scenario, rng, _StreetProfile(lanes=1), 100.0, (6.0, 26.0))


# ----------------------------------------------------------------------------------------------
# Traffic.
# ----------------------------------------------------------------------------------------------

class _Drive(NamedTuple):
    """What a placement must know about the ego's drive."""

    knot_t: np.ndarray  # (T,) knot times shared by every trajectory
    ego_xy: np.ndarray  # (T, 2)
    in_scene: np.ndarray  # (T,) knot indices within [0, duration]


def _encounter(route: _Route, drive: _Drive, rng: np.random.Generator,
               radius: float) -> tuple[float, float] | None:
    """A random time in the scene and a random point of the path within ``radius`` of the ego then."""
    k = int(rng.choice(drive.in_scene))
    near = np.flatnonzero(np.sum((route.xy - drive.ego_xy[k]) ** 2, axis=1) < radius ** 2)
    if near.size == 0:
        return None
    return float(route.s[rng.choice(near)]), float(drive.knot_t[k])


def _candidate_motion(label: str, size: np.ndarray, layout: _Layout, drive: _Drive, rng: np.random.Generator,
                      radius: float, standing: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """One random motion for an actor, or None where the drawn path does not come near the ego.

    A ``standing`` pedestrian stays put the whole time: half of them wait at a kerb facing across
    the street, the others stand anywhere on the sidewalk facing any way.
    """
    walker = label == 'pedestrian'
    if walker:
        path, cruise = layout.walkway(rng)
    elif label == 'cyclist':
        path, cruise = layout.cyclist_route(rng)
    else:
        path, cruise = layout.vehicle_route(rng, label)
    route = path.route
    encounter = _encounter(route, drive, rng, radius)
    if encounter is None:
        return None
    s_anchor, t_anchor = encounter
    gates = layout.gates(path, walker, float(size[0]))
    if standing:
        kerbs = [g.s for g in gates if abs(g.s - s_anchor) < radius]
        at_kerb = bool(kerbs) and rng.random() < 0.5
        xy, heading = route.at(rng.choice(kerbs) if at_kerb else s_anchor)
        if not layout.is_walkable(xy):
            return None
        turn = 0.0 if at_kerb else rng.choice((0.0, math.pi / 2, -math.pi / 2, math.pi))
        T = len(drive.knot_t)
        return np.repeat(xy[None], T, axis=0), np.full(T, float(heading) + turn + rng.normal(0.0, 0.15))

    def comes_near(xy: np.ndarray) -> bool:
        gap = np.sum((xy[drive.in_scene] - drive.ego_xy[drive.in_scene]) ** 2, axis=1)
        return bool(gap.min() < radius ** 2)

    return _follow(route, _dynamics(label, cruise), drive.knot_t, s_anchor, t_anchor, gates, layout.signals,
                   walker, comes_near)


def _place_actor(label: str, size: np.ndarray, layout: _Layout, drive: _Drive, occupancy: _Occupancy,
                 rng: np.random.Generator, standing: bool,
                 fallback_index: int) -> tuple[np.ndarray, np.ndarray]:
    half = _inflated_half(label, size)
    for attempt in range(PLACEMENT_ATTEMPTS):
        radius = ENCOUNTER_RADIUS * (1 + attempt // 30)
        motion = _candidate_motion(label, size, layout, drive, rng, radius, standing)
        if motion is not None and not occupancy.overlaps(*motion, half):
            return motion
    # Nowhere free near the drive: park it, still, far outside the scene.
    _log.warning('no free path for a %s after %d tries; parking it outside the scene',
                 label, PLACEMENT_ATTEMPTS)
    T = len(drive.knot_t)
    for spot in range(fallback_index, fallback_index + 1000):
        far = drive.ego_xy.min(axis=0) - GROUND_MARGIN - 200.0 - np.array([15.0 * spot, 0.0])
        xy, yaw = np.repeat(far[None], T, axis=0), np.zeros(T)
        if not occupancy.overlaps(xy, yaw, half):
            break
    return xy, yaw


_PLACEMENT_ORDER = ('bus', 'truck', 'car', 'cyclist', 'pedestrian')  # big and fast first


def _traffic(scenario: Scenario, layout: _Layout, drive: _Drive, occupancy: _Occupancy,
             rng: np.random.Generator) -> tuple[Actor, ...]:
    counts = {'car': scenario.traffic.cars, 'truck': scenario.traffic.trucks, 'bus': scenario.traffic.buses,
              'pedestrian': scenario.traffic.pedestrians, 'cyclist': scenario.traffic.cyclists}
    class_rngs = dict(zip(_PLACEMENT_ORDER, rng.spawn(len(_PLACEMENT_ORDER))))
    actors = []
    for label in _PLACEMENT_ORDER:
        for index, actor_rng in enumerate(class_rngs[label].spawn(counts[label])):
            size = sample_actor_size(label, actor_rng)
            mesh = actor_mesh(label, size, actor_rng)
            standing = label == 'pedestrian' and index % STANDING_EVERY == 0
            xy, yaw = _place_actor(label, size, layout, drive, occupancy, actor_rng, standing, len(actors))
            occupancy.add(xy, yaw, _inflated_half(label, size))
            actors.append(Actor(len(actors) + 1, label, size, mesh, Trajectory(drive.knot_t, xy, yaw)))
    return tuple(actors)


def _parked(scenario: Scenario, layout: _Layout, drive: _Drive, bounds: Bounds, occupancy: _Occupancy,
            rng: np.random.Generator) -> tuple[list[Mesh], list[tuple[np.ndarray, Mesh, Trajectory]]]:
    """Parked cars (and, in town, a few construction barriers) in free slots near the drive.

    Parked cars are actors that stand still, not static geometry: they are cars, so they are annotated
    like every other car (a detector that learned to ignore parked cars would miss stopped traffic).
    Returns the barrier meshes and each parked car's (size, mesh, trajectory).
    """
    slots = layout.parking_slots(drive.ego_xy, bounds)
    if not slots:
        return [], []
    distance = np.array([d for _, _, d in slots])
    order = np.argsort(distance + rng.uniform(0.0, 40.0, len(slots)), kind='stable')
    order = order[distance[order] < 120.0]
    barriers = 0 if scenario.layout == 'highway' else int(rng.integers(2, 4))
    parts, cars = [], []
    for n, index in enumerate(order[:scenario.traffic.parked_cars + barriers]):
        xy, heading, _ = slots[index]
        if n < scenario.traffic.parked_cars:
            size = sample_actor_size('car', rng)
            knots = len(drive.knot_t)
            trajectory = Trajectory(drive.knot_t, np.tile(np.asarray(xy, np.float64), (knots, 1)),
                                    np.full(knots, float(heading)))
            cars.append((size, _car_mesh(size, rng.choice(_PAINTS)), trajectory))
        else:  # three blocks of a construction barrier along the kerb
            size = np.array([4.2, 0.45, 1.0])
            starts = np.array([-2.1, -0.6, 0.9])
            blocks = boxes_mesh(np.c_[starts, np.full(3, -0.2), np.zeros(3)],
                                np.c_[starts + 1.2, np.full(3, 0.2), np.ones(3)], 'barrier')
            parts.append(_placed(blocks, xy, heading))
        occupancy.add(np.asarray(xy, np.float64), np.float64(heading), _inflated_half('static', size))
    return parts, cars


# ----------------------------------------------------------------------------------------------
# The world.
# ----------------------------------------------------------------------------------------------

def _ego_trajectory(layout: _Layout, scenario: Scenario,
                    knot_t: np.ndarray) -> tuple[_Path, np.ndarray, np.ndarray, np.ndarray]:
    """The ego's path, arc length, positions and headings at the knot times."""
    path, s_anchor, t_anchor = layout.ego_route()
    route = path.route
    if scenario.ego_speed <= 0:
        s = np.full(len(knot_t), s_anchor)
    else:
        t_tab, s_tab = _pass_times(route, _Dynamics(scenario.ego_speed, 2.0, 2.5), [])
        shift = t_anchor - float(np.interp(s_anchor, s_tab, t_tab))
        s = np.interp(knot_t - shift, t_tab, s_tab)
    xy, yaw = route.at(s)
    return path, s, xy, yaw


def generate_world(scenario: Scenario, seed: int) -> World:
    """The world of a scenario: the same ``(scenario, seed)`` always gives identical arrays."""
    layout_rng, static_rng, parked_rng, traffic_rng = np.random.default_rng(seed).spawn(4)
    layout = _make_layout(scenario, layout_rng)

    n_knots = math.ceil((scenario.duration_s + 2 * LEAD_S) * KNOT_RATE_HZ) + 1
    knot_t = -LEAD_S + np.arange(n_knots) / KNOT_RATE_HZ
    ego_path, ego_s, ego_xy, ego_yaw = _ego_trajectory(layout, scenario, knot_t)
    layout.time_signals(ego_path, ego_s, knot_t)
    layout.set_near(ego_xy)
    in_scene = np.flatnonzero((knot_t >= 0) & (knot_t <= scenario.duration_s))
    drive = _Drive(knot_t, ego_xy, in_scene)

    lo, hi = ego_xy.min(axis=0) - GROUND_MARGIN, ego_xy.max(axis=0) + GROUND_MARGIN
    bounds = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    static = layout.static_scene(bounds, ego_xy, static_rng)

    occupancy = _Occupancy(n_knots)
    occupancy.add(ego_xy, ego_yaw, _inflated_half('ego', np.array(EGO_SIZE)))
    # Parked cars are placed first (traffic must avoid them) but numbered after the traffic, so that
    # changing how many are parked leaves the moving actors' ids alone.
    barriers, parked = _parked(scenario, layout, drive, bounds, occupancy, parked_rng)
    static += barriers
    moving = _traffic(scenario, layout, drive, occupancy, traffic_rng)
    actors = moving + tuple(Actor(len(moving) + 1 + i, 'car', size, mesh, trajectory)
                            for i, (size, mesh, trajectory) in enumerate(parked))
    return World(seed=seed, static=Mesh.merge(static), actors=actors, ego=Trajectory(knot_t, ego_xy, ego_yaw),
                 ego_size=np.array(EGO_SIZE), duration_s=scenario.duration_s)
