"""Sensor health on synthetic streams, a real nuScenes sweep and images, and simulator recordings.

Synthetic cameras pan over a random texture with sensor noise; the synthetic lidar is a 32-beam,
1084-step spinner (the simulator's) over a ground plane inside a wall; radar scans are returns with
a support mask. Each condition must show within a few updates of its start and clear after it ends,
and healthy streams must raise nothing.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mmfusion_ros.config import FusionConfig, HealthSection, config_from_dict, load_config
from mmfusion_ros.consistency.health import (CONDITIONS, CameraHealth, HealthEstimate, LidarHealth, RadarHealth,
                                             _flow_texture_share,
                                             excess_p, health_monitors)
from mmfusion_ros.errors import ConfigError
from mmfusion_ros.types import NS_PER_S, DiagnosticStatus

T0 = 1_700_000_000 * NS_PER_S
CONFIG = HealthSection()


def stamp(i: int, rate_hz: float) -> int:
    return T0 + round(i * NS_PER_S / rate_hz)


def first(estimates: list[HealthEstimate], condition: str, start: int = 0) -> int | None:
    """Index of the first estimate from ``start`` on that reports ``condition``."""
    return next((i for i in range(start, len(estimates)) if condition in estimates[i].conditions), None)


def faults(estimate: HealthEstimate) -> tuple[str, ...]:
    return tuple(c for c in estimate.conditions if c != 'warming_up')


# ---------------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------------

class PanningCamera:
    """A camera panning over a textured world, ``step`` pixels per image, with Gaussian sensor noise."""

    def __init__(self, seed: int, shape: tuple[int, int] = (90, 160), step: int = 3, noise: float = 1.5) -> None:
        self.rng = np.random.default_rng(seed)
        self.shape, self.step, self.noise = shape, step, noise
        H, W = shape
        world = cv2.GaussianBlur(self.rng.uniform(0, 255, (H, W * 6)).astype(np.float32), (0, 0), 2.0)
        world = (world - world.mean()) / world.std() * 40 + 120
        tint = np.array([1.0, 0.95, 0.85], np.float32)
        self.world = np.clip(world[..., None] * tint, 0, 255)  # (H, 6W, 3) float32

    def image(self, i: int) -> np.ndarray:
        H, W = self.shape
        offset = (i * self.step) % (self.world.shape[1] - W)
        view = self.world[:, offset:offset + W] + self.rng.normal(0, self.noise, (H, W, 3))
        return np.clip(np.round(view), 0, 255).astype(np.uint8)


def mud(image: np.ndarray, region: tuple[float, float, float, float], seed: int = 7) -> np.ndarray:
    """``image`` under an opaque, textured, unchanging brown patch over the normalised region x0, y0, x1, y1."""
    H, W = image.shape[:2]
    x0, y0, x1, y1 = region
    rows, cols = slice(round(y0 * H), round(y1 * H)), slice(round(x0 * W), round(x1 * W))
    h, w = rows.stop - rows.start, cols.stop - cols.start
    rng = np.random.default_rng(seed)
    texture = cv2.resize(rng.uniform(0.55, 1.1, (max(2, h // 8), max(2, w // 8))).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC) * rng.uniform(0.85, 1.15, (h, w)).astype(np.float32)
    out = image.copy()
    out[rows, cols] = np.clip(texture[..., None] * np.array([0.36, 0.26, 0.15]) * 255, 0, 255).astype(np.uint8)
    return out


def glare(image: np.ndarray, intensity: float) -> np.ndarray:
    """The simulator's glare: over-exposure plus a bloom around a light in the upper image."""
    H, W = image.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    sigma = (0.12 + 0.25 * intensity) * math.hypot(W, H)
    bloom = np.exp(-((xx - 0.5 * W) ** 2 + (yy - 0.25 * H) ** 2) / (2 * sigma * sigma))[..., None]
    lit = image.astype(np.float32) * (1 + 0.8 * intensity) + 255 * (0.15 * intensity + 1.5 * intensity * bloom)
    return np.clip(lit, 0, 255).astype(np.uint8)


def run_camera(frames: list[np.ndarray | None], config: HealthSection = CONFIG, rate_hz: float = 12.0,
               **kwargs) -> list[HealthEstimate]:
    monitor = CameraHealth('cam_front', config, rate_hz=rate_hz)
    return [monitor.update(stamp(i, rate_hz), frame, **kwargs) for i, frame in enumerate(frames)]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_healthy_camera_raises_nothing(seed):
    camera = PanningCamera(seed)
    estimates = run_camera([camera.image(i) for i in range(100)])
    assert all(faults(e) == () and e.state == 'ok' and e.score == 1.0 for e in estimates)
    assert estimates[0].conditions == ('warming_up',)
    assert 'warming_up' not in estimates[-1].conditions
    assert estimates[-1].estimates['rate_hz'] == pytest.approx(12.0, abs=0.6)
    assert estimates[-1].estimates['occluded_fraction'] < CONFIG.occluded_fraction


def test_a_still_scene_with_sensor_noise_is_not_frozen():
    camera = PanningCamera(3, step=0)
    estimates = run_camera([camera.image(i) for i in range(40)])
    assert all(faults(e) == () for e in estimates)
    assert all(e.estimates['unchanged_frames'] == 0 for e in estimates)


def test_frozen_camera_at_the_first_repeated_image_and_cleared_after():
    camera = PanningCamera(4)
    images = [camera.image(i) for i in range(60)]
    start, end = 20, 40  # images[start] is the frame that repeats until end
    frames = images[:start] + [images[start]] * (end - start) + images[end:]
    estimates = run_camera(frames)
    seen = first(estimates, 'frozen')
    assert seen == start + 1  # the first image that repeats its predecessor
    assert all('frozen' in e.conditions and e.state == 'failed' and e.score == 0.0 for e in estimates[seen:end])
    assert estimates[end - 1].estimates['unchanged_frames'] == end - 1 - start
    assert estimates[end + CONFIG.clear_frames].conditions == ()
    assert first(estimates, 'frozen') == seen and first(estimates, 'occluded') is None


@pytest.mark.parametrize('view_changed', [True, None, False])
def test_a_repeated_image_of_a_view_that_did_not_move_is_not_frozen(view_changed):
    camera = PanningCamera(4)
    images = [camera.image(i) for i in range(30)]
    frames = images[:20] + [images[20]] * 10
    asked = []

    def view() -> bool | None:  # asked only for an image that repeats its predecessor (a projection's work)
        asked.append(True)
        return view_changed

    estimates = run_camera(frames, view_changed=view)
    assert len(asked) == 9  # the 9 repeats, never the 20 images that changed
    if view_changed is False:  # the view stood still: an unchanged image says nothing either way
        assert first(estimates, 'frozen') is None and estimates[-1].estimates['unchanged_frames'] == 9
    else:
        assert first(estimates, 'frozen') == 21


