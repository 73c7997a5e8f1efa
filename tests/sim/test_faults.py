from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmfusion_ros.errors import ConfigError, DecodeError
from mmfusion_ros.msgs.decode import decode_diagnostics
from mmfusion_ros.msgs.encode import encode_diagnostics
from mmfusion_ros.sim.faults import (
    FAULT_MODALITIES,
    FAULT_TYPES,
    FaultInjector,
    FaultSchedule,
    FaultSpec,
    affected_objects,
    default_beams,
    fault_preset_names,
    fault_statuses,
    load_faults,
    parse_fault_statuses,
    pose_error,
    stamp_offset_ns,
)
from mmfusion_ros.sim.rig import Rig
from mmfusion_ros.types import DiagnosticStatus, PointCloud, RadarPoints, RigidTransform

RIG = Rig()


def injector(*faults: FaultSpec, seed: int = 7) -> FaultInjector:
    return FaultInjector(FaultSchedule(faults).for_rig(RIG), seed, RIG)


def image(seed: int = 0, height: int = 60, width: int = 80) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 200, (height, width, 3), dtype=np.uint8)


def sweep(beams: int = 32, steps: int = 90, radius: float = 20.0) -> PointCloud:
    """A lidar sweep on a sphere: one point per (ring, azimuth step), ring 0 lowest."""
    ring, step = np.meshgrid(np.arange(beams), np.arange(steps), indexing='ij')
    elevation = np.radians(np.linspace(-30.0, 10.0, beams))[ring.ravel()]
    azimuth = np.radians(-180.0 + 360.0 * (step.ravel() + 0.5) / steps)
    xyz = radius * np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                             np.sin(elevation)], axis=1)
    n = len(xyz)
    fields = {'intensity': np.linspace(0.1, 0.9, n).astype(np.float32),
              'ring': ring.ravel().astype(np.uint16),
              'time': np.linspace(0.0, 0.05, n).astype(np.float32)}
    return PointCloud(1, 'lidar_top', xyz, fields)


def scan(count: int = 12) -> RadarPoints:
    rng = np.random.default_rng(3)
    xyz = np.stack([rng.uniform(5, 60, count), rng.uniform(-20, 20, count), rng.uniform(0, 1, count)], 1)
    return RadarPoints(1, 'radar_front', xyz, rng.normal(0, 5, count), rng.normal(5, 3, count),
                       rng.normal(0, 3, (count, 2)), rng.normal(0, 3, (count, 2)),
                       fields={'snr': rng.uniform(5, 30, count).astype(np.float32)})


def spec(type_: str, sensor: str, start: float = 1.0, end: float = 2.0, **params) -> FaultSpec:
    return FaultSpec(type_, sensor, start, end, **params)


# --- cameras ---------------------------------------------------------------------------------------


def test_blackout_makes_the_image_black_only_while_active():
    inj = injector(spec('camera_blackout', 'cam_front'))
    pixels = image()
    out = inj.camera('cam_front', 1.5, pixels)
    assert out.shape == pixels.shape and out.dtype == np.uint8 and not out.any()
    assert np.array_equal(inj.camera('cam_front', 2.0, pixels), pixels)  # end is exclusive
    assert np.array_equal(inj.camera('cam_back', 1.5, pixels), pixels)  # other sensors untouched
    assert pixels.any()  # the input is never modified


def test_frozen_repeats_the_first_frame_of_the_fault_then_recovers():
    inj = injector(spec('camera_frozen', 'cam_front', 1.0, 2.0))
    frames = [image(seed) for seed in range(5)]
    assert np.array_equal(inj.camera('cam_front', 0.9, frames[0]), frames[0])
    assert np.array_equal(inj.camera('cam_front', 1.0, frames[1]), frames[1])
    assert np.array_equal(inj.camera('cam_front', 1.5, frames[2]), frames[1])
    assert np.array_equal(inj.camera('cam_front', 1.9, frames[3]), frames[1])
    assert np.array_equal(inj.camera('cam_front', 2.0, frames[4]), frames[4])


