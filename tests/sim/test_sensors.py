"""Sensor models against small hand-built worlds whose geometry and motion are known exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mmfusion_ros.sim.rig import CameraModel, LidarModel, RadarModel, Rig
from mmfusion_ros.sim.sensors import (
    RADAR_SOURCE_FIELDS,
    lidar_directions,
    project_to_camera,
    render_camera,
    render_lidar,
    render_radar,
    sensor_pose,
)
from mmfusion_ros.sim.world import MATERIALS, Actor, Mesh, Trajectory, World, material_id
from mmfusion_ros.types import RigidTransform

WALL_X = 40.0  # the near face of the wall across the road, in map


def box_mesh(size: tuple[float, float, float], material: str, at: tuple[float, float, float] = (0, 0, 0)) -> Mesh:
    """A closed box, origin at the centre of its bottom face, moved to ``at``."""
    length, width, height = size
    x, y = np.array([-0.5, 0.5]) * length, np.array([-0.5, 0.5]) * width
    vertices = np.array([[x[i], y[j], z] for z in (0.0, height) for j in (0, 1) for i in (0, 1)]) + at
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    triangles = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    return Mesh(vertices, np.array(triangles), np.full(12, material_id(material)))


def quad(x: tuple[float, float], y: tuple[float, float], z: float, material: str) -> Mesh:
    vertices = np.array([[x[0], y[0], z], [x[1], y[0], z], [x[1], y[1], z], [x[0], y[1], z]])
    return Mesh(vertices, np.array([[0, 1, 2], [0, 2, 3]]), np.full(2, material_id(material)))


def straight(start: tuple[float, float], velocity: tuple[float, float], duration: float = 4.0) -> Trajectory:
    times = np.linspace(0.0, duration, int(duration * 20) + 1)
    xy = np.array(start) + times[:, None] * np.array(velocity)
    heading = np.arctan2(velocity[1], velocity[0]) if np.any(velocity) else 0.0
    return Trajectory(times, xy, np.full(len(times), heading))


def actor(index: int, label: str, size: tuple[float, float, float], material: str, trajectory: Trajectory) -> Actor:
    return Actor(index, label, np.array(size), box_mesh(size, material), trajectory)


def ground() -> list[Mesh]:
    return [quad((-300, 300), (-300, 300), 0.0, 'asphalt'), quad((-300, 300), (1.7, 1.85), 0.01, 'lane_marking')]


def make_world(actors: tuple[Actor, ...] = (), static: list[Mesh] | None = None,
               ego_speed: float = 10.0, ego: Trajectory | None = None) -> World:
    static = ground() if static is None else static
    return World(seed=0, static=Mesh.merge(static), actors=actors,
                 ego=ego if ego is not None else straight((0.0, 0.0), (ego_speed, 0.0)))


def small_rig(**models: object) -> Rig:
    defaults = {'camera': CameraModel(width=160, height=90),
                'lidar': LidarModel(beams=16, azimuth_steps=360, elevation_deg=(-25.0, 10.0)),
                'radar': RadarModel()}
    return Rig(**{**defaults, **models})


def to_map(world: World, rig: Rig, sensor: str, times: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points of the sensor frame, each at its own time, into map."""
    rotation, origin = sensor_pose(world, rig, sensor, times)
    return np.einsum('nij,nj->ni', rotation, points.astype(np.float64)) + origin


# -- lidar -------------------------------------------------------------------------------------

def wall_world(ego_speed: float) -> World:
    wall = box_mesh((1.0, 60.0, 8.0), 'building', (WALL_X + 0.5, 0.0, 0.0))
    return make_world(static=ground() + [wall], ego_speed=ego_speed)


def test_lidar_points_lie_on_the_wall_and_ground_with_per_point_poses() -> None:
    rig = small_rig()
    world = wall_world(ego_speed=20.0)
    t_start = 0.5
    cloud, actor = render_lidar(world, rig, 'lidar_top', t_start, np.random.default_rng(1))
    sigma = rig.lidar.range_noise
    times = t_start + cloud.field('time').astype(np.float64)
    points = to_map(world, rig, 'lidar_top', times, cloud.xyz)
    assert np.all(actor == -1)

    on_wall = (np.abs(points[:, 0] - WALL_X) < 0.5) & (points[:, 2] > 0.3)
    assert on_wall.sum() > 200, on_wall.sum()
    # Range residual along each ray: the noise itself, Gaussian with the configured sigma.
    _, origins = sensor_pose(world, rig, 'lidar_top', times[on_wall])
    rays = points[on_wall] - origins
    measured = np.linalg.norm(rays, axis=1)
    expected = (WALL_X - origins[:, 0]) / (rays[:, 0] / measured)
    residual = measured - expected
    assert abs(residual.mean()) < 0.2 * sigma
    assert 0.85 * sigma < residual.std() < 1.15 * sigma
    assert np.abs(residual).max() < 5 * sigma

    on_ground = (points[:, 2] < 0.3) & (points[:, 0] < WALL_X - 1)
    assert on_ground.sum() > 500
    assert np.abs(points[on_ground, 2]).max() < 5 * sigma + 0.01  # lane markings sit 1 cm up


