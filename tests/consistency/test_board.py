"""The health board over frames: which monitor hears what, and when."""

from __future__ import annotations

import dataclasses

import numpy as np

from mmfusion_ros.config import load_config
from mmfusion_ros.consistency.board import HealthBoard
from mmfusion_ros.frame import RADAR_FIELDS, Frame
from mmfusion_ros.types import NS_PER_S, RigidTransform


def test_a_radar_scan_repeated_in_frames_is_no_news_and_silence_counts_from_its_stamp():
    """20 Hz frames carry each 13 Hz scan of radar_front (ages in float32 seconds, as frames hold them)
    until it stops; silent once 1.6 periods have passed since its last scan, not since a frame showed it."""
    config = load_config()
    board = HealthBoard(config)
    names = tuple(config.sensors_of('radar'))
    index = names.index('radar_front')
    period = NS_PER_S / 13
    scans = [round(i * period) for i in range(20)]  # about 1.5 s of scans, then none
    mount = RigidTransform.from_matrix(np.eye(4))
    rng = np.random.default_rng(0)
    silent_at = None
    for k in range(50):
        now = k * NS_PER_S // 20
        newest = max((s for s in scans if s <= now), default=None)
        radar = np.zeros((12, len(RADAR_FIELDS)), np.float32)
        radar[:, 0] = rng.uniform(5, 40, 12)
        radar[:, 1] = rng.uniform(-5, 5, 12)
        if newest is None or now - newest > 5 * period:
            radar, source = None, None
        else:
            radar[:, -1] = np.float32((now - newest) / NS_PER_S)
            source = np.full(12, index, np.int16)
        frame = Frame(now, 'base_link', radar=radar, radar_sensor=source, radar_sensors=names,
                      sensor_to_base={'radar_front': mount})
        estimate = board.update(frame)['radar_front']
        if 'silent' in estimate.conditions and silent_at is None:
            silent_at = now
        if newest is not None and now - scans[-1] <= 1.6 * period:
            assert 'silent' not in estimate.conditions, (k, estimate)
    assert silent_at is not None
    assert 1.6 * period < silent_at - scans[-1] <= 1.6 * period + NS_PER_S / 20


def test_sensors_in_trouble_and_lost_lidar_sectors():
    from mmfusion_ros.consistency.health import HealthEstimate

    board = HealthBoard(load_config())
    mount = RigidTransform.from_matrix(np.eye(4))
    board.mounts['lidar_top'] = mount
    sector = {'sector_start_deg': 150.0, 'sector_end_deg': -150.0}
    board.last = {
        'cam_front': HealthEstimate('cam_front', 'camera', 'degraded', 0.6, ('overexposed',), {}),
        'cam_back': HealthEstimate('cam_back', 'camera', 'ok', 1.0, ('warming_up',), {}),
        'lidar_top': HealthEstimate('lidar_top', 'lidar', 'degraded', 0.8, ('sector_loss',), sector),
        'radar_front': HealthEstimate('radar_front', 'radar', 'failed', 0.0, ('silent',), {}),
    }
    # A lidar that only lost a sector is judged per object in the sector, not everywhere.
    assert board.degraded_sensors() == {'cam_front': 'camera', 'radar_front': 'radar'}
    assert board.lost_lidar_sectors() == {'lidar_top': (mount, 150.0, -150.0)}
    assert board.blind_radars() == ['radar_front']
    board.last['lidar_top'] = HealthEstimate('lidar_top', 'lidar', 'degraded', 0.5, ('sector_loss', 'beam_loss'), sector)
    assert board.degraded_sensors()['lidar_top'] == 'lidar'
    # An occluded camera's patch, where that is its only trouble (else the whole camera is in trouble).
    patch = {'occluded_x0': 0.1, 'occluded_y0': 0.4, 'occluded_x1': 0.5, 'occluded_y1': 0.9}
    board.last['cam_back'] = HealthEstimate('cam_back', 'camera', 'degraded', 0.7, ('occluded',), patch)
    assert board.occluded_regions() == {'cam_back': (0.1, 0.4, 0.5, 0.9)}
    board.last['cam_back'] = HealthEstimate('cam_back', 'camera', 'degraded', 0.5, ('overexposed', 'occluded'), patch)
    assert board.occluded_regions() == {}
    # A camera whose calibration has drifted: its objects are flagged degraded:camera too.
    from mmfusion_ros.consistency.calibration import DriftEstimate

    board.calibration['cam_front_left'] = DriftEstimate('cam_front_left', np.array([0.0, 0.1, 1.1]), 12.0, 0.9,
                                                        'degraded', 6, 200, 'drifted')
    board.calibration['cam_front_right'] = DriftEstimate('cam_front_right', np.zeros(3), 1.0, 1.0, 'ok', 6, 200, '')
    assert board.degraded_sensors()['cam_front_left'] == 'camera' and 'cam_front_right' not in board.degraded_sensors()