def test_occlusion_changes_only_the_region():
    inj = injector(spec('camera_occlusion', 'cam_front', region=(0.25, 0.5, 0.75, 1.0)))
    pixels = image(height=60, width=80)
    out = inj.camera('cam_front', 1.0, pixels)
    changed = np.any(out != pixels, axis=2)
    inside = np.zeros_like(changed)
    inside[30:60, 20:60] = True
    assert not changed[~inside].any()
    assert changed[inside].mean() > 0.95
    assert out[inside].mean() < pixels[inside].mean()  # dark mud
    assert np.array_equal(inj.camera('cam_front', 1.5, pixels), out)  # the patch stays put


def test_glare_brightens_and_saturates():
    inj = injector(spec('camera_glare', 'cam_front', intensity=0.6))
    pixels = image()
    out = inj.camera('cam_front', 1.0, pixels)
    assert out.dtype == np.uint8 and out.shape == pixels.shape
    assert out.mean() > pixels.mean() + 40
    assert (out == 255).mean() > 0.1 and not (pixels == 255).any()


# --- lidar -----------------------------------------------------------------------------------------


@pytest.mark.parametrize('sector', [(-30.0, 30.0), (150.0, -150.0), (90.0, 180.0), (-200.0, -100.0)])
def test_sector_dropout_removes_exactly_the_sector(sector):
    cloud = sweep()
    fault = spec('lidar_sector_dropout', 'lidar_top', sector_deg=sector)
    out = injector(fault).lidar('lidar_top', 1.0, cloud)
    xyz = cloud.xyz.astype(np.float64)
    azimuth = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))  # the sector is half-open: [from, to)
    width = (sector[1] - sector[0]) % 360
    inside = (azimuth - sector[0]) % 360 < width
    assert 0 < inside.sum() < len(cloud)
    assert np.array_equal(out.xyz, cloud.xyz[~inside])
    for name, values in cloud.fields.items():
        assert out.fields[name].dtype == values.dtype
        assert np.array_equal(out.fields[name], values[~inside])


def test_sector_across_180_degrees_takes_both_ends():
    xyz = np.array([[-10.0, 0.1, 0], [-10.0, -0.1, 0], [10.0, 0.0, 0], [0.0, 10.0, 0]], np.float32)
    cloud = PointCloud(1, 'lidar_top', xyz, {'ring': np.zeros(4, np.uint16)})
    out = injector(spec('lidar_sector_dropout', 'lidar_top', sector_deg=(170.0, -170.0))).lidar(
        'lidar_top', 1.0, cloud)
    assert np.array_equal(out.xyz, xyz[2:])


def test_beam_loss_removes_exactly_those_rings():
    cloud = sweep()
    out = injector(spec('lidar_beam_loss', 'lidar_top', beams=(3, 17, 31))).lidar('lidar_top', 1.5, cloud)
    keep = ~np.isin(cloud.fields['ring'], (3, 17, 31))
    assert np.array_equal(out.xyz, cloud.xyz[keep])
    assert set(np.unique(out.fields['ring'])) == set(range(32)) - {3, 17, 31}
    assert out.fields['ring'].dtype == np.uint16


def test_beam_loss_defaults_to_every_other_upper_beam():
    assert default_beams(32) == tuple(range(16, 32, 2))
    schedule = FaultSchedule((spec('lidar_beam_loss', 'lidar_top'),)).for_rig(RIG)
    assert schedule.faults[0].beams == default_beams(RIG.lidar.beams)
    out = FaultInjector(FaultSchedule((spec('lidar_beam_loss', 'lidar_top'),)), 1, RIG).lidar(
        'lidar_top', 1.0, sweep())
    assert not np.isin(out.fields['ring'], default_beams(32)).any()


