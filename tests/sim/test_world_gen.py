"""World generation: determinism, actors inside their boxes, collision-free traffic, seeing the scene."""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmfusion_ros.sim.scenario import Scenario, Traffic, load_scenario, scenario_names
from mmfusion_ros.sim.world import MATERIALS, STATIC, World, material_id
from mmfusion_ros.sim.world_gen import (
    EGO_SIZE,
    actor_mesh,
    box_mesh,
    cylinder_mesh,
    generate_world,
    sample_actor_size,
)

LAYOUTS = ('urban', 'highway', 'intersection')
VEHICLES = ('car', 'truck', 'bus')
SIZE_LIMITS = {  # (low, high) of length, width, height a class may have
    'car': ((3.8, 1.6, 1.3), (5.2, 2.1, 1.9)),
    'truck': ((7.5, 2.3, 2.8), (10.5, 2.6, 3.6)),
    'bus': ((11.0, 2.4, 2.9), (13.0, 2.6, 3.5)),
    'pedestrian': ((0.3, 0.4, 1.4), (0.8, 0.8, 2.0)),
    'cyclist': ((1.5, 0.5, 1.5), (2.0, 0.8, 1.9)),
}
SPEED_LIMITS = {  # (lowest cruising, highest) speed in m/s, per layout kind
    ('town', 'car'): (5.0, 14.0), ('town', 'truck'): (5.0, 14.0), ('town', 'bus'): (5.0, 14.0),
    ('highway', 'car'): (20.0, 33.0), ('highway', 'truck'): (20.0, 33.0), ('highway', 'bus'): (20.0, 33.0),
    ('town', 'pedestrian'): (1.0, 1.8), ('highway', 'pedestrian'): (1.0, 1.8),
    ('town', 'cyclist'): (3.0, 7.0), ('highway', 'cyclist'): (3.0, 7.0),
}


@functools.lru_cache(maxsize=None)
def world_of(name: str, seed: int = 11) -> World:
    return generate_world(load_scenario(name), seed)


def corners(centre: np.ndarray, yaw: np.ndarray, half: np.ndarray) -> np.ndarray:
    """``(..., 4, 2)`` corners of rectangles."""
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * half
    x = centre[..., None, 0] + c * local[:, 0] - s * local[:, 1]
    y = centre[..., None, 1] + s * local[:, 0] + c * local[:, 1]
    return np.stack([x, y], -1)


def rectangles_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether rectangles given by corners ``(..., 4, 2)`` overlap: no edge normal separates them."""
    overlap = np.ones(a.shape[:-2], bool)
    for poly in (a, b):
        for i in range(2):
            edge = poly[..., i + 1, :] - poly[..., i, :]
            normal = np.stack([-edge[..., 1], edge[..., 0]], -1)[..., None, :]
            pa, pb = np.sum(a * normal, -1), np.sum(b * normal, -1)
            overlap &= (pa.max(-1) > pb.min(-1)) & (pb.max(-1) > pa.min(-1))
    return overlap


def footprints(world: World, times: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Corners ``(T, 4, 2)`` of every actor and of the ego at the given times."""
    actors = []
    for actor in world.actors:
        xy, yaw = actor.trajectory.pose(times)
        actors.append(corners(xy, yaw, actor.size[:2] / 2))
    xy, yaw = world.ego.pose(times)
    return actors, corners(xy, yaw, world.ego_size[:2] / 2)


def speeds(world: World, index: int, times: np.ndarray) -> np.ndarray:
    return np.linalg.norm(world.actors[index].trajectory.velocity(times), axis=1)


# -- determinism --------------------------------------------------------------------------------