def test_blacked_out_camera_within_three_updates_and_cleared_after():
    camera = PanningCamera(5)
    rng = np.random.default_rng(0)
    dark = [np.clip(rng.normal(2, 1, (90, 160, 3)), 0, 255).astype(np.uint8) for _ in range(20)]  # a capped lens
    black = [np.zeros((90, 160, 3), np.uint8)] * 20  # the simulator's blackout: every pixel 0
    frames = [camera.image(i) for i in range(20)] + dark + black + [camera.image(i) for i in range(60, 80)]
    estimates = run_camera(frames)
    seen = first(estimates, 'blackout')
    assert seen is not None and 20 <= seen <= 23
    assert all(faults(e) == ('blackout',) and e.state == 'failed' for e in estimates[seen:60])
    assert estimates[59].estimates['mean_brightness'] == 0.0
    cleared = next(i for i in range(60, 80) if not faults(estimates[i]))
    assert cleared <= 60 + CONFIG.clear_frames
    # the black images are no reference for occlusion: it is judged again once the window refills
    assert 'warming_up' in estimates[cleared].conditions and 'warming_up' not in estimates[-1].conditions


@pytest.mark.parametrize('intensity, state', [(1.0, 'failed'), (0.7, 'failed'), (0.5, 'degraded'), (0.1, 'ok')])
def test_glare_overexposes(intensity, state):
    camera = PanningCamera(6)
    frames = [camera.image(i) for i in range(10)] + [glare(camera.image(i), intensity) for i in range(10, 30)]
    estimates = run_camera(frames)
    saturated = estimates[-1].estimates['saturated_fraction']
    assert estimates[-1].state == state
    if state == 'ok':
        assert saturated < CONFIG.overexposed_fraction and first(estimates, 'overexposed') is None
    else:
        assert 10 < first(estimates, 'overexposed') <= 13
        assert faults(estimates[-1]) == ('overexposed',)  # a near-white image is not also "frozen"
        assert estimates[-1].score == pytest.approx(1 - saturated)


def test_partial_glare_is_degraded():
    camera = PanningCamera(7)
    frames = [camera.image(i) for i in range(5)]
    for i in range(5, 20):
        image = camera.image(i)
        image[:40] = 255  # the top 44 % burnt out
        frames.append(image)
    estimates = run_camera(frames)
    assert faults(estimates[-1]) == ('overexposed',) and estimates[-1].state == 'degraded'
    assert estimates[-1].estimates['saturated_fraction'] == pytest.approx(40 / 90, abs=0.02)


@pytest.mark.parametrize('seed', [0, 1])
def test_textured_static_mud_in_a_moving_scene_is_occluded(seed):
    camera = PanningCamera(10 + seed)
    region = (0.25, 0.25, 0.75, 0.75)  # a quarter of the image (a fifth or more is an occlusion)
    start, end = 20, 60
    frames = [mud(camera.image(i), region) if start <= i < end else camera.image(i) for i in range(80)]
    estimates = run_camera(frames)
    seen = first(estimates, 'occluded')
    # The patch arrives: its blocks changed, then match the next occlusion_onset_images images; then
    # the verdict persists confirm_frames updates.
    assert seen is not None and start < seen <= start + CONFIG.occlusion_onset_images + CONFIG.confirm_frames - 1
    during = estimates[seen:end]
    assert all(faults(e) == ('occluded',) and e.state == 'degraded' for e in during)
    assert all(abs(e.estimates['occluded_fraction'] - 0.25) < 0.05 for e in during)
    # Where: the patch's bounds, to a block (a 32 x 18 grid).
    bounds = [during[-1].estimates[f'occluded_{k}'] for k in ('x0', 'y0', 'x1', 'y1')]
    assert bounds == pytest.approx(region, abs=1.5 / 18)
    assert during[-1].score == pytest.approx(1 - during[-1].estimates['occluded_fraction'])
    assert estimates[end + CONFIG.clear_frames].conditions == ()


def test_mud_there_from_the_start_is_found_over_the_whole_window():
    camera = PanningCamera(15)
    estimates = run_camera([mud(camera.image(i), (0.2, 0.3, 0.7, 0.8)) for i in range(30)])
    seen = first(estimates, 'occluded')  # no arrival to see: its blocks match occlusion_window images
    assert seen == CONFIG.occlusion_window + CONFIG.confirm_frames - 1
    late = run_camera([mud(camera.image(i), (0.2, 0.3, 0.7, 0.8)) for i in range(30)],
                      dataclasses.replace(CONFIG, occlusion_onset_images=0))
    assert first(late, 'occluded') == seen


def test_large_occlusion_fails_when_the_ego_is_known_to_move():
    camera = PanningCamera(12)
    frames = [camera.image(i) for i in range(10)] + [mud(camera.image(i), (0.0, 0.0, 0.8, 0.8)) for i in range(10, 30)]
    estimates = run_camera(frames, ego_moving=True)
    assert estimates[-1].state == 'failed' and faults(estimates[-1]) == ('occluded',)
    assert estimates[-1].estimates['occluded_fraction'] > 0.5


def test_occlusion_is_not_judged_while_the_scene_stands_still():
    still = PanningCamera(13, step=0)
    frames = [mud(still.image(i), (0.3, 0.3, 0.7, 0.7)) for i in range(40)]
    assert all(faults(e) == () for e in run_camera(frames))  # a parked car's still world is no mud
    moving = PanningCamera(14)
    frames = [mud(moving.image(i), (0.3, 0.3, 0.7, 0.7)) for i in range(40)]
    assert all(faults(e) == () for e in run_camera(frames, ego_moving=False))


def test_camera_silence_rate_and_repeated_messages():
    camera = PanningCamera(15)
    monitor = CameraHealth('cam_front', CONFIG, rate_hz=12.0)
    period = NS_PER_S / 12
    for i in range(30):
        estimate = monitor.update(stamp(i, 12.0), camera.image(i))
    again = monitor.update(stamp(29, 12.0), camera.image(29))  # the same message again: nothing new
    assert faults(again) == () and again.estimates['unchanged_frames'] == 0
    last = stamp(29, 12.0)
    # Updates every 50 ms without an image: silent once silent_periods periods have passed.
    states = [(k, monitor.update(last + k * 50_000_000, None)) for k in range(1, 10)]
    silent = [k for k, e in states if 'silent' in e.conditions]
    assert silent and silent[0] * 50e6 > CONFIG.silent_periods * period >= (silent[0] - 1) * 50e6
    assert states[-1][1].state == 'failed' and states[-1][1].score == 0.0
    assert states[-1][1].estimates['age_ms'] == pytest.approx(450.0)
    # Every other image lost: the rate halves.
    monitor = CameraHealth('cam_front', CONFIG, rate_hz=12.0)
    estimates = [monitor.update(stamp(i, 12.0), camera.image(i) if i % 2 == 0 else None) for i in range(60)]
    assert faults(estimates[-1]) == ('rate_low',) and estimates[-1].state == 'degraded'
    assert estimates[-1].estimates['rate_hz'] == pytest.approx(6.0, abs=0.6)
    assert first(estimates, 'silent') is None