def test_rain_adds_noise_dropouts_and_near_scatter():
    cloud = sweep(radius=20.0)
    out = injector(spec('lidar_rain', 'lidar_top', intensity=0.8)).lidar('lidar_top', 1.0, cloud)
    ranges = np.linalg.norm(out.xyz.astype(np.float64), axis=1)
    on_sphere = np.abs(ranges - 20.0) < 0.5
    assert on_sphere.sum() < 0.9 * len(cloud)  # dropouts
    assert np.std(ranges[on_sphere] - 20.0) > 0.1  # range noise, far above float rounding
    near = ranges < RIG.lidar.min_range + 7.0 + 1e-3
    assert near.sum() > 0.02 * len(cloud)  # scatter
    assert ranges[near].min() >= RIG.lidar.min_range - 1e-3
    assert out.xyz.dtype == np.float32 and np.isfinite(out.xyz).all()
    for name, values in cloud.fields.items():
        assert out.fields[name].dtype == values.dtype and len(out.fields[name]) == len(out)
    assert set(np.unique(out.fields['ring'])) <= set(range(32))
    assert np.isfinite(out.fields['intensity']).all()


def test_lidar_without_active_faults_is_untouched():
    cloud = sweep()
    inj = injector(spec('lidar_rain', 'lidar_top', 1.0, 2.0))
    assert inj.lidar('lidar_top', 0.5, cloud) is cloud


# --- radar -----------------------------------------------------------------------------------------


def test_radar_silence_drops_only_within_the_window():
    inj = injector(spec('radar_silence', 'radar_front', 1.0, 2.0))
    times = np.arange(0.0, 3.0, 1 / 13)
    dropped = [inj.drop('radar_front', t) for t in times]
    assert dropped == [1.0 <= t < 2.0 for t in times]
    assert not any(inj.drop('radar_back_left', t) for t in times)


def test_ghosts_are_added_and_the_real_returns_kept():
    real = scan()
    out = injector(spec('radar_ghost_targets', 'radar_front', intensity=1.0)).radar('radar_front', 1.0, real)
    n = len(real)
    assert len(out) > n
    for name in ('xyz', 'doppler', 'rcs', 'velocity', 'velocity_comp'):
        assert np.array_equal(getattr(out, name)[:n], getattr(real, name))
        assert getattr(out, name).dtype == np.float32
    assert np.array_equal(out.fields['snr'][:n], real.fields['snr'])
    ghosts = out.xyz[n:]
    assert np.isfinite(ghosts).all() and np.isfinite(out.rcs[n:]).all() and np.isfinite(out.doppler[n:]).all()
    assert np.linalg.norm(ghosts[:, :2], axis=1).max() <= RIG.radar.max_range + 1e-3
    assert np.all(np.abs(np.degrees(np.arctan2(ghosts[:, 1], ghosts[:, 0]))) <= RIG.radar.hfov_deg / 2 + 1e-3)


def test_ghosts_on_an_empty_scan():
    empty = RadarPoints(1, 'radar_front', np.zeros((0, 3)), **RadarPoints.unmeasured(0),
                        fields={'snr': np.zeros(0, np.float32)})
    out = injector(spec('radar_ghost_targets', 'radar_front', intensity=1.0)).radar('radar_front', 1.0, empty)
    assert len(out.fields['snr']) == len(out)


# --- pose and stamps -------------------------------------------------------------------------------


@pytest.mark.parametrize('rotation', [(0.0, 0.0, 2.0), (0.5, 0.0, 0.0), (0.0, -3.0, 0.0)])
def test_pose_error_has_the_requested_angle(rotation):
    error = pose_error((spec('extrinsic_drift', 'lidar_top', rotation_deg=rotation),), RIG)
    angle = math.degrees(math.acos(np.clip((np.trace(error.rotation) - 1) / 2, -1, 1)))
    assert abs(angle - max(map(abs, rotation))) < 1e-9