@pytest.mark.parametrize('name', LAYOUTS)
def test_same_seed_gives_identical_arrays(name: str) -> None:
    a, b = generate_world(load_scenario(name), 5), generate_world(load_scenario(name), 5)
    for field in ('vertices', 'triangles', 'materials'):
        assert np.array_equal(getattr(a.static, field), getattr(b.static, field))
    assert np.array_equal(a.ego.xy, b.ego.xy) and np.array_equal(a.ego.yaw, b.ego.yaw)
    assert len(a.actors) == len(b.actors)
    for x, y in zip(a.actors, b.actors):
        assert (x.track_id, x.label) == (y.track_id, y.label)
        assert np.array_equal(x.size, y.size)
        assert np.array_equal(x.mesh.vertices, y.mesh.vertices)
        assert np.array_equal(x.mesh.materials, y.mesh.materials)
        assert np.array_equal(x.trajectory.times, y.trajectory.times)
        assert np.array_equal(x.trajectory.xy, y.trajectory.xy)
        assert np.array_equal(x.trajectory.yaw, y.trajectory.yaw)


@pytest.mark.parametrize('name', LAYOUTS)
def test_different_seeds_give_different_worlds(name: str) -> None:
    a, b = generate_world(load_scenario(name), 1), generate_world(load_scenario(name), 2)
    assert not np.array_equal(a.static.vertices, b.static.vertices)
    assert any(not np.array_equal(x.trajectory.xy, y.trajectory.xy) for x, y in zip(a.actors, b.actors))


def test_one_more_car_leaves_the_earlier_actors_of_bigger_classes_in_place() -> None:
    scenario = load_scenario('urban')
    traffic = dataclasses.replace(scenario.traffic, cars=scenario.traffic.cars + 1)
    more = dataclasses.replace(scenario, traffic=traffic)
    a, b = generate_world(scenario, 3), generate_world(more, 3)
    placed_before = scenario.traffic.buses + scenario.traffic.trucks + scenario.traffic.cars
    assert [x.label for x in b.actors].count('car') == [x.label for x in a.actors].count('car') + 1
    for x, y in zip(a.actors[:placed_before], b.actors[:placed_before]):
        assert x.label == y.label and np.array_equal(x.trajectory.xy, y.trajectory.xy)
    assert np.array_equal(a.static.vertices, b.static.vertices)


# -- actors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', LAYOUTS)
def test_counts_match_the_scenario_and_track_ids_are_one_to_n(name: str) -> None:
    world, traffic = world_of(name), load_scenario(name).traffic
    moving = traffic.cars + traffic.trucks + traffic.buses + traffic.pedestrians + traffic.cyclists
    labels = [a.label for a in world.actors[:moving]]
    assert {label: labels.count(label) for label in ('car', 'truck', 'bus', 'pedestrian', 'cyclist')} == {
        'car': traffic.cars, 'truck': traffic.trucks, 'bus': traffic.buses,
        'pedestrian': traffic.pedestrians, 'cyclist': traffic.cyclists}
    # Parked cars come after the traffic: annotated cars that never move.
    parked = world.actors[moving:]
    assert len(parked) == traffic.parked_cars
    assert all(a.label == 'car' and np.ptp(a.trajectory.xy, axis=0).max() == 0 for a in parked)
    assert [a.track_id for a in world.actors] == list(range(1, len(world.actors) + 1))


@pytest.mark.parametrize('name', LAYOUTS)
def test_actor_meshes_lie_inside_their_boxes_and_sizes_are_plausible(name: str) -> None:
    for actor in world_of(name).actors:
        L, W, H = actor.size
        v = actor.mesh.vertices
        tol = 1e-4
        assert np.all(np.abs(v[:, 0]) <= L / 2 + tol), (actor.label, np.abs(v[:, 0]).max(), L)
        assert np.all(np.abs(v[:, 1]) <= W / 2 + tol), (actor.label, np.abs(v[:, 1]).max(), W)
        assert np.all((v[:, 2] >= -tol) & (v[:, 2] <= H + tol)), (actor.label, v[:, 2].min(), v[:, 2].max(), H)
        # the mesh fills its box: the box is tight
        assert np.ptp(v[:, 0]) > 0.9 * L and np.ptp(v[:, 1]) > 0.8 * W and v[:, 2].max() > H - tol
        low, high = SIZE_LIMITS[actor.label]
        assert np.all(actor.size >= low) and np.all(actor.size <= high), (actor.label, actor.size)