def _street_frames(offset_ms: float, frames: int = 24, speed: float = 8.0):
    """20 Hz frames of a vehicle driving along x past standing walls and poles: a lidar sweep of them
    (and the ground), and radar_front's returns of them as a clock ``offset_ms`` late places them."""
    from mmfusion_ros.frame import LIDAR_FIELDS

    config = load_config()
    rng = np.random.default_rng(3)
    poles = np.repeat(rng.uniform([-20, -15], [70, 15], (30, 2)), 5, axis=0)
    walls = [np.column_stack([x0 + np.linspace(-4, 4, 60) * np.cos(a), y0 + np.linspace(-4, 4, 60) * np.sin(a)])
             for x0, y0, a in ((25.0, 8.0, 1.4), (40.0, -10.0, 1.7), (15.0, -9.0, 1.0), (55.0, 5.0, 1.57))]
    world = np.concatenate([poles, *walls])
    ground = np.column_stack([rng.uniform(-30, 30, (300, 2)), np.full(300, -1.8)])
    lidars, radars = tuple(config.sensors_of('lidar')), tuple(config.sensors_of('radar'))
    identity = RigidTransform.from_matrix(np.eye(4))
    mounts = {name: identity for name in (*lidars, *radars)}
    for k in range(frames):
        t = k / 20
        here = world - [speed * t, 0.0]
        surfaces = np.column_stack([np.repeat(here, 2, axis=0), np.tile([0.2, 1.5], len(here))])
        lidar = np.zeros((len(surfaces) + len(ground), len(LIDAR_FIELDS)), np.float32)
        lidar[:, :3] = np.concatenate([surfaces, ground])
        hits = here[rng.choice(len(here), 40, replace=False)] + rng.normal(0, 0.05, (40, 2))
        radar = np.zeros((40, len(RADAR_FIELDS)), np.float32)  # standing: compensated velocity 0
        radar[:, :2] = hits + [speed * offset_ms * 1e-3, 0.0]
        pose = RigidTransform(np.eye(3), np.array([speed * t, 0.0, 0.0]))
        yield Frame(round(t * NS_PER_S), 'base_link', lidar=lidar, radar=radar, pose=pose, sensor_to_base=mounts,
                    lidar_sensor=np.zeros(len(lidar), np.int16), lidar_sensors=lidars,
                    radar_sensor=np.full(40, radars.index('radar_front'), np.int16), radar_sensors=radars)


def test_a_late_radar_clock_is_called_from_its_returns_of_the_standing_world():
    board = HealthBoard(load_config())
    for frame in _street_frames(50.0):
        board.update(frame)
    estimate = board.calibration['radar_front']
    assert estimate.state == 'degraded' and abs(estimate.estimate - 50.0) <= 5.0
    assert board.states()['radar_front'] == 'degraded'
    assert board.degraded_sensors().get('radar_front') == 'radar'  # its objects are flagged degraded:radar
    board = HealthBoard(load_config())
    for frame in _street_frames(0.0):
        board.update(frame)
    assert board.calibration['radar_front'].state == 'ok' and abs(board.calibration['radar_front'].estimate) <= 5.0
    assert 'radar_front' not in board.degraded_sensors()