def test_pose_error_composes_drifts_and_keeps_body_axes_for_cameras():
    drifts = (spec('extrinsic_drift', 'cam_front', rotation_deg=(0.0, 0.0, 1.0)),
              spec('extrinsic_drift', 'cam_front', rotation_deg=(0.0, 0.0, 1.5), translation_m=(0.1, 0, 0)))
    error = pose_error(drifts, RIG)
    angle = math.degrees(math.acos(np.clip((np.trace(error.rotation) - 1) / 2, -1, 1)))
    assert abs(angle - 2.5) < 1e-9
    nominal = RIG.sensor_to_base('cam_front')
    true = nominal @ error
    # The optical axis (z) turns left, about base z, by 2.5 deg; the mount moves 10 cm forward in the
    # frame the first drift left it in (transforms compose: first 1 deg, then 1.5 deg and 10 cm).
    axis = true.rotation[:, 2]
    assert abs(math.degrees(math.atan2(axis[1], axis[0])) - 2.5) < 1e-9
    first = math.radians(1.0)
    shift = true.translation - nominal.translation
    assert np.allclose(shift, [0.1 * math.cos(first), 0.1 * math.sin(first), 0])
    assert pose_error((spec('time_offset', 'cam_front'),), RIG) is None


def test_pose_error_matches_roll_pitch_yaw():
    error = pose_error((spec('extrinsic_drift', 'radar_front', rotation_deg=(1.2, -0.7, 0.9)),), RIG)
    r, p, y = np.radians([1.2, -0.7, 0.9])
    expected = (RigidTransform.from_quaternion([0, 0, math.sin(y / 2), math.cos(y / 2)], np.zeros(3))
                @ RigidTransform.from_quaternion([0, math.sin(p / 2), 0, math.cos(p / 2)], np.zeros(3))
                @ RigidTransform.from_quaternion([math.sin(r / 2), 0, 0, math.cos(r / 2)], np.zeros(3)))
    assert np.allclose(error.rotation, expected.rotation, atol=1e-12)


def test_stamp_offset_sums_the_active_offsets():
    assert stamp_offset_ns(()) == 0
    assert stamp_offset_ns((spec('time_offset', 'cam_front', offset_ms=20.5),)) == 20_500_000
    assert stamp_offset_ns((spec('time_offset', 'lidar_top', offset_ms=-150.0),
                            spec('dropped_messages', 'lidar_top'))) == -150_000_000


# --- dropped messages and determinism --------------------------------------------------------------


def test_dropped_messages_rate_and_determinism():
    fault = spec('dropped_messages', 'cam_front', 0.0, 1000.0, drop_probability=0.3)
    times = np.arange(4000) * 0.05
    first = [injector(fault, seed=11).drop('cam_front', t) for t in times[:50]]
    inj = injector(fault, seed=11)
    drops = np.array([inj.drop('cam_front', t) for t in times])
    n, p = len(times), 0.3
    assert abs(drops.sum() - n * p) < 5 * math.sqrt(n * p * (1 - p))
    assert drops[:50].tolist() == first
    other = injector(fault, seed=12)
    assert [other.drop('cam_front', t) for t in times[:200]] != drops[:200].tolist()


def test_results_do_not_depend_on_the_order_sensors_are_rendered():
    faults = (spec('dropped_messages', 'cam_front', 0.0, 10.0, drop_probability=0.5),
              spec('dropped_messages', 'cam_back', 0.0, 10.0, drop_probability=0.5),
              spec('lidar_rain', 'lidar_top', 0.0, 10.0),
              spec('radar_ghost_targets', 'radar_front', 0.0, 10.0))
    cloud, real = sweep(steps=30), scan()
    times = np.arange(0.0, 2.0, 0.1)

    def run(order):
        inj = injector(*faults, seed=5)
        seen = {}
        for t in times:
            for sensor in order:
                if sensor == 'lidar_top':
                    seen[sensor, t] = inj.lidar(sensor, t, cloud).xyz
                elif sensor == 'radar_front':
                    seen[sensor, t] = inj.radar(sensor, t, real).xyz
                else:
                    seen[sensor, t] = inj.drop(sensor, t)
        return seen

    forward = run(['cam_front', 'cam_back', 'lidar_top', 'radar_front'])
    backward = run(['radar_front', 'lidar_top', 'cam_back', 'cam_front'])
    for key, value in forward.items():
        assert np.array_equal(value, backward[key]), key