@pytest.mark.parametrize('label', ['car', 'truck', 'bus', 'pedestrian', 'cyclist'])
def test_every_class_mesh_has_its_parts_materials(label: str) -> None:
    rng = np.random.default_rng(0)
    mesh = actor_mesh(label, sample_actor_size(label, rng), rng)
    names = {MATERIALS[m].name for m in np.unique(mesh.materials)}
    expected = {'car': {'glass', 'tire', 'lamp'}, 'truck': {'glass', 'tire', 'metal'}, 'bus': {'glass', 'tire'},
                'pedestrian': {'skin'}, 'cyclist': {'tire', 'skin'}}[label]
    assert expected <= names
    if label in VEHICLES:
        assert any(n.startswith('paint_') for n in names)


def test_paint_varies_between_cars() -> None:
    paints = set()
    for actor in world_of('urban').actors + world_of('highway').actors:
        if actor.label == 'car':
            paints |= {MATERIALS[m].name for m in actor.mesh.materials if MATERIALS[m].name.startswith('paint_')}
    assert len(paints) >= 4


def test_the_overlap_check_tells_touching_from_separate_rectangles() -> None:
    half = np.array([0.5, 0.5])
    square = corners(np.zeros(2), np.float64(0.0), half)
    at = [0.9, 1.1, 1.15, 1.3]
    straight = [rectangles_overlap(square, corners(np.array([x, 0.0]), np.float64(0.0), half)) for x in at]
    turned = [rectangles_overlap(square, corners(np.array([x, 0.0]), np.float64(np.pi / 4), half)) for x in at]
    assert straight == [True, False, False, False]
    assert turned == [True, True, True, False]


@pytest.mark.parametrize('name', LAYOUTS)
def test_no_two_actors_overlap_and_none_overlaps_the_ego(name: str) -> None:
    world = world_of(name)
    times = np.arange(0.0, world.duration_s, 0.1) + 0.03
    actors, ego = footprints(world, times)
    names = [f'{a.label} {a.track_id}' for a in world.actors]
    for i, a in enumerate(actors):
        hit = rectangles_overlap(a, ego)
        assert not hit.any(), f'{names[i]} hits the ego at t={times[hit][0]:.2f}'
        for j in range(i):
            hit = rectangles_overlap(a, actors[j])
            assert not hit.any(), f'{names[i]} and {names[j]} overlap at t={times[hit][0]:.2f}'


@pytest.mark.parametrize('name', LAYOUTS)
def test_speeds_stay_within_each_class_range(name: str) -> None:
    world = world_of(name)
    kind = 'highway' if name == 'highway' else 'town'
    times = np.arange(0.0, world.duration_s, 0.05)
    top_speeds: dict[str, list[float]] = {}
    for i, actor in enumerate(world.actors):
        low, high = SPEED_LIMITS[(kind, actor.label)]
        v = speeds(world, i, times)
        assert v.max() <= high + 1e-6, (actor.label, actor.track_id, v.max())
        if v.max() > 0.05:
            top_speeds.setdefault('vehicle' if actor.label in VEHICLES else actor.label, []).append(float(v.max()))
    # One actor may be seen only braking, waiting at a red light or turning, so cruising speeds are
    # checked per class: most vehicles reach theirs, and some of each vulnerable road user class.
    for group, top in top_speeds.items():
        low, high = SPEED_LIMITS[(kind, 'car' if group == 'vehicle' else group)]
        assert low <= (np.median(top) if group == 'vehicle' else max(top)) <= high, (group, top)
    walking = [speeds(world, i, times).max() for i, a in enumerate(world.actors) if a.label == 'pedestrian']
    assert max(walking, default=0.0) <= 2.0


@pytest.mark.parametrize('name', ['urban', 'intersection'])
def test_some_actors_stand_still_for_a_while(name: str) -> None:
    world = world_of(name)
    times = np.arange(0.0, world.duration_s, 0.05)
    still = [i for i in range(len(world.actors)) if np.sum(speeds(world, i, times) < 1e-3) * 0.05 >= 2.0]
    assert len(still) >= 2
    assert any(world.actors[i].label == 'pedestrian' for i in still)