def test_lidar_motion_distortion_shows_with_one_pose_per_sweep() -> None:
    rig = small_rig(lidar=LidarModel(beams=16, azimuth_steps=360, elevation_deg=(-25.0, 10.0), range_noise=0.01))
    world = wall_world(ego_speed=20.0)
    t_start = 0.5
    cloud, _ = render_lidar(world, rig, 'lidar_top', t_start, np.random.default_rng(2))
    times = t_start + cloud.field('time').astype(np.float64)
    per_point = to_map(world, rig, 'lidar_top', times, cloud.xyz)
    one_pose = to_map(world, rig, 'lidar_top', np.full(len(times), t_start), cloud.xyz)
    wall = (np.abs(per_point[:, 0] - WALL_X) < 0.3) & (per_point[:, 2] > 0.5)
    assert wall.sum() > 100
    # The wall is ahead, so it is scanned mid-sweep: 20 m/s x 25 ms = 0.5 m of travel the single
    # pose ignores.
    assert np.abs(per_point[wall, 0] - WALL_X).max() < 0.06
    offset = np.abs(one_pose[wall, 0] - WALL_X)
    assert np.median(offset) > 0.35
    np.testing.assert_allclose(one_pose[wall, 0] - per_point[wall, 0], -20.0 * (times[wall] - t_start), atol=1e-3)


def test_lidar_fields_rings_times_and_counts() -> None:
    model = LidarModel(beams=16, azimuth_steps=360, elevation_deg=(-25.0, 10.0), dropout=0.1)
    rig = small_rig(lidar=model)
    room = [quad((-25, 25), (-25, 25), 0.0, 'asphalt'), box_mesh((50.0, 50.0, 10.0), 'building', (0, 0, 0))]
    world = make_world(static=room, ego=straight((0.0, 0.0), (0.0, 0.0)))
    sweep_s = 0.1
    cloud, actor = render_lidar(world, rig, 'lidar_top', 1.0, np.random.default_rng(3), sweep_s=sweep_s)
    rays = model.beams * model.azimuth_steps
    # Every ray hits the room, so only dropout removes points: binomial around rays x (1 - dropout).
    expected, spread = rays * (1 - model.dropout), np.sqrt(rays * model.dropout * (1 - model.dropout))
    assert abs(len(cloud) - expected) < 5 * spread
    ring, time, intensity = cloud.field('ring'), cloud.field('time'), cloud.field('intensity')
    assert ring.dtype == np.uint16 and time.dtype == np.float32 and intensity.dtype == np.float32
    assert ring.min() == 0 and ring.max() == model.beams - 1
    assert time.min() >= 0 and time.max() < sweep_s
    assert 0 <= intensity.min() and intensity.max() <= 255
    assert len(actor) == len(cloud) and cloud.frame_id == 'lidar_top'
    assert cloud.stamp_ns == 1_000_000_000
    # Each point's direction matches its beam elevation and the azimuth its firing time implies.
    elevation, _ = lidar_directions(rig)
    xyz = cloud.xyz.astype(np.float64)
    np.testing.assert_allclose(np.arcsin(xyz[:, 2] / np.linalg.norm(xyz, axis=1)), elevation[ring], atol=1e-5)
    azimuth = np.pi - 2 * np.pi * time.astype(np.float64) / sweep_s
    difference = np.angle(np.exp(1j * (np.arctan2(xyz[:, 1], xyz[:, 0]) - azimuth)))
    assert np.abs(difference).max() < 1e-4