# --- which objects -------------------------------------------------------------------------------


def test_affected_objects_for_a_camera():
    centers = np.array([[0.0, 0.0, 10.0], [0.0, 0.0, -10.0], [100.0, 0.0, 5.0], [-3.0, 2.0, 8.0]])
    ids = ('ahead', 'behind', 'outside', 'lower_left')
    blackout = spec('camera_blackout', 'cam_front')
    assert affected_objects(blackout, centers, ids, RIG) == ('ahead', 'lower_left')
    occlusion = spec('camera_occlusion', 'cam_front', region=(0.0, 0.5, 0.5, 1.0))
    assert affected_objects(occlusion, centers, ids, RIG) == ('lower_left',)
    drift = spec('extrinsic_drift', 'cam_front')
    assert affected_objects(drift, centers, ids, RIG) == ('ahead', 'lower_left')


def test_affected_objects_for_lidar_and_radar():
    centers = np.array([[20.0, 0.0, 0.0], [-20.0, 1.0, 0.0], [0.0, 200.0, 0.0], [30.0, 40.0, 0.0]])
    ids = ('front', 'back', 'far', 'front_left')
    sector = spec('lidar_sector_dropout', 'lidar_top', sector_deg=(150.0, -150.0))
    assert affected_objects(sector, centers, ids, RIG) == ('back',)
    rain, silence = spec('lidar_rain', 'lidar_top'), spec('radar_silence', 'radar_front')
    assert affected_objects(rain, centers, ids, RIG) == ('front', 'back', 'front_left')
    assert affected_objects(silence, centers, ids, RIG) == ('front', 'front_left')


# --- recording -----------------------------------------------------------------------------------


def test_fault_statuses_round_trip_through_diagnostics():
    start_ns = 1_700_000_000_000_000_000
    faults = [(spec('camera_occlusion', 'cam_front', 1.5, 4.25, region=(0.1, 0.2, 0.3, 0.4)), ('7', '12')),
              (spec('lidar_beam_loss', 'lidar_top', beams=(1, 5)), ()),
              (spec('extrinsic_drift', 'radar_front', rotation_deg=(0.1, 0.2, 1.0 / 3.0)), ('3',)),
              (spec('radar_silence', 'radar_back_left'), ('1', '2', '3'))]
    statuses = fault_statuses(faults, start_ns)
    assert [s.name for s in statuses] == [
        'fault/camera_occlusion/cam_front', 'fault/lidar_beam_loss/lidar_top',
        'fault/extrinsic_drift/radar_front', 'fault/radar_silence/radar_back_left']
    assert all(s.level == DiagnosticStatus.WARN and s.message for s in statuses)
    assert statuses[0].hardware_id == 'cam_front'
    keys = [k for k, _ in statuses[0].values]
    assert keys == ['type', 'sensor', 'start_ns', 'end_ns', 'object_ids', 'region']
    other = DiagnosticStatus(DiagnosticStatus.OK, 'sync', 'fine')
    stamp, decoded = decode_diagnostics(encode_diagnostics(start_ns + 2 * 10**9, [*statuses, other]))
    recorded = parse_fault_statuses(decoded)
    assert len(recorded) == 4
    occlusion = recorded[0]
    assert (occlusion.type, occlusion.sensor) == ('camera_occlusion', 'cam_front')
    assert (occlusion.start_ns, occlusion.end_ns) == (start_ns + 1_500_000_000, start_ns + 4_250_000_000)
    assert occlusion.object_ids == ('7', '12')
    for (fault, ids), record in zip(faults, recorded):
        assert record.params == fault.params
        assert record.object_ids == tuple(ids)