@pytest.mark.parametrize('name', LAYOUTS)
def test_headings_follow_the_direction_of_motion(name: str) -> None:
    world = world_of(name)
    times = np.arange(0.0, world.duration_s, 0.1)
    for i, actor in enumerate(world.actors):
        v = actor.trajectory.velocity(times)
        _, yaw = actor.trajectory.pose(times)
        moving = np.linalg.norm(v, axis=1) > 0.5
        error = np.angle(np.exp(1j * (np.arctan2(v[moving, 1], v[moving, 0]) - yaw[moving])))
        assert np.all(np.abs(error) < 0.1), (actor.label, actor.track_id, np.abs(error).max())


@pytest.mark.parametrize('name', LAYOUTS)
def test_trajectories_are_dense_and_cover_the_scene(name: str) -> None:
    world = world_of(name)
    assert np.max(np.diff(world.ego.times)) <= 1 / 20 + 1e-9
    for trajectory in [world.ego] + [a.trajectory for a in world.actors]:
        assert trajectory.times[0] <= 0.0 and trajectory.times[-1] >= world.duration_s
        assert np.max(np.diff(trajectory.times)) <= 0.1 + 1e-9


@pytest.mark.parametrize('name', LAYOUTS)
def test_many_actors_come_within_sensor_range_of_the_ego(name: str) -> None:
    world = world_of(name)
    times = np.arange(0.0, world.duration_s, 0.25)
    ego_xy, _ = world.ego.pose(times)
    near = [np.min(np.linalg.norm(a.trajectory.pose(times)[0] - ego_xy, axis=1)) < 50.0 for a in world.actors]
    assert np.mean(near) >= 0.8


@pytest.mark.parametrize('name', LAYOUTS)
def test_vehicles_drive_on_the_road_and_pedestrians_never_on_traffic_lanes_outside_crossings(name: str) -> None:
    world = world_of(name)
    empty = World(world.seed, world.static, (), world.ego)  # the ground under the actors
    snapshot = empty.snapshot(0.0)
    times = np.arange(0.0, world.duration_s, 0.5)
    road = {material_id('asphalt'), material_id('lane_marking')}
    ego_xy, _ = world.ego.pose(times)
    for actor in world.actors:
        xy, _ = actor.trajectory.pose(times)
        xy = xy[np.linalg.norm(xy - ego_xy, axis=1) < 100.0]  # where the ground is sure to reach
        origins = np.c_[xy, np.full(len(xy), 0.5)]
        hits = snapshot.cast(origins, np.tile([0.0, 0.0, -1.0], (len(xy), 1)))
        under = set(hits.material.tolist())
        if actor.label in VEHICLES or actor.label == 'cyclist':
            assert under <= road, (actor.label, actor.track_id, [MATERIALS[m].name for m in under])
        elif name != 'highway':
            assert material_id('grass') not in under, (actor.track_id, [MATERIALS[m].name for m in under])


# -- ego ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', LAYOUTS)
def test_ego_drives_its_lane_at_the_scenario_speed(name: str) -> None:
    world, scenario = world_of(name), load_scenario(name)
    times = np.arange(0.0, world.duration_s, 0.05)
    v = np.linalg.norm(world.ego.velocity(times), axis=1)
    assert v.max() <= scenario.ego_speed + 1e-6
    assert np.median(v) == pytest.approx(scenario.ego_speed, rel=1e-3)
    assert np.array_equal(world.ego_size, EGO_SIZE)
    turned = world.ego.pose(world.duration_s)[1] - world.ego.pose(0.0)[1]
    if name == 'intersection':  # a left or right turn through the crossing, smoothly
        assert abs(abs(turned) - math.pi / 2) < 0.05
        assert np.max(np.abs(world.ego.yaw_rate(times))) < 1.0
    else:
        assert abs(turned) < 1e-6


def test_a_standing_ego_and_no_traffic() -> None:
    scenario = Scenario(layout='intersection', ego_speed=0.0, traffic=Traffic(0, 0, 0, 0, 0, 0))
    world = generate_world(scenario, 0)
    assert world.actors == ()
    assert np.ptp(world.ego.xy, axis=0).max() == 0.0
    assert len(world.static.triangles) > 0


# -- seeing the world ---------------------------------------------------------------------------