def test_lidar_ranges_intensity_and_actor_labels() -> None:
    rig = small_rig()
    car = actor(0, 'car', (4.5, 1.9, 1.5), 'paint_white', straight((15.0, -4.0), (5.0, 0.0)))
    world = make_world((car,), ego_speed=5.0)
    cloud, labels = render_lidar(world, rig, 'lidar_top', 0.0, np.random.default_rng(4))
    distance = np.linalg.norm(cloud.xyz, axis=1)
    assert distance.min() >= rig.lidar.min_range and distance.max() <= rig.lidar.max_range
    assert np.count_nonzero(labels == 0) > 20
    # Points labelled with the car lie inside its box at the snapshot time (mid-sweep).
    times = cloud.field('time').astype(np.float64)
    points = to_map(world, rig, 'lidar_top', times, cloud.xyz)[labels == 0]
    centre, _, _ = car.box_at(0.025)
    assert np.all(np.abs(points - centre) <= car.size / 2 + 0.1)
    # Lane marking returns are brighter than asphalt ones.
    intensity = cloud.field('intensity')
    on_ground = np.abs(to_map(world, rig, 'lidar_top', times, cloud.xyz)[:, 2]) < 0.1
    marking = on_ground & (np.abs(to_map(world, rig, 'lidar_top', times, cloud.xyz)[:, 1] - 1.775) < 0.05)
    assert marking.sum() > 3
    assert np.median(intensity[marking]) > 3 * np.median(intensity[on_ground & ~marking])


# -- camera ------------------------------------------------------------------------------------

def camera_world(material: str = 'paint_red') -> tuple[World, Actor]:
    car = actor(0, 'car', (4.5, 1.9, 1.5), material, straight((20.0, 0.0), (5.0, 0.0)))
    lamp = box_mesh((0.5, 0.5, 0.5), 'lamp', (30.0, 8.0, 5.0))
    return make_world((car,), static=ground() + [lamp], ego_speed=5.0), car


def test_camera_paints_the_actor_where_it_projects() -> None:
    rig = small_rig()
    world, car = camera_world()
    t = 1.0
    image = render_camera(world.snapshot(t), world, rig, 'cam_front', t)
    assert image.shape == (90, 160, 3) and image.dtype == np.uint8
    centre, _, _ = car.box_at(t)
    # The rear face (towards the camera) and its corners pulled 15% towards the face centre.
    length, width, height = car.size
    face = np.array([centre[0] - length / 2, centre[1], height / 2])
    corners = face + np.array([[0, sy * width / 2, sz * height / 2] for sy in (-1, 1) for sz in (-1, 1)]) * 0.85
    uv, depth = project_to_camera(np.vstack([centre, face, corners]), world, rig, 'cam_front', t)
    assert np.all(depth > 0)
    pixels = np.round(uv).astype(int)
    assert np.all((pixels >= 0) & (pixels < [160, 90]))
    colours = image[pixels[:, 1], pixels[:, 0]].astype(int)
    red, green, blue = colours.T
    assert np.all(red > 1.6 * green) and np.all(red > 1.6 * blue), colours
    asphalt = image[85, 80].astype(int)  # just in front of the car, on the road
    assert np.ptp(asphalt) < 12 and 60 < asphalt.mean() < 160, asphalt
    sky = image[2, 5].astype(int)
    assert sky[2] > sky[0] + 20 and sky.mean() > asphalt.mean(), sky
    # Pixels outside the car's projected outline are not red.
    assert not np.any((image[:, :, 0] > 1.6 * image[:, :, 1]) & (np.arange(90)[:, None] < uv[:, 1].min() - 8))


def test_camera_night_is_dark_but_lamps_and_headlit_objects_show() -> None:
    rig = small_rig()
    world, car = camera_world('paint_white')
    t = 1.0
    snapshot = world.snapshot(t)
    day = render_camera(snapshot, world, rig, 'cam_front', t, lighting='day')
    night = render_camera(snapshot, world, rig, 'cam_front', t, lighting='night')
    assert night.mean() < 0.3 * day.mean()
    assert night[2, 5].max() < 25  # sky near black
    lamp_uv, _ = project_to_camera(np.array([[30.25, 8.0, 5.25]]), world, rig, 'cam_front', t)
    u, v = np.round(lamp_uv[0]).astype(int)
    assert night[v, u].min() > 200
    # The white car 12 m ahead is lit by the headlights; the same car seen by the rear camera is not.
    centre, _, _ = car.box_at(t)
    uv, _ = project_to_camera(centre[None], world, rig, 'cam_front', t)
    u, v = np.round(uv[0]).astype(int)
    assert night[v, u].mean() > 120
    behind = dataclasses.replace(car, trajectory=straight((-20.0, 0.0), (5.0, 0.0)))
    world_behind = dataclasses.replace(world, actors=(behind,), static=Mesh.merge(ground()))  # no street lamp
    back = render_camera(world_behind.snapshot(t), world_behind, rig, 'cam_back', t, lighting='night')
    centre, _, _ = behind.box_at(t)
    uv, _ = project_to_camera(centre[None], world_behind, rig, 'cam_back', t)
    u, v = np.round(uv[0]).astype(int)
    assert back[v, u].mean() < 35  # ambient light only