def _crossing_frames(offset_ms: float, frames: int = 24):
    """20 Hz frames of a vehicle waiting while two cars cross in front at 10 m/s: the lidar's sweep of
    them (and the ground), radar_front's returns on them from a scan 30 ms old that a clock
    ``offset_ms`` late took earlier still, and their tracked boxes."""
    from mmfusion_ros.frame import LIDAR_FIELDS
    from mmfusion_ros.types import Detections3D

    config = load_config()
    rng = np.random.default_rng(5)
    side, ones = np.linspace(-0.5, 0.5, 20), np.ones(20)
    outline = np.concatenate([np.column_stack([ones * 0.9, side * 4.5]), np.column_stack([ones * -0.9, side * 4.5]),
                              np.column_stack([side * 1.8, ones * 2.25]), np.column_stack([side * 1.8, ones * -2.25])])
    starts, velocities = np.array([[15.0, -15.0], [25.0, 15.0]]), np.array([[0.0, 10.0], [0.0, -10.0]])
    ground = np.column_stack([rng.uniform(-30, 30, (300, 2)), np.full(300, -1.8)])
    lidars, radars = tuple(config.sensors_of('lidar')), tuple(config.sensors_of('radar'))
    identity = RigidTransform.from_matrix(np.eye(4))
    mounts = {name: identity for name in (*lidars, *radars)}
    age = 0.03
    for k in range(frames):
        t = k / 20
        centres = starts + velocities * t
        bodies = [outline + c for c in centres]
        surfaces = np.concatenate([np.column_stack([np.repeat(b, 2, axis=0), np.tile([0.2, 1.5], len(b))]) for b in bodies])
        lidar = np.zeros((len(surfaces) + len(ground), len(LIDAR_FIELDS)), np.float32)
        lidar[:, :3] = np.concatenate([surfaces, ground])
        radar = np.zeros((16, len(RADAR_FIELDS)), np.float32)
        for i, (body, velocity) in enumerate(zip(bodies, velocities)):
            seen = body[rng.choice(len(body), 8, replace=False)] + rng.normal(0, 0.05, (8, 2))
            radar[8 * i:8 * i + 8, :2] = seen - velocity * (age + offset_ms * 1e-3)
            radar[8 * i:8 * i + 8, 3:5] = velocity  # compensated: it moves
        radar[:, 2] = 0.5
        radar[:, -1] = age
        tracked = Detections3D(round(t * NS_PER_S), 'base_link', np.column_stack([centres, np.zeros(2)]),
                               np.tile([4.5, 1.8, 1.6], (2, 1)), np.full(2, np.pi / 2), velocities, ('car', 'car'),
                               np.full(2, 0.9))
        yield Frame(round(t * NS_PER_S), 'base_link', lidar=lidar, radar=radar, pose=identity, sensor_to_base=mounts,
                    lidar_sensor=np.zeros(len(lidar), np.int16), lidar_sensors=lidars,
                    radar_sensor=np.full(16, radars.index('radar_front'), np.int16), radar_sensors=radars), tracked