def test_lost_messages_are_counted_from_the_gaps_at_once():
    """Messages lost now and then show in the intervals between those that come, long before the
    2 s rate window fills; one lost message, or jitter under 1.5 periods, is no fault."""
    camera = PanningCamera(15)
    period = NS_PER_S / 12
    monitor = CameraHealth('cam_front', CONFIG, rate_hz=12.0)
    lost = {5, 9}  # the 6th and 10th images never come
    estimates = [monitor.update(stamp(i, 12.0), None if i in lost else camera.image(i)) for i in range(14)]
    assert all('rate_low' not in e.conditions for e in estimates[:10])
    assert estimates[10].conditions == ('rate_low',) and estimates[10].state == 'degraded'  # the image after the 2nd loss
    assert estimates[10].estimates['lost_messages'] == 2.0 and estimates[10].score == pytest.approx(8 / 10)  # 8 intervals, 2 lost
    assert stamp(10, 12.0) - stamp(0, 12.0) < CONFIG.rate_window_s * NS_PER_S
    # Then none lost for rate_gap_window intervals: cleared.
    more = [monitor.update(stamp(i, 12.0), camera.image(i)) for i in range(14, 14 + CONFIG.rate_gap_window + 1)]
    assert more[-1].conditions == ()
    # One lost message, and stamps up to 20 % of a period late or early, are no fault.
    monitor = CameraHealth('cam_front', CONFIG, rate_hz=12.0)
    jitter = np.random.default_rng(2).uniform(-0.2, 0.2, 40) * period
    estimates = [monitor.update(stamp(i, 12.0) + int(jitter[i]), None if i == 7 else camera.image(i)) for i in range(40)]
    assert all(set(e.conditions) <= {'warming_up'} for e in estimates) and estimates[-1].conditions == ()


def test_camera_without_a_nominal_rate_learns_it():
    camera = PanningCamera(16)
    monitor = CameraHealth('cam_front', CONFIG)
    for i in range(20):
        monitor.update(stamp(i, 12.0), camera.image(i))
    estimate = monitor.update(stamp(19, 12.0) + 300_000_000, None)
    assert 'silent' in estimate.conditions  # 300 ms > 2.5 x the 83 ms seen


def test_time_going_backwards_starts_afresh():
    camera = PanningCamera(17)
    images = [camera.image(i) for i in range(20)]
    monitor = CameraHealth('cam_front', CONFIG, rate_hz=12.0)
    for i in range(10):
        monitor.update(stamp(i, 12.0), images[0] if i >= 5 else images[i])
    assert 'frozen' in monitor.update(stamp(10, 12.0), images[0]).conditions
    looped = monitor.update(stamp(0, 12.0), images[1])  # a looped bag
    assert looped.conditions == ('warming_up',)


def test_a_new_image_size_is_no_fault():
    small, large = PanningCamera(18), PanningCamera(19, shape=(120, 200))
    frames = [small.image(i) for i in range(15)] + [large.image(i) for i in range(15)]
    assert all(faults(e) == () for e in run_camera(frames))


# ---------------------------------------------------------------------------------------------
# Lidar
# ---------------------------------------------------------------------------------------------

ELEVATION_DEG = np.linspace(-30.67, 10.67, 32)  # the simulator's 32 beams, ring 0 lowest
STEPS = 1084
MOUNT_M = 1.84