def test_camera_pose_error_moves_the_image() -> None:
    rig = small_rig()
    world, _ = camera_world()
    snapshot = world.snapshot(1.0)
    nominal = render_camera(snapshot, world, rig, 'cam_front', 1.0)
    # A yaw of the optical frame about its y axis (down) shifts the scene sideways by f * tan(angle).
    angle = np.radians(3.0)
    turn = RigidTransform(np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                                    [-np.sin(angle), 0, np.cos(angle)]]), np.zeros(3))
    drifted = render_camera(snapshot, world, rig, 'cam_front', 1.0, pose_error=turn)
    focal = rig.camera.intrinsics('cam_front').k[0, 0]
    # Looking further right, the car appears further left in the image.
    red = [np.mean(np.nonzero((im[:, :, 0] > 1.6 * im[:, :, 1]) & (im[:, :, 0] > 60))[1]) for im in (nominal, drifted)]
    assert red[0] - red[1] == pytest.approx(focal * np.tan(angle), abs=1.0)


def test_project_to_camera_marks_points_behind() -> None:
    rig = small_rig()
    world, _ = camera_world()
    uv, depth = project_to_camera(np.array([[-10.0, 0.0, 1.0], [30.0, 0.0, 1.5]]), world, rig, 'cam_front', 0.0)
    assert depth[0] < 0 and np.all(np.isnan(uv[0]))
    np.testing.assert_allclose(uv[1], [80.0, 45.0], atol=0.05)  # the optical axis, at camera height
    np.testing.assert_allclose(depth[1], 30.0 - 1.70, atol=1e-9)


def test_render_camera_rejects_unknown_lighting() -> None:
    rig = small_rig()
    world, _ = camera_world()
    with pytest.raises(ValueError, match="lighting 'dusk'"):
        render_camera(world.snapshot(0.0), world, rig, 'cam_front', 0.0, lighting='dusk')  # type: ignore[arg-type]


# -- radar -------------------------------------------------------------------------------------

def exact_radar(**changes: object) -> RadarModel:
    return dataclasses.replace(RadarModel(range_noise=0.0, azimuth_noise_deg=0.0, detection_probability=1.0,
                                          clutter_per_scan=0.0), **changes)


def test_radar_doppler_of_a_moving_car() -> None:
    rig = small_rig(radar=exact_radar())
    car = actor(0, 'car', (4.5, 1.9, 1.5), 'paint_blue', straight((25.0, 4.0), (6.0, -1.5)))
    behind = actor(1, 'car', (4.5, 1.9, 1.5), 'paint_blue', straight((-15.0, 0.0), (10.0, 0.0)))
    world = make_world((car, behind), ego_speed=10.0)
    t = 1.0
    sigma = rig.radar.doppler_noise
    rotation, origin = sensor_pose(world, rig, 'radar_front', t)
    sensor_velocity = np.array([10.0, 0.0, 0.0])
    car_velocity = np.array([6.0, -1.5, 0.0])
    checked = 0
    for seed in range(10):
        radar, labels = render_radar(world.snapshot(t), world, rig, 'radar_front', t, np.random.default_rng(seed))
        assert radar.source_fields == RADAR_SOURCE_FIELDS
        assert 1 not in labels  # behind the front radar
        mine = labels == 0
        assert 1 <= mine.sum() <= rig.radar.returns_per_object
        points = radar.xyz[mine].astype(np.float64) @ rotation.T + origin
        line = (points - origin) / np.linalg.norm(points - origin, axis=1, keepdims=True)
        np.testing.assert_allclose(radar.doppler[mine], line @ (car_velocity - sensor_velocity), atol=3 * sigma)
        bearing = radar.xyz[mine, :2] / np.linalg.norm(radar.xyz[mine, :2], axis=1, keepdims=True)
        np.testing.assert_allclose(radar.velocity[mine], bearing * radar.doppler[mine, None], atol=1e-5)
        compensated = np.einsum('ni,ni->n', radar.velocity_comp[mine].astype(np.float64), bearing)
        np.testing.assert_allclose(compensated, line @ car_velocity, atol=3 * sigma)
        checked += mine.sum()
    assert checked >= 10