def test_a_late_radar_clock_is_called_from_crossing_traffic_while_the_vehicle_waits():
    """The standing world shows no clock while the vehicle stands; the tracked cars crossing do."""
    from mmfusion_ros.config import CalibrationSection

    def run(offset_ms: float, config=load_config()):
        board = HealthBoard(config)
        for frame, tracked in _crossing_frames(offset_ms):
            board.update(frame)
            board.update_offsets(frame, tracked, np.ones(len(tracked), bool))
        return board

    board = run(50.0)
    estimate = board.calibration['radar_front']
    assert estimate.state == 'degraded' and abs(estimate.estimate - 50.0) <= 5.0 and estimate.frames == 10
    assert board.states()['radar_front'] == 'degraded'
    right = run(0.0).calibration['radar_front']
    assert right.state == 'ok' and abs(right.estimate) <= 5.0
    # Without the moving objects (calibration.static_offset_moving_objects: false) nothing is learnt.
    config = load_config()
    config = dataclasses.replace(config, calibration=CalibrationSection(static_offset_moving_objects=False))
    assert 'radar_front' not in run(50.0, config).calibration


def test_a_radar_scan_without_returns_is_news_not_a_lost_message():
    """radar_front sees nothing in every third scan (an open road): with the frames' scan stamps those
    scans still count as messages."""
    config = load_config()
    names = tuple(config.sensors_of('radar'))
    period = NS_PER_S / 13
    mount = RigidTransform.from_matrix(np.eye(4))

    def run(with_stamps: bool) -> list:
        board = HealthBoard(config)
        out = []
        for k in range(40):
            now = k * NS_PER_S // 20
            newest = int(now // period)
            scan_ns = round(newest * period)
            rows = 0 if newest % 3 == 2 else 8
            radar = np.zeros((rows, len(RADAR_FIELDS)), np.float32)
            radar[:, 0] = np.linspace(5, 40, rows)
            radar[:, -1] = np.float32((now - scan_ns) / NS_PER_S)
            frame = Frame(now, 'base_link', radar=radar, radar_sensor=np.zeros(rows, np.int16), radar_sensors=names,
                          sensor_to_base={'radar_front': mount},
                          scan_stamps={'radar_front': scan_ns} if with_stamps else {})
            out.append(board.update(frame)['radar_front'])
        return out

    assert all('rate_low' not in e.conditions and 'silent' not in e.conditions for e in run(True))
    # judged from the returns alone, the empty scans read as silence (here, one scan a frame) or losses
    assert any({'rate_low', 'silent'} & set(e.conditions) for e in run(False))


def test_the_direction_of_travel_projects_where_the_camera_sees_it():
    """Driving along base x: a camera looking ahead has its focus of expansion at the principal point, one
    looking to the left at infinity along its image rows; unknown speed gives no focus."""
    from mmfusion_ros.frame import CameraView
    from mmfusion_ros.types import CameraIntrinsics

    k = np.array([[300.0, 0, 200], [0, 300.0, 110], [0, 0, 1]])
    intrinsics = CameraIntrinsics('cam', 400, 225, k, 'none', np.zeros(0))
    optical = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # optical axes (x right, y down, z ahead) -> base
    left = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # looking along +y, image x along +x
    board = HealthBoard(load_config())
    ahead = CameraView('cam', 0, np.zeros((225, 400, 3), np.uint8), intrinsics, RigidTransform(optical, np.zeros(3)))
    side = CameraView('cam', 0, np.zeros((225, 400, 3), np.uint8), intrinsics, RigidTransform(left, np.zeros(3)))
    assert board._travel_focus(ahead) is None
    board.ego_velocity = np.array([8.0, 0.0])
    focus = board._travel_focus(ahead)
    assert np.allclose(focus[:2] / focus[2], [200.0, 110.0])
    focus = board._travel_focus(side)
    assert abs(focus[2]) < 1e-9 and abs(focus[1]) < 1e-9 and focus[0] != 0  # at infinity along the rows


def test_camera_drift_is_updated_for_drift_cameras_per_frame_cameras_in_turn():
    """Two cameras a frame by default, in the frame's order, each with its newest image; 0: all of them."""
    from dataclasses import replace

    from mmfusion_ros.frame import LIDAR_FIELDS, CameraView
    from mmfusion_ros.sim.rig import Rig

    rig = Rig()
    config = load_config()
    names = list(config.sensors_of('camera'))
    rng = np.random.default_rng(5)
    lidar = np.zeros((2000, len(LIDAR_FIELDS)), np.float32)
    lidar[:, :3] = rng.uniform([-30, -30, -1], [30, 30, 3], (2000, 3))

    def frame(k: int) -> Frame:
        stamp = k * NS_PER_S // 20
        views = [CameraView(name, stamp, rng.integers(0, 255, (225, 400, 3), np.uint8), rig.camera.intrinsics(name),
                            rig.sensor_to_base(name)) for name in names]
        return Frame(stamp, 'base_link', cameras=views, lidar=lidar, lidar_sensor=np.zeros(2000, np.int16),
                     lidar_sensors=('lidar_top',), sensor_to_base={'lidar_top': rig.sensor_to_base('lidar_top')})

    board = HealthBoard(config)
    assert config.calibration.drift_cameras_per_frame == 2
    seen = []
    for k in range(3):
        board.update(frame(k))
        seen.append(sorted(board.calibration))
    assert seen == [sorted(names[:2]), sorted(names[:4]), sorted(names)]
    every = HealthBoard(replace(config, calibration=replace(config.calibration, drift_cameras_per_frame=0)))
    every.update(frame(0))
    assert sorted(every.calibration) == sorted(names)


def _repeated_image_frames(view_moves: bool, frames: int = 8, speed: float = 8.0):
    """20 Hz frames of a driving vehicle whose front camera sends one image again and again, and a lidar
    sweep of what the camera looks at: standing poles and walls ahead that come nearer (``view_moves``),
    or the back of a truck 6 m ahead that drives at the vehicle's speed and fills the view."""
    from mmfusion_ros.frame import LIDAR_FIELDS, CameraView
    from mmfusion_ros.types import CameraIntrinsics

    config = load_config()
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    intrinsics = CameraIntrinsics('cam_front', 160, 90, np.array([[80.0, 0, 80], [0, 80.0, 45], [0, 0, 1]]), 'none',
                                  np.zeros(0))
    optical_to_base = RigidTransform(np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]), np.zeros(3))
    grid = np.stack(np.meshgrid(np.linspace(-12, 12, 49), np.linspace(-1.5, 4, 23)), axis=-1).reshape(-1, 2)
    standing = np.column_stack([rng.uniform(12, 40, len(grid)), grid])  # poles and walls at 12-40 m
    truck = np.column_stack([np.full(len(grid), 6.0), grid])
    lidars = tuple(config.sensors_of('lidar'))
    for k in range(frames):
        t = k / 20
        points = standing - [speed * t, 0, 0] if view_moves else truck
        lidar = np.zeros((len(points), len(LIDAR_FIELDS)), np.float32)
        lidar[:, :3] = points
        pose = RigidTransform(np.eye(3), np.array([speed * t, 0.0, 0.0]))
        view = CameraView('cam_front', round(t * NS_PER_S), image, intrinsics, optical_to_base)
        yield Frame(round(t * NS_PER_S), 'base_link', cameras=(view,), lidar=lidar, pose=pose,
                    lidar_sensor=np.zeros(len(lidar), np.int16), lidar_sensors=lidars,
                    sensor_to_base={lidars[0]: RigidTransform.from_matrix(np.eye(4))})


def test_a_repeated_image_is_frozen_only_where_the_lidar_saw_the_view_move():
    for view_moves in (True, False):
        board = HealthBoard(load_config())
        states = [board.update(frame)['cam_front'] for frame in _repeated_image_frames(view_moves)]
        frozen = ['frozen' in e.conditions for e in states]
        if view_moves:  # the first repeat of the image is called at once
            assert frozen == [False] + [True] * (len(states) - 1), frozen
            assert states[-1].state == 'failed'
        else:  # a truck at the vehicle's speed filling the view: an unchanged image proves nothing
            assert not any(frozen) and all(e.state == 'ok' for e in states), [e.conditions for e in states]