@pytest.mark.parametrize('name', LAYOUTS)
def test_the_ground_has_no_holes_within_60_m_of_the_route(name: str) -> None:
    world = world_of(name)
    route = world.ego.pose(np.linspace(0.0, world.duration_s, 81))[0]
    lo, hi = route.min(axis=0) - 60.0, route.max(axis=0) + 60.0
    gx, gy = np.meshgrid(np.arange(lo[0] + 0.37, hi[0], 1.3), np.arange(lo[1] + 0.11, hi[1], 1.3))
    points = np.c_[gx.ravel(), gy.ravel()]
    distance = np.min(np.linalg.norm(points[:, None] - route[None], axis=2), axis=1)
    points = points[distance <= 60.0]
    hits = world.snapshot(world.duration_s / 2).cast(np.c_[points, np.full(len(points), 2.0)],
                                                      np.tile([0.0, 0.0, -1.0], (len(points), 1)))
    holes = points[~np.isfinite(hits.distance)]
    assert len(holes) == 0, f'{len(holes)} rays miss, e.g. at {holes[:3]}'


@pytest.mark.parametrize('name', ['urban', 'intersection'])
def test_a_ray_fan_from_the_ego_sees_actors_and_structures(name: str) -> None:
    world = world_of(name)
    azimuth = np.linspace(-np.pi, np.pi, 1440, endpoint=False)
    directions = np.c_[np.cos(azimuth), np.sin(azimuth), np.zeros_like(azimuth)]
    for t in (1.0, 5.0, 10.0, 15.0, 19.0):
        xy, _ = world.ego.pose(t)
        origins = np.tile([xy[0], xy[1], 1.0], (len(azimuth), 1))
        hits = world.snapshot(t).cast(origins, directions)
        within = hits.distance < 60.0
        assert np.any(within & (hits.actor >= 0)), f'no actor within 60 m at t={t}'
        assert np.any(within & (hits.actor == STATIC)), f'no static structure within 60 m at t={t}'


# -- every named scenario -----------------------------------------------------------------------

@pytest.mark.parametrize('name', scenario_names())
def test_every_named_scenario_generates_quickly_with_a_modest_static_mesh(name: str) -> None:
    scenario = load_scenario(name)
    start = time.perf_counter()
    world = generate_world(scenario, 0)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f'{name}: {elapsed:.2f} s'
    assert 1000 < len(world.static.triangles) < 50_000
    assert world.duration_s == scenario.duration_s and world.seed == 0
    start = time.perf_counter()
    world.snapshot(1.0)
    assert time.perf_counter() - start < 0.2


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(LAYOUTS))
def test_any_seed_gives_collision_free_traffic_inside_its_boxes(seed: int, name: str) -> None:
    world = generate_world(load_scenario(name), seed)
    times = np.arange(0.0, world.duration_s, 0.2) + 0.07
    actors, ego = footprints(world, times)
    for i, a in enumerate(actors):
        assert not rectangles_overlap(a, ego).any()
        for j in range(i):
            assert not rectangles_overlap(a, actors[j]).any()
        v, (L, W, H) = world.actors[i].mesh.vertices, world.actors[i].size
        assert np.all(np.abs(v[:, :2]) <= np.array([L, W]) / 2 + 1e-4) and np.all(v[:, 2] <= H + 1e-4)


# -- mesh primitives ----------------------------------------------------------------------------

@pytest.mark.parametrize('make', [
    lambda: box_mesh((2.0, 1.0, 0.5), (1.0, -2.0, 3.0), 'metal'),
    lambda: cylinder_mesh(0.4, 0.3, (1.0, -2.0, 3.0), 'y', 'tire'),
    lambda: cylinder_mesh(0.4, 2.0, (1.0, -2.0, 3.0), 'x', 'metal', sides=6),
    lambda: cylinder_mesh(0.1, 7.0, (1.0, -2.0, 3.0), 'z', 'metal'),
])
def test_primitives_wind_counter_clockwise_seen_from_outside(make) -> None:
    mesh = make()
    v = mesh.vertices.astype(np.float64)[mesh.triangles]  # (T, 3, 3)
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    outward = v.mean(axis=1) - np.array([1.0, -2.0, 3.0])
    assert np.all(np.sum(normal * outward, axis=1) > 0)