def sweep(rng: np.random.Generator, *, wall: bool = True, sector_deg: tuple[float, float] | None = None,
          lost_rings: tuple[int, ...] = (), dropout: float = 0.02, rain: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One sweep ``(xyz (N, 3) float32, ring (N,))`` in the lidar frame: a ground plane ``MOUNT_M`` below,
    a wall (15-35 m away, by azimuth) 12 m high around it, 70 m range, range noise and dropouts.

    ``sector_deg`` removes azimuths counter-clockwise from the first angle to the second; ``rain``
    (0-1) adds the simulator's rain: more dropouts, range noise and scatter near the sensor.
    """
    elevation = np.radians(ELEVATION_DEG)[:, None]  # (32, 1)
    azimuth = (np.pi - 2 * np.pi * np.arange(STEPS) / STEPS)[None, :]  # (1, S)
    with np.errstate(divide='ignore'):
        ground = np.where(elevation < 0, MOUNT_M / np.tan(-elevation), np.inf)  # horizontal distance, (32, 1)
    wall_m = 25.0 + 10.0 * np.sin(3 * azimuth) if wall else np.full(azimuth.shape, np.inf)  # (1, S)
    horizontal = np.minimum(ground, wall_m)  # (32, S)
    hits = np.isfinite(horizontal) & (horizontal * np.tan(elevation) <= 12.0 - MOUNT_M)
    distance = np.where(hits, horizontal / np.cos(elevation), np.inf)
    distance = distance + rng.normal(0, 0.02 + 0.2 * rain, distance.shape)
    keep = hits & (distance <= 70.0) & (distance >= 1.0) & (rng.random(distance.shape) >= dropout + 0.25 * rain)
    ring = np.broadcast_to(np.arange(32)[:, None], distance.shape)
    keep &= ~np.isin(ring, lost_rings)
    direction = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                             np.sin(elevation)), axis=-1)  # (32, S, 3)
    xyz, ring = direction[keep] * distance[keep, None], ring[keep]
    if rain:
        scatter = rng.random(len(xyz)) < 0.05 * rain
        near = rng.uniform(1.0, 8.0, scatter.sum())
        xyz = np.concatenate([xyz, xyz[scatter] / np.linalg.norm(xyz[scatter], axis=1, keepdims=True) * near[:, None]])
        ring = np.concatenate([ring, ring[scatter]])
    if sector_deg is not None:
        angle = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
        inside = (angle - sector_deg[0]) % 360 < (sector_deg[1] - sector_deg[0]) % 360
        xyz, ring = xyz[~inside], ring[~inside]
    return xyz.astype(np.float32), ring.astype(np.uint16)


def run_lidar(sweeps: list[tuple[np.ndarray, np.ndarray] | None], use_ring: bool = False,
              config: HealthSection = CONFIG) -> list[HealthEstimate]:
    monitor = LidarHealth('lidar_top', config, rate_hz=20.0)
    out = []
    for i, one in enumerate(sweeps):
        xyz, ring = one if one is not None else (None, None)
        out.append(monitor.update(stamp(i, 20.0), xyz, ring if use_ring else None))
    return out


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_healthy_lidar_raises_nothing(seed):
    rng = np.random.default_rng(seed)
    estimates = run_lidar([sweep(rng) for _ in range(100)])
    assert [e.conditions for e in estimates[:CONFIG.reference_min]] == [('warming_up',)] * CONFIG.reference_min
    assert all(e.conditions == () and e.state == 'ok' for e in estimates[CONFIG.reference_min:])
    assert estimates[-1].estimates['missing_sector_deg'] == 0 and estimates[-1].estimates['missing_beams'] == 0
    assert estimates[-1].estimates['reference_beams'] >= 25


@pytest.mark.parametrize('sector_deg', [(-30.0, 30.0), (150.0, -150.0), (47.0, 107.0)])
def test_sector_dropout_within_three_sweeps_measured_within_ten_degrees(sector_deg):
    rng = np.random.default_rng(3)
    start, end = 20, 40
    estimates = run_lidar([sweep(rng, sector_deg=sector_deg if start <= i < end else None) for i in range(60)])
    seen = first(estimates, 'sector_loss')
    assert seen is not None and start < seen <= start + 3
    for e in estimates[seen:end]:
        assert faults(e) == ('sector_loss',) and e.state == 'degraded'
        assert e.estimates['missing_sector_deg'] == pytest.approx(60, abs=10)
        assert e.estimates['sector_start_deg'] == pytest.approx(sector_deg[0], abs=10)
        assert e.estimates['sector_end_deg'] == pytest.approx(sector_deg[1], abs=10)
        assert e.score == pytest.approx(1 - e.estimates['missing_sector_deg'] / 360)
    assert estimates[end + CONFIG.clear_frames].conditions == ()


def test_losing_most_of_the_circle_fails():
    rng = np.random.default_rng(4)
    estimates = run_lidar([sweep(rng) for _ in range(10)] + [sweep(rng, sector_deg=(0.0, -90.0)) for _ in range(5)])
    assert estimates[-1].state == 'failed' and faults(estimates[-1]) == ('sector_loss',)
    assert estimates[-1].estimates['missing_sector_deg'] == pytest.approx(270, abs=10)
    empty = run_lidar([sweep(rng) for _ in range(10)] + [(np.zeros((0, 3), np.float32), np.zeros(0, np.uint16))] * 3)
    assert empty[-1].state == 'failed' and empty[-1].estimates['missing_sector_deg'] == 360


@pytest.mark.parametrize('use_ring', [False, True])
def test_every_other_upper_beam_lost_counts_eight_beams(use_ring):
    rng = np.random.default_rng(5)
    lost = tuple(range(16, 31, 2))  # the simulator's default lidar_beam_loss
    start, end = 20, 40
    estimates = run_lidar([sweep(rng, lost_rings=lost if start <= i < end else ()) for i in range(60)], use_ring)
    seen = first(estimates, 'beam_loss')
    assert seen is not None and start < seen <= start + 3
    for e in estimates[seen:end]:
        assert faults(e) == ('beam_loss',) and e.state == 'degraded'
        assert e.estimates['missing_beams'] == 8
    assert estimates[end + CONFIG.clear_frames].conditions == ()


def with_strays(one: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, count: int = 25):
    """``one`` sweep plus ``count`` returns on the ground between rings 10 and 11 (no beam of their own)."""
    xyz, ring = one
    elevation = np.radians((ELEVATION_DEG[10] + ELEVATION_DEG[11]) / 2)
    azimuth = rng.uniform(-np.pi, np.pi, count)
    distance = MOUNT_M / np.sin(-elevation)
    strays = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                       np.full(count, np.sin(elevation))], axis=1) * distance
    return np.concatenate([xyz, strays.astype(np.float32)]), np.concatenate([ring, np.full(count, 10, np.uint16)])


def test_stray_returns_between_two_beams_are_no_beam_to_lose():
    # A neighbour's returns spilling into the elevation bins between two beams, then gone: without rings
    # they make a run of bins of their own, 25 points against a real beam's 1000 or more.
    rng = np.random.default_rng(8)
    sweeps = [with_strays(sweep(rng), rng) for _ in range(20)] + [sweep(rng) for _ in range(10)]
    estimates = run_lidar(sweeps)
    assert all(e.conditions == () for e in estimates[CONFIG.reference_min:])
    assert estimates[25].estimates['missing_beams'] == 0
    counted = run_lidar(sweeps, config=dataclasses.replace(CONFIG, beam_min_share=1e-6))
    assert first(counted, 'beam_loss') is not None  # counted as a beam, its emptying reads as a loss


def test_half_the_beams_lost_fails():
    rng = np.random.default_rng(6)
    estimates = run_lidar([sweep(rng) for _ in range(10)] + [sweep(rng, lost_rings=tuple(range(0, 32, 2)))] * 3,
                          use_ring=True)
    assert estimates[-1].state == 'failed'
    assert estimates[-1].estimates['missing_beams'] == 16  # the even rings; the odd ones above them return


@pytest.mark.parametrize('intensity', [0.5, 1.0])
def test_rain_is_scatter_not_sector_or_beam_loss(intensity):
    rng = np.random.default_rng(7)
    start, end = 10, 40
    estimates = run_lidar([sweep(rng, rain=intensity if start <= i < end else 0.0) for i in range(50)])
    assert all(e.conditions == () for e in estimates[CONFIG.reference_min:start])
    assert all(e.estimates['scatter_fraction'] < CONFIG.scatter_fraction / 2 for e in estimates[:start])
    seen = first(estimates, 'scatter')
    assert seen == start + CONFIG.confirm_frames - 1  # confirmed in the usual number of sweeps
    assert all(faults(e) == ('scatter',) and e.state == 'degraded' for e in estimates[seen:end])
    assert all(e.score == pytest.approx(1 - e.estimates['scatter_fraction']) for e in estimates[seen:end])
    assert estimates[end + CONFIG.clear_frames - 1].conditions == ()
    # Drops everywhere in free air: failed.
    heavy = dataclasses.replace(CONFIG, scatter_failed_fraction=CONFIG.scatter_fraction * 1.5)
    assert run_lidar([sweep(rng, rain=1.0) for _ in range(3)], config=heavy)[-1].state == 'failed'


def test_scatter_is_judged_against_the_lidars_own_ordinary_level():
    # A floor this low reads every ordinary sweep as scatter (a coarse lidar's lone returns): once its
    # own level is learnt, only a rise well above it counts.
    low = dataclasses.replace(CONFIG, scatter_fraction=1e-4)
    rng = np.random.default_rng(12)
    estimates = run_lidar([sweep(rng, rain=0.5 if i >= 30 else 0.0) for i in range(40)], config=low)
    assert 'scatter' in estimates[CONFIG.confirm_frames - 1].conditions  # before anything is learnt
    assert all('scatter' not in e.conditions for e in estimates[15:30])
    assert 'scatter' in estimates[30 + CONFIG.confirm_frames - 1].conditions


def test_open_sky_empties_the_upper_beams_without_beam_loss():
    rng = np.random.default_rng(8)
    estimates = run_lidar([sweep(rng) for _ in range(10)] + [sweep(rng, wall=False) for _ in range(30)])
    assert all(e.conditions == () for e in estimates[CONFIG.reference_min:])
    assert estimates[-1].estimates['reference_beams'] < estimates[9].estimates['reference_beams']  # it re-learnt


def test_lidar_silence():
    rng = np.random.default_rng(9)
    estimates = run_lidar([sweep(rng) for _ in range(10)] + [None] * 5)
    first = math.ceil(CONFIG.silent_periods) - 1  # missed sweeps before 'silent': the age passes silent_periods
    assert [('silent' in e.conditions) for e in estimates[10:]] == [k >= first for k in range(5)]
    assert estimates[-1].state == 'failed'


def test_real_nuscenes_sweep_sector_and_beam_loss(real_data):
    points = np.fromfile(next((real_data / 'nuscenes_keyframe').glob('*LIDAR_TOP*.pcd.bin')), np.float32).reshape(-1, 5)
    xyz0, ring0 = points[:, :3], points[:, 4].astype(np.int64)  # nuScenes lidar: x right, y forward, z up
    rng = np.random.default_rng(10)

    def real(lost_rings: tuple[int, ...] = (), sector_deg: tuple[float, float] | None = None):
        keep = (rng.random(len(xyz0)) >= 0.02) & ~np.isin(ring0, lost_rings)
        xyz = xyz0[keep] * (1 + rng.normal(0, 0.001, (int(keep.sum()), 1))).astype(np.float32)
        ring = ring0[keep]
        if sector_deg is not None:
            angle = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
            outside = (angle - sector_deg[0]) % 360 >= (sector_deg[1] - sector_deg[0]) % 360
            xyz, ring = xyz[outside], ring[outside]
        return xyz, ring

    for use_ring in (False, True):
        healthy = [real() for _ in range(12)]
        beams = run_lidar(healthy + [real(lost_rings=tuple(range(16, 31, 2))) for _ in range(3)], use_ring)
        assert all(e.conditions == () for e in beams[CONFIG.reference_min:12])
        assert faults(beams[-1]) == ('beam_loss',) and beams[-1].estimates['missing_beams'] == 8
        sector = run_lidar(healthy + [real(sector_deg=(150.0, -150.0)) for _ in range(3)], use_ring)
        assert faults(sector[-1]) == ('sector_loss',)
        assert sector[-1].estimates['missing_sector_deg'] == pytest.approx(60, abs=10)
    assert beams[12].estimates['reference_beams'] == 32  # with rings, every beam is its own
    # The real sweep's near returns have neighbours; drops scattered in free air near it do not.
    assert beams[11].estimates['scatter_fraction'] < CONFIG.scatter_fraction
    xyz, _ = real()
    drops = xyz[rng.random(len(xyz)) < 0.03]
    drops = drops / np.linalg.norm(drops, axis=1, keepdims=True) * rng.uniform(1.5, 9.0, (len(drops), 1))
    rain = run_lidar([(np.concatenate([xyz, drops.astype(np.float32)]), None)] * 3)
    assert 'scatter' in rain[-1].conditions


# ---------------------------------------------------------------------------------------------
# Radar
# ---------------------------------------------------------------------------------------------

def scan(rng: np.random.Generator, supported_share: float = 0.9, ghosts: int = 0,
         moving_share: float = 0.3) -> tuple[np.ndarray, np.ndarray, None, np.ndarray]:
    """Arguments for ``RadarHealth.update`` after the stamp: returns ``(N, 3)`` in a 120-degree field of
    view, their lidar support (real ones mostly supported, ghosts never), no scan stamp, and whether
    each moves (a share of the real ones; ghosts do)."""
    n = int(rng.poisson(15)) + ghosts
    azimuth = rng.uniform(-np.pi / 3, np.pi / 3, n)
    distance = rng.uniform(2.0, 80.0, n)
    xyz = np.stack([distance * np.cos(azimuth), distance * np.sin(azimuth), np.zeros(n)], axis=1).astype(np.float32)
    supported = rng.random(n) < supported_share
    moving = rng.random(n) < moving_share
    supported[n - ghosts:] = False
    moving[n - ghosts:] = True
    return xyz, supported, None, moving


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('supported_share, moving_share', [(0.9, 0.3), (0.6, 0.3), (0.2, 0.0)])
def test_healthy_radar_and_ordinary_clutter_raise_nothing(seed, supported_share, moving_share):
    """Clutter the lidar does not back, even most of the returns, is no ghost while it stands."""
    rng = np.random.default_rng(seed)
    monitor = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    estimates = [monitor.update(stamp(i, 13.0), *scan(rng, supported_share, moving_share=moving_share))
                 for i in range(100)]
    assert all(faults(e) == () and e.state == 'ok' for e in estimates)
    # suspects (unsupported and moving) per scan: 15 returns x (1 - supported) x moving
    per_scan = 15 * (1 - supported_share) * moving_share
    assert estimates[-1].estimates['ghost_baseline'] == pytest.approx(per_scan, abs=0.6 + per_scan / 2)


def test_ghost_targets_detected_and_cleared():
    rng = np.random.default_rng(3)
    monitor = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    start, end = 20, 50
    estimates = [monitor.update(stamp(i, 13.0), *scan(rng, ghosts=5 if start <= i < end else 0)) for i in range(70)]
    seen = first(estimates, 'ghosts')
    assert seen is not None and start <= seen < start + CONFIG.ghost_window  # no confirming scans on top
    assert all(faults(e) == ('ghosts',) and e.state == 'degraded' for e in estimates[seen:end])
    assert estimates[end - 1].estimates['ghost_fraction'] == pytest.approx(5.45 / 20, abs=0.08)
    assert estimates[end - 1].estimates['ghost_baseline'] < 1.5  # not taught by ghosts
    assert all(faults(e) == () for e in estimates[end + CONFIG.ghost_window + CONFIG.clear_frames:])
    # Without knowing which returns move, every unsupported one is a suspect: ten a scan stand out too.
    blind = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    estimates = [blind.update(stamp(i, 13.0), *scan(rng, ghosts=10 if start <= i < end else 0)[:3]) for i in range(50)]
    assert first(estimates, 'ghosts') is not None
    unknown = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    estimates = [unknown.update(stamp(i, 13.0), scan(rng, ghosts=10)[0]) for i in range(30)]
    assert all(faults(e) == () and math.isnan(e.estimates['ghost_fraction']) for e in estimates)


def test_ghosts_creeping_in_do_not_teach_the_baseline():
    """Ghosts that start as a trickle (one, then two a scan) are not learnt as the ordinary count: the
    window judges them against the rate from before."""
    rng = np.random.default_rng(5)
    monitor = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    counts = [0] * 20 + [2, 3, 4, 4, 5, 5, 5, 5]
    estimates = [monitor.update(stamp(i, 13.0), *scan(rng, ghosts=g)) for i, g in enumerate(counts)]
    seen = first(estimates, 'ghosts')
    assert seen is not None and seen <= 24
    assert estimates[-1].estimates['ghost_baseline'] < 1.5  # the clutter's own, about 0.5


def test_excess_p_is_the_binomial_tail_given_the_total():
    """Given 20 events, 3 window scans against 12 baseline scans: the window's share is Binomial(20, 0.2)."""
    pmf = [math.comb(20, k) * 0.2 ** k * 0.8 ** (20 - k) for k in range(21)]
    for count in (1, 4, 9, 15):
        assert excess_p(count, 3, 20 - count, 12) == pytest.approx(sum(pmf[count:]), rel=1e-9)
    assert excess_p(0, 3, 5, 12) == 1.0
    # The same window count is less surprising the less the baseline has seen.
    assert excess_p(8, 3, 2, 10) < excess_p(8, 3, 1, 5)


def test_radar_silence_within_three_frames():
    """Frames at the lidar's 20 Hz, a 13 Hz radar that stops: silent within three frames of the missed scan."""
    rng = np.random.default_rng(4)
    monitor = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    period = NS_PER_S / 13
    scans = [stamp(i, 13.0) for i in range(26)]  # 2 s of scans, then nothing
    pending = list(scans)
    estimates = []
    for k in range(60):
        now = stamp(k, 20.0)
        arrived = [s for s in pending if s <= now]
        pending = [s for s in pending if s > now]
        estimates.append((now, monitor.update(arrived[-1], *scan(rng)) if arrived else monitor.update(now, None)))
    assert all(faults(e) == () for _, e in estimates if _ <= scans[-1] + period)
    due = scans[-1] + round(period)  # the first scan that does not come
    silent = next(now for now, e in estimates if 'silent' in e.conditions)
    assert 0 < silent - due <= 3 * NS_PER_S / 20
    assert estimates[-1][1].state == 'failed' and estimates[-1][1].score == 0.0
    assert 'rate_low' not in estimates[-1][1].conditions  # the silence says it already


def test_radar_rate_low_and_recovery_after_silence():
    rng = np.random.default_rng(5)
    monitor = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    halved = [monitor.update(stamp(i, 13.0), *scan(rng)) if i % 2 == 0 else monitor.update(stamp(i, 13.0), None)
              for i in range(60)]
    assert faults(halved[-1]) == ('rate_low',) and halved[-1].score == pytest.approx(0.5, abs=0.06)
    monitor = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    estimates = [monitor.update(stamp(i, 13.0), *(scan(rng) if not 30 <= i < 40 else (None, None)))
                 for i in range(70)]
    assert 'silent' in estimates[39].conditions
    assert all(faults(e) == () for e in estimates[40 + CONFIG.clear_frames:])  # no lingering rate_low


# ---------------------------------------------------------------------------------------------
# Estimates, status, configuration, errors
# ---------------------------------------------------------------------------------------------

def test_status_levels_names_and_values():
    ok = HealthEstimate('cam_front', 'camera', 'ok', 1.0, (), {'rate_hz': 12.0})
    warming = HealthEstimate('cam_front', 'camera', 'ok', 1.0, ('warming_up',), {})
    degraded = HealthEstimate('lidar_top', 'lidar', 'degraded', 0.83, ('sector_loss',), {'missing_sector_deg': 60.0})
    failed = HealthEstimate('radar_front', 'radar', 'failed', 0.0, ('silent', 'ghosts'), {'age_ms': 412.5})
    assert [s.status().level for s in (ok, warming, degraded, failed)] == \
        [DiagnosticStatus.OK, DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR]
    status = failed.status()
    assert status.name == 'mmfusion: health radar_front' and status.hardware_id == 'radar_front'
    assert status.message == 'failed: silent, ghosts'
    assert dict(status.values) == {'modality': 'radar', 'state': 'failed', 'score': '0.00',
                                   'conditions': 'silent,ghosts', 'age_ms': '412.5'}
    assert ok.status().message == 'ok' and warming.status().message == 'warming up'
    assert degraded.status().values[-1] == ('missing_sector_deg', '60')
    with pytest.raises(ValueError, match="state 'broken'"):
        HealthEstimate('x', 'camera', 'broken', 1.0, ())
    with pytest.raises(ValueError, match='unknown conditions'):
        HealthEstimate('x', 'camera', 'ok', 1.0, ('dirty',))
    assert set(CONDITIONS) >= {'blackout', 'frozen', 'overexposed', 'occluded', 'sector_loss', 'beam_loss', 'silent',
                               'ghosts', 'rate_low', 'warming_up'}


def test_health_section_in_the_configuration():
    config = load_config()
    assert config.health == HealthSection()
    monitors = health_monitors(config)
    assert set(monitors) == set(config.sensors)
    for name, monitor in monitors.items():
        assert monitor.modality == config.sensors[name].modality
        assert monitor.rate_hz == config.sensors[name].rate_hz
    sensors = {'lidar_top': {'modality': 'lidar', 'topic': '/lidar', 'type': 'sensor_msgs/msg/PointCloud2'}}
    custom = config_from_dict(FusionConfig, {'sensors': sensors, 'health': {'confirm_frames': 3,
                                                                            'occlusion_grid': [16, 9]}})
    assert custom.health.confirm_frames == 3 and custom.health.occlusion_grid == (16, 9)
    with pytest.raises(ConfigError, match=r'^health\.occlusion_grid: expected 2 values'):
        config_from_dict(FusionConfig, {'sensors': sensors, 'health': {'occlusion_grid': [16]}})
    with pytest.raises(ConfigError, match=r'^health\.blackout_level: unknown parameter'):
        config_from_dict(FusionConfig, {'sensors': sensors, 'health': {'blackout_level': 3}})


@pytest.mark.parametrize('changes, message', [
    ({'confirm_frames': 0}, 'confirm_frames: must be an integer >= 1'),
    ({'reference_min': 20}, 'reference_min: 20 can not exceed reference_sweeps'),
    ({'silent_periods': 0.0}, 'silent_periods: must be positive'),
    ({'occluded_fraction': 1.5}, r'occluded_fraction: must be in \(0, 1\]'),
    ({'overexposed_fraction': 0.8}, 'overexposed_failed_fraction: 0.7 is below overexposed_fraction'),
    ({'sector_bin_deg': 7.0}, 'sector_bin_deg: 7.0 does not divide 360'),
    ({'saturation_level': 300}, r'saturation_level: must be in \(0, 255\]'),
    ({'occlusion_grid': (1, 9)}, 'occlusion_grid: need'),
    ({'sector_failed_deg': 400.0}, 'sector_failed_deg: at most 360'),
])
def test_health_section_rejects_bad_values(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(HealthSection(), **changes)


def test_bad_inputs_name_the_sensor():
    with pytest.raises(ValueError, match=r"CameraHealth\('cam_front'\): pixels must be \(H, W, 3\) uint8"):
        CameraHealth('cam_front', CONFIG).update(T0, np.zeros((9, 16), np.uint8))
    with pytest.raises(ValueError, match=r"CameraHealth\('cam_front'\): pixels must be .* float32"):
        CameraHealth('cam_front', CONFIG).update(T0, np.zeros((9, 16, 3), np.float32))
    with pytest.raises(ValueError, match=r"LidarHealth\('lidar_top'\): xyz_sensor must be \(N, 3\), got \(5, 4\)"):
        LidarHealth('lidar_top', CONFIG).update(T0, np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"LidarHealth\('lidar_top'\): ring must be \(N,\) integers"):
        LidarHealth('lidar_top', CONFIG).update(T0, np.zeros((5, 3)), np.zeros(4, np.uint16))
    with pytest.raises(ValueError, match=r"RadarHealth\('radar_front'\): supported must be \(N,\) bool for the N = 3"):
        RadarHealth('radar_front', CONFIG).update(T0, np.zeros((3, 3)), np.ones(3, np.int64))
    with pytest.raises(ValueError, match=r"RadarHealth\('radar_front'\): xyz_sensor must be \(N, 3\)"):
        RadarHealth('radar_front', CONFIG).update(T0, np.zeros(3))
    with pytest.raises(ValueError, match=r"RadarHealth\('radar_front'\): rate_hz must be positive, got -1"):
        RadarHealth('radar_front', CONFIG, rate_hz=-1)
    with pytest.raises(TypeError, match=r"LidarHealth\('lidar_top'\): config must be a HealthSection, got dict"):
        LidarHealth('lidar_top', {})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Real images and simulator recordings
# ---------------------------------------------------------------------------------------------

def test_real_nuscenes_images(real_data):
    for path in sorted((real_data / 'nuscenes_keyframe').glob('*__CAM_*.jpg')):
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # (900, 1600, 3)
        rng = np.random.default_rng(0)
        noisy = [np.clip(image + rng.normal(0, 1.0, image.shape), 0, 255).astype(np.uint8) for _ in range(4)]
        estimates = run_camera(noisy)
        assert all(faults(e) == () for e in estimates), path.name
        assert estimates[-1].estimates['saturated_fraction'] < 0.1
        assert faults(run_camera([image] * 4)[-1]) == ('frozen',), path.name


class _Recorder:
    """A simulator sink that keeps each topic's messages in memory."""

    def __init__(self) -> None:
        self.messages: dict[str, list[tuple[int, bytes]]] = {}

    def add_topic(self, name: str, msgtype: str, *, qos: str | None = None) -> None:
        self.messages.setdefault(name, [])

    def write(self, topic: str, stamp_ns: int, raw: bytes) -> None:
        self.messages[topic].append((stamp_ns, bytes(raw)))


def simulate_cameras(folder: Path, cameras: tuple[str, ...], faults_body: list[dict], **scenario) -> dict:
    """Decoded images ``{camera: [(seconds from the start, pixels), ...]}`` of a small simulated scene."""
    from simdata import small_scenario

    from mmfusion_ros.msgs.decode import decode_compressed_image
    from mmfusion_ros.sim.faults import load_faults
    from mmfusion_ros.sim.scenario import load_scenario
    from mmfusion_ros.sim.simulator import Simulation

    body = {'rig': {'camera': {'width': 160, 'height': 90}}, 'duration_s': 2.0, **scenario}
    loaded = load_scenario(small_scenario(folder, **body))
    (folder / 'faults.yaml').write_text(yaml.safe_dump({'faults': faults_body}))
    config = load_config()
    config = dataclasses.replace(config, sensors={name: config.sensors[name] for name in cameras})
    recorder = _Recorder()
    Simulation(loaded, config, load_faults(folder / 'faults.yaml', loaded.rig, loaded.duration_s), 3).run(recorder)
    return {name: [((s - loaded.start_ns) / 1e9, decode_compressed_image(raw).pixels)
                   for s, raw in recorder.messages[config.sensors[name].topic]] for name in cameras}


@pytest.fixture(scope='module')
def simulated(tmp_path_factory) -> dict:
    return simulate_cameras(tmp_path_factory.mktemp('health_sim'), ('cam_front', 'cam_front_left', 'cam_front_right'), [
        {'type': 'camera_frozen', 'sensor': 'cam_front', 'start_s': 0.5, 'end_s': 1.5},
        {'type': 'camera_blackout', 'sensor': 'cam_front_left', 'start_s': 0.5, 'end_s': 1.5},
        {'type': 'camera_occlusion', 'sensor': 'cam_front_right', 'start_s': 0.3, 'end_s': 2.0,
         'region': [0.1, 0.3, 0.7, 0.9]}])


def run_simulated(images: list[tuple[float, np.ndarray]]) -> list[tuple[float, HealthEstimate]]:
    monitor = CameraHealth('camera', CONFIG, rate_hz=12.0)
    return [(t, monitor.update(T0 + round(t * NS_PER_S), pixels)) for t, pixels in images]


@pytest.mark.parametrize('camera, condition, start, end', [('cam_front', 'frozen', 0.5, 1.5),
                                                           ('cam_front_left', 'blackout', 0.5, 1.5)])
def test_simulated_frozen_and_blacked_out_cameras(simulated, camera, condition, start, end):
    estimates = run_simulated(simulated[camera])
    times = [t for t, _ in estimates]
    onset = next(i for i, t in enumerate(times) if t >= start)  # the first image of the fault
    seen = next(i for i, (_, e) in enumerate(estimates) if condition in e.conditions)
    # A black image is one at once; a frozen one shows at the first image that repeats it.
    assert seen == onset if condition == 'blackout' else seen == onset + 1
    assert all(faults(e) == () for t, e in estimates if t < start)
    assert all(faults(e) == (condition,) and e.state == 'failed' for t, e in estimates[seen:] if t < end)
    after = next(i for i, t in enumerate(times) if t >= end)
    assert all(faults(e) == () for _, e in estimates[after + CONFIG.clear_frames:])


def test_simulated_occlusion(simulated):
    estimates = run_simulated(simulated['cam_front_right'])
    onset = next(i for i, (t, _) in enumerate(estimates) if t >= 0.3)
    seen = next(i for i, (_, e) in enumerate(estimates) if 'occluded' in e.conditions)
    assert onset < seen <= onset + CONFIG.occlusion_window + CONFIG.confirm_frames
    assert all(faults(e) == ('occluded',) for _, e in estimates[seen:])
    assert all(abs(e.estimates['occluded_fraction'] - 0.36) < 0.08 for _, e in estimates[seen:])  # 0.6 x 0.6
    assert all(faults(e) == () for _, e in run_simulated(simulated['cam_front']) if _ < 0.5)


def test_simulated_still_scene_is_bit_identical(tmp_path):
    """The simulator renders cameras without sensor noise: a parked ego facing a still street sends
    the very same image again, which reads as frozen (a known limit; real cameras never repeat)."""
    still = simulate_cameras(tmp_path, ('cam_back',), [], duration_s=1.0, ego_speed=0.0,
                             traffic={'cars': 0, 'trucks': 0, 'buses': 0, 'pedestrians': 0, 'cyclists': 0,
                                      'parked_cars': 2})['cam_back']
    assert all(np.array_equal(still[0][1], pixels) for _, pixels in still)
    assert 'frozen' in run_simulated(still)[-1][1].conditions


def test_one_car_the_lidar_misses_is_one_place_not_many_ghosts():
    """Three returns a scan from one moving car beyond the lidar's reach count as one place: no ghosts;
    three scattered moving returns a scan over the same window do count."""
    rng = np.random.default_rng(6)
    monitor = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    scattered = RadarHealth('radar_front', CONFIG, rate_hz=13.0)
    car, apart = [], []
    for i in range(40):
        xyz, supported, _, moving = scan(rng)
        if i >= 20:
            near = np.array([[46.0 + 0.5 * i / 10, 20.0, 0.0]], np.float32) + rng.normal(0, 0.4, (3, 3)).astype(np.float32)
            far = rng.uniform(-40.0, 40.0, (3, 3)).astype(np.float32) + np.array([45.0, 0.0, 0.0], np.float32)
        else:
            near = far = np.zeros((0, 3), np.float32)
        extra = np.ones(len(near), bool)
        car.append(monitor.update(stamp(i, 13.0), np.vstack([xyz, near]), np.concatenate([supported, ~extra]), None,
                                  np.concatenate([moving, extra])))
        apart.append(scattered.update(stamp(i, 13.0), np.vstack([xyz, far]), np.concatenate([supported, ~extra]), None,
                                      np.concatenate([moving, extra])))
    assert all(faults(e) == () for e in car)
    assert first(apart, 'ghosts') is not None


def lane_lines(image: np.ndarray, focus: tuple[float, float], top: int) -> np.ndarray:
    """``image`` with a road below row ``top``: one-pixel lines, stepped as a renderer draws them, that
    all run from ``focus``, as lines along the road run to the focus of expansion. Driving slides them
    along themselves."""
    out = image.copy()
    H, W = out.shape[:2]
    road = np.full_like(out, 90)
    for end in np.linspace(-2 * W, 3 * W, 41):
        cv2.line(road, (round(focus[0]), round(focus[1])), (int(end), 3 * H), (230, 230, 230), 1, cv2.LINE_8)
    out[top:] = road[top:]
    return out


def test_lines_running_to_the_focus_of_travel_are_no_occlusion():
    """Lane lines on the road below a moving scene stay the same while the vehicle drives: read as a
    stuck region without the direction of travel, and as nothing to judge with it."""
    camera = PanningCamera(21, shape=(225, 400))
    focus = (200.0, 90.0)
    frames = [lane_lines(camera.image(i), focus, 130) for i in range(40)]
    blind = run_camera(frames, ego_moving=True)
    assert first(blind, 'occluded') is not None  # the lines look like a patch stuck on the lens
    told = run_camera(frames, ego_moving=True, travel_focus=np.array([*focus, 1.0]))
    assert all(faults(e) == () for e in told)
    assert told[-1].estimates['occluded_fraction'] < 0.05


def test_mud_is_found_with_the_direction_of_travel_known():
    """Mud's blotches have edges every way: the flow test keeps it (the panning world moves along x,
    a focus at infinity)."""
    camera = PanningCamera(22)
    region = (0.25, 0.25, 0.75, 0.75)
    frames = [mud(camera.image(i), region) if 20 <= i < 60 else camera.image(i) for i in range(70)]
    estimates = run_camera(frames, ego_moving=True, travel_focus=np.array([1.0, 0.0, 0.0]))
    seen = first(estimates, 'occluded')
    assert seen is not None and seen <= 20 + CONFIG.occlusion_onset_images + CONFIG.confirm_frames - 1
    assert abs(estimates[59].estimates['occluded_fraction'] - 0.25) < 0.05


def test_flow_texture_share_separates_isotropic_texture_from_radial_edges():
    rng = np.random.default_rng(23)
    focus = np.array([80.0, 30.0, 1.0])
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (90, 160)).astype(np.float32), (0, 0), 1.5)
    assert np.median(_flow_texture_share(noise, (16, 9), focus)) == pytest.approx(np.sqrt(0.5), abs=0.1)
    v, u = np.mgrid[0:90, 0:160].astype(np.float32) + 0.5
    spokes = 128 + 60 * np.sin(12 * np.arctan2(v - focus[1], u - focus[0]))  # edges all along rays from the focus
    assert np.median(_flow_texture_share(spokes.astype(np.float32), (16, 9), focus)) < 0.15
    # the same spokes seen from a focus elsewhere cut across the flow
    assert np.median(_flow_texture_share(spokes.astype(np.float32), (16, 9), np.array([0.0, 1.0, 0.0]))) > 0.3