# --- loading -------------------------------------------------------------------------------------


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / 'faults.yaml'
    path.write_text(textwrap.dedent(body))
    return path


def test_a_fault_file_loads(tmp_path):
    path = write(tmp_path, """
        faults:
          - {type: camera_occlusion, sensor: cam_front, start_s: 1, end_s: 3, region: [0.1, 0.1, 0.4, 0.5]}
          - {type: lidar_beam_loss, sensor: lidar_top, start_s: 2.0, end_s: 4.0}
          - {type: time_offset, sensor: radar_front, start_s: 0, end_s: 30, offset_ms: 40}
    """)
    schedule = load_faults(path, RIG, duration_s=20.0)
    assert [f.type for f in schedule.faults] == ['camera_occlusion', 'lidar_beam_loss', 'time_offset']
    assert schedule.faults[0].start_s == 1.0 and isinstance(schedule.faults[0].start_s, float)
    assert schedule.faults[1].beams == default_beams(32)
    assert schedule.faults[2].end_s == 30.0  # a user file is not scaled
    assert schedule.active('cam_front', 2.0) == (schedule.faults[0],)
    assert schedule.active('cam_front', 3.0) == ()
    assert len(schedule.active_any(2.5)) == 3


@pytest.mark.parametrize(('item', 'message'), [
    ('{type: camera_blackout, sensor: cam_front, start_s: 1, end_s: 2, colour: red}',
     r'faults\.yaml: faults\[1\]\.colour: unknown parameter'),
    ('{type: camera_melt, sensor: cam_front, start_s: 1, end_s: 2}',
     r'faults\.yaml: faults\[1\]\.type: expected one of camera_blackout, .*got .camera_melt.'),
    ('{type: camera_blackout, sensor: cam_top, start_s: 1, end_s: 2}',
     r"faults\.yaml: faults\[1\]\.sensor: unknown sensor 'cam_top'; the rig has lidar_top, cam_front, "),
    ('{type: lidar_rain, sensor: cam_front, start_s: 1, end_s: 2}',
     r'faults\.yaml: faults\[1\]\.type: lidar_rain applies to lidar sensors \(lidar_top\), not to camera '
     r'cam_front'),
    ('{type: radar_silence, sensor: radar_front, start_s: 3, end_s: 3}',
     r'faults\.yaml: faults\[1\]\.end_s: must be after start_s'),
    ('{type: radar_silence, sensor: radar_front, start_s: -1, end_s: 3}',
     r'faults\.yaml: faults\[1\]\.start_s: must be >= 0'),
    ('{type: camera_blackout, sensor: cam_front, end_s: 3}',
     r'faults\.yaml: faults\[1\]\.start_s: required parameter is missing'),
    ('{type: camera_glare, sensor: cam_front, start_s: 1, end_s: 2, intensity: 1.5}',
     r'faults\.yaml: faults\[1\]\.intensity: must be within \(0, 1\]'),
    ('{type: camera_occlusion, sensor: cam_front, start_s: 1, end_s: 2, region: [0.5, 0, 0.2, 1]}',
     r'faults\.yaml: faults\[1\]\.region: needs 0 <= x0 < x1 <= 1'),
    ('{type: extrinsic_drift, sensor: cam_front, start_s: 1, end_s: 2, rotation_deg: [0, 12, 0]}',
     r'faults\.yaml: faults\[1\]\.rotation_deg: rotates by 12 deg, more than 10'),
    ('{type: time_offset, sensor: cam_front, start_s: 1, end_s: 2, offset_ms: 800}',
     r'faults\.yaml: faults\[1\]\.offset_ms: must be within \[-500, 500\]'),
    ('{type: dropped_messages, sensor: cam_front, start_s: 1, end_s: 2, drop_probability: 0}',
     r'faults\.yaml: faults\[1\]\.drop_probability: must be within \(0, 1\]'),
    ('{type: lidar_sector_dropout, sensor: lidar_top, start_s: 1, end_s: 2, sector_deg: [10, 370]}',
     r'faults\.yaml: faults\[1\]\.sector_deg: expected two angles in \[-360, 360\]'),
    ('{type: lidar_beam_loss, sensor: lidar_top, start_s: 1, end_s: 2, beams: [4, 32]}',
     r'faults\.yaml: faults\[1\]\.beams: ring 32 does not exist; the lidar has 32 beams'),
    ('{type: camera_blackout, sensor: cam_front, start_s: 1, end_s: 2, intensity: 0.9}',
     r'faults\.yaml: faults\[1\]\.intensity: does not apply to camera_blackout'),
    ('{type: camera_blackout, sensor: cam_front, start_s: 25, end_s: 26}',
     r'faults\.yaml: faults\[1\]\.start_s: 25 s is not within the 20 s scene'),
])
def test_bad_fault_files_name_the_file_and_key(tmp_path, item, message):
    path = write(tmp_path, f"""
        faults:
          - {{type: camera_frozen, sensor: cam_back, start_s: 0, end_s: 1}}
          - {item}
    """)
    with pytest.raises(ConfigError, match=message) as info:
        load_faults(path, RIG, duration_s=20.0)
    assert '\n' not in str(info.value)