def test_radar_static_pole_with_a_turning_ego() -> None:
    # The ego drives a circle of radius 20 m at 10 m/s: the mount's lever arm adds yaw-rate velocity.
    rig = small_rig(radar=exact_radar())
    times = np.linspace(0.0, 6.0, 601)
    heading = times * 10.0 / 20.0
    ego = Trajectory(times, np.stack([20.0 * np.sin(heading), 20.0 - 20.0 * np.cos(heading)], axis=1), heading)
    t = 1.0
    rotation, origin = sensor_pose(make_world(ego=ego), rig, 'radar_front', t)
    pole_xy = origin[:2] + rotation[:2, :2] @ np.array([15.0, -6.0])
    pole = box_mesh((0.3, 0.3, 5.0), 'metal', (pole_xy[0], pole_xy[1], 0.0))
    world = make_world(static=ground() + [pole], ego=ego)
    dt = 1e-4  # the mount's velocity by differencing its pose
    sensor_velocity = (sensor_pose(world, rig, 'radar_front', t + dt)[1]
                       - sensor_pose(world, rig, 'radar_front', t - dt)[1]) / (2 * dt)
    assert np.linalg.norm(sensor_velocity - np.r_[world.ego.velocity(t), 0.0]) > 0.5
    radar, labels = render_radar(world.snapshot(t), world, rig, 'radar_front', t, np.random.default_rng(0))
    assert len(radar) >= 1 and np.all(labels == -1)
    points = radar.xyz.astype(np.float64) @ rotation.T + origin
    np.testing.assert_allclose(points[:, :2], np.broadcast_to(pole_xy, (len(radar), 2)), atol=0.3)
    line = (points - origin) / np.linalg.norm(points - origin, axis=1, keepdims=True)
    sigma = rig.radar.doppler_noise
    np.testing.assert_allclose(radar.doppler, -(line @ sensor_velocity), atol=3 * sigma)
    np.testing.assert_allclose(np.linalg.norm(radar.velocity_comp, axis=1), 0.0, atol=3 * sigma)
    assert np.all(np.abs(radar.rcs - 5.0) < 4 * 2.5)


def test_radar_returns_stay_inside_the_field_of_view_and_range() -> None:
    rig = small_rig(radar=RadarModel(clutter_per_scan=20.0))
    actors = tuple(actor(i, 'car', (4.5, 1.9, 1.5), 'paint_red', straight((x, y), (0.0, 0.0)))
                   for i, (x, y) in enumerate([(20, 0), (15, 25), (5, -30), (60, 10), (-20, 0), (150, 0)]))
    world = make_world(actors, ego_speed=0.0)
    for sensor in ('radar_front', 'radar_front_left', 'radar_back_right'):
        radar, _ = render_radar(world.snapshot(0.0), world, rig, sensor, 0.0, np.random.default_rng(5))
        assert len(radar) > 0
        azimuth = np.degrees(np.arctan2(radar.xyz[:, 1], radar.xyz[:, 0]))
        assert np.all(np.abs(azimuth) <= rig.radar.hfov_deg / 2 + 1e-3)
        assert np.all(np.linalg.norm(radar.xyz, axis=1) <= rig.radar.max_range + 5 * rig.radar.range_noise)
        assert np.all(radar.xyz[:, 2] == 0)
    radar, labels = render_radar(world.snapshot(0.0), world, rig, 'radar_front', 0.0, np.random.default_rng(6))
    assert 4 not in labels and 5 not in labels  # behind, and beyond max range
    # Clutter and the ground are static: with the ego standing still everything has zero doppler.
    static = labels == -1
    assert np.all(np.abs(radar.doppler[static]) < 5 * rig.radar.doppler_noise)


def test_radar_rcs_ordering_by_class() -> None:
    rig = small_rig(radar=exact_radar())
    actors = (actor(0, 'truck', (8.0, 2.5, 3.2), 'paint_white', straight((22.0, -6.0), (0.0, 0.0))),
              actor(1, 'car', (4.5, 1.9, 1.5), 'paint_red', straight((22.0, 0.0), (0.0, 0.0))),
              actor(2, 'pedestrian', (0.6, 0.6, 1.75), 'cloth_dark', straight((22.0, 6.0), (0.0, 0.0))))
    world = make_world(actors, ego_speed=0.0)
    snapshot = world.snapshot(0.0)
    rcs: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for seed in range(20):
        radar, labels = render_radar(snapshot, world, rig, 'radar_front', 0.0, np.random.default_rng(seed))
        for index in rcs:
            rcs[index].extend(radar.rcs[labels == index].tolist())
    means = [np.mean(rcs[index]) for index in (0, 1, 2)]
    assert all(len(rcs[index]) >= 20 for index in rcs)
    assert means[0] > means[1] > means[2], means


def test_radar_detection_probability_and_clutter_counts() -> None:
    rig = small_rig(radar=RadarModel(detection_probability=0.5, clutter_per_scan=3.0))
    car = actor(0, 'car', (4.5, 1.9, 1.5), 'paint_red', straight((20.0, 0.0), (0.0, 0.0)))
    world = make_world((car,), ego_speed=0.0)
    snapshot = world.snapshot(0.0)
    seen, clutter = 0, 0
    for seed in range(200):
        radar, labels = render_radar(snapshot, world, rig, 'radar_front', 0.0, np.random.default_rng(seed))
        seen += int(np.any(labels == 0))
        clutter += int(np.sum(labels == -1))
    assert 70 <= seen <= 130
    assert 480 <= clutter <= 720


# -- all sensors -------------------------------------------------------------------------------

def test_empty_world_gives_sky_no_points_and_only_clutter() -> None:
    rig = small_rig()
    world = make_world(static=[])
    snapshot = world.snapshot(0.0)
    image = render_camera(snapshot, world, rig, 'cam_front', 0.0)
    assert np.all(image[:, :, 2] > image[:, :, 0])  # sky everywhere
    cloud, actor = render_lidar(world, rig, 'lidar_top', 0.0, np.random.default_rng(0))
    assert len(cloud) == 0 and len(actor) == 0 and set(cloud.fields) == {'intensity', 'ring', 'time'}
    radar, labels = render_radar(snapshot, world, rig, 'radar_front', 0.0, np.random.default_rng(0))
    assert np.all(labels == -1) and np.all(np.isfinite(radar.doppler))


def test_same_seed_same_output() -> None:
    rig = small_rig()
    car = actor(0, 'car', (4.5, 1.9, 1.5), 'paint_red', straight((15.0, -4.0), (5.0, 1.0)))
    world = make_world((car,), ego_speed=8.0)
    snapshot = world.snapshot(0.3)

    def run(seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        cloud, lidar_actor = render_lidar(world, rig, 'lidar_top', 0.3, rng, snapshot=snapshot)
        radar, radar_actor = render_radar(snapshot, world, rig, 'radar_front', 0.3, rng)
        image = render_camera(snapshot, world, rig, 'cam_front', 0.3, rng=rng)
        return [cloud.xyz, *cloud.fields.values(), lidar_actor, radar.xyz, radar.doppler, radar.rcs,
                radar.velocity, radar.velocity_comp, radar_actor, image]

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert np.array_equal(render_camera(snapshot, world, rig, 'cam_front', 0.3),
                          render_camera(snapshot, world, rig, 'cam_front', 0.3))


def test_materials_table_is_what_the_models_assume() -> None:
    names = {m.name for m in MATERIALS}
    assert {'asphalt', 'lane_marking', 'sidewalk', 'grass', 'metal', 'barrier', 'lamp'} <= names


def test_generated_world_smoke() -> None:
    world_gen = pytest.importorskip('mmfusion_ros.sim.world_gen')
    generate_world = getattr(world_gen, 'generate_world', None)
    if generate_world is None:
        pytest.skip('mmfusion_ros.sim.world_gen has no generate_world yet')
    from mmfusion_ros.sim.scenario import load_scenario

    scenario = load_scenario('urban')
    rig = small_rig()
    world = generate_world(dataclasses.replace(scenario, rig=rig), 0)
    t = 2.0
    snapshot = world.snapshot(t)
    rng = np.random.default_rng(0)
    image = render_camera(snapshot, world, rig, 'cam_front', t, lighting=scenario.lighting)
    cloud, _ = render_lidar(world, rig, 'lidar_top', t, rng, snapshot=snapshot)
    radar, _ = render_radar(snapshot, world, rig, 'radar_front', t, rng)
    assert image.std() > 5 and len(cloud) > 1000 and len(radar) >= 1