def test_bad_top_level_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match=r'faults\.yaml: fault: unknown parameter; expected one of faults'):
        load_faults(write(tmp_path, 'fault: []\n'), RIG)
    with pytest.raises(ConfigError, match=r'faults\.yaml: expected a mapping with the key faults'):
        load_faults(write(tmp_path, '- 1\n'), RIG)
    with pytest.raises(ConfigError, match=r"unknown fault preset 'snowstorm'; presets: camera_blackout, "):
        load_faults('snowstorm', RIG)


def test_every_preset_loads_and_scales_to_the_scene():
    names = fault_preset_names()
    assert set(FAULT_TYPES) | {'none', 'mixed'} <= set(names)
    assert load_faults('none', RIG).faults == ()
    assert len(load_faults('mixed', RIG).faults) >= 3
    for name in names:
        schedule = load_faults(name, RIG)
        scaled = load_faults(name, RIG, duration_s=10.0)
        for fault, short in zip(schedule.faults, scaled.faults):
            assert 0 <= fault.start_s < fault.end_s <= 20.0
            assert short.start_s == pytest.approx(fault.start_s / 2)
            assert short.end_s == pytest.approx(fault.end_s / 2)
            if fault.type == 'extrinsic_drift':
                error = pose_error((fault,), RIG)
                angle = math.degrees(math.acos(np.clip((np.trace(error.rotation) - 1) / 2, -1, 1)))
                assert 0.5 <= angle <= 3.0
            if fault.type == 'time_offset':
                assert 20 <= abs(fault.offset_ms) <= 200
        if name in FAULT_TYPES:
            assert name in {f.type for f in schedule.faults}


def test_every_type_applies_to_its_modality():
    sensors = {'camera': 'cam_front', 'lidar': 'lidar_top', 'radar': 'radar_front'}
    for fault_type in FAULT_TYPES:
        for modality, sensor in sensors.items():
            schedule = FaultSchedule((FaultSpec(fault_type, sensor, 0.0, 1.0),))
            if modality in FAULT_MODALITIES[fault_type]:
                schedule.for_rig(RIG)
            else:
                with pytest.raises(ConfigError, match=rf'faults\[0\]\.type: {fault_type} applies to'):
                    schedule.for_rig(RIG)


def test_a_malformed_fault_status_is_a_decode_error():
    status = DiagnosticStatus(DiagnosticStatus.WARN, 'fault/time_offset/cam_front', 'x', 'cam_front',
                              (('type', 'time_offset'), ('sensor', 'cam_front'), ('start_ns', 'soon'),
                               ('end_ns', '5'), ('object_ids', ''), ('offset_ms', '40.0')))
    with pytest.raises(DecodeError, match=r'fault/time_offset/cam_front: malformed fault value'):
        parse_fault_statuses([status])
