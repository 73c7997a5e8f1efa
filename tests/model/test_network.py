"""The fusion network: shapes through every stage for every subset of modalities, both fusers; the
torch and numba reductions agree; the gated fuser ignores what is absent; the CPU model runs."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch

from mmfusion_ros.config import GridConfig
from mmfusion_ros.geometry.scatter import scatter_max, scatter_to_bev
from mmfusion_ros.model import (
    ABSENT_LOGIT,
    MODALITIES,
    CameraGeometryCache,
    FusionNet,
    GatedFuser,
    ModelError,
    ModelInputs,
    accumulate_sweeps,
    camera_inputs,
    cpu_model_config,
    decode_detections,
    gpu_model_config,
    lift_to_bev,
    model_inputs,
    pillar_inputs,
    pillars_to_bev,
)
from mmfusion_ros.model.config import FuserConfig
from mmfusion_ros.types import RigidTransform

SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(MODALITIES, r)]


def frame_of(small_frame, subset, health=None) -> ModelInputs:
    config, camera, lidar, radar = small_frame
    blocks = {'camera': camera, 'lidar': lidar, 'radar': radar}
    return model_inputs(**{m: blocks[m] for m in subset}, health=health)


@pytest.mark.parametrize('fuser', ['conv', 'gated'])
@pytest.mark.parametrize('subset', SUBSETS, ids='+'.join)
def test_shapes_through_every_stage(small_frame, make_config, fuser, subset):
    assert len(SUBSETS) == 7
    torch.manual_seed(0)
    config = make_config(fuser)
    net = FusionNet(config).eval()
    inputs = frame_of(small_frame, subset)
    ny, nx = config.grid.shape
    H, W = config.head_shape
    K = config.head.num_classes
    with torch.no_grad():
        out = net(inputs)

    assert out.present.tolist() == [m in subset for m in MODALITIES]
    for m in MODALITIES:
        assert out.bev[m].shape == (1, config.channels_of(m), ny, nx)
        assert out.aux_heatmaps[m].shape == (1, K, H, W)
        if m not in subset:
            assert torch.all(out.bev[m] == 0), f'absent {m} must be a zero map'
            assert torch.all(out.aux_heatmaps[m] == ABSENT_LOGIT)
        assert torch.isfinite(out.bev[m]).all()
    assert out.head.heatmap.shape == (1, K, H, W)
    assert out.head.offset.shape == out.head.yaw.shape == out.head.velocity.shape == (1, 2, H, W)
    assert out.head.z.shape == (1, 1, H, W) and out.head.log_size.shape == (1, 3, H, W)
    assert all(torch.isfinite(t).all() for t in out.head)
    assert out.gates.shape == (3,)
    assert all((float(g) == 0.0) == (m not in subset) for m, g in zip(MODALITIES, out.gates))
    assert (out.camera_depth is not None) == ('camera' in subset)
    detections = decode_detections(out, config.grid, config.head, 7, 'base_link')
    assert detections.frame_id == 'base_link' and detections.stamp_ns == 7


def test_head_at_output_stride_two(small_frame, make_config):
    config = make_config('gated', output_stride=2)
    assert config.head_shape == (16, 16)
    with torch.no_grad():
        out = FusionNet(config).eval()(frame_of(small_frame, MODALITIES))
    assert out.head.heatmap.shape == (1, 5, 16, 16)
    assert all(h.shape == (1, 5, 16, 16) for h in out.aux_heatmaps.values())


@pytest.mark.parametrize('fuser', ['conv', 'gated'])
def test_zero_modalities_give_no_detections(make_config, fuser):
    config = make_config(fuser)
    net = FusionNet(config).eval()
    with torch.no_grad():
        out = net(ModelInputs())
    assert not out.present.any()
    assert torch.all(out.gates == 0)
    assert torch.all(out.head.heatmap == ABSENT_LOGIT)
    detections = decode_detections(out, config.grid, config.head, 1, 'base_link')
    assert len(detections) == 0
    assert len(decode_detections(out.head, config.grid, config.head, 1, 'base_link')) == 0


def test_training_mode_backpropagates_into_every_encoder(small_frame, make_config):
    torch.manual_seed(0)
    net = FusionNet(make_config('gated')).train()
    out = net(frame_of(small_frame, MODALITIES))
    loss = sum(t.square().mean() for t in out.head) + sum(h.sigmoid().mean() for h in out.aux_heatmaps.values())
    loss.backward()
    for name in ('camera.backbone.0.0.weight', 'lidar.linear.weight', 'radar.linear.weight',
                 'fuser.health_scale', 'head.heatmap.1.weight'):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_inference_normalises_with_the_frames_own_statistics_as_training_did(small_frame, make_config):
    # A training batch is one frame: the weights learned frame statistics, so inference uses them too.
    torch.manual_seed(0)
    net = FusionNet(make_config('gated'))
    assert not any(k.endswith(('running_mean', 'running_var')) for k in net.state_dict())
    inputs = frame_of(small_frame, MODALITIES)
    with torch.no_grad():
        trained = net.train()(inputs).head
        inferred = net.eval()(inputs).head
    for a, b in zip(trained, inferred):
        torch.testing.assert_close(a, b)


def test_a_pillar_net_over_one_point_gives_its_norm_shift(small_frame, make_config):
    config, camera, lidar, radar = small_frame
    net = FusionNet(make_config('gated')).eval()
    one = pillar_inputs(np.array([[5.0, 1.0, 0.0, 0.5, 0.0]], np.float32), config.grid, config.lidar, 'lidar')
    with torch.no_grad():
        torch.nn.init.uniform_(net.lidar.norm.bias, 0.1, 1.0)
        bev = net.lidar(one)
    assert torch.isfinite(bev).all()
    assert torch.allclose(bev.amax(dim=(0, 2, 3)), net.lidar.norm.bias)  # relu(shift) at the one pillar


# ---------------------------------------------------------------------------------------------------
# The two paths of each reduction


def test_torch_lift_matches_bev_pool_kernel(small_frame):
    config, camera, _, _ = small_frame
    geometry = camera.geometry
    Ncam, D, Hf, Wf = geometry.frustum_shape
    C = 5
    generator = torch.Generator().manual_seed(1)
    depth = torch.rand(Ncam, D, Hf, Wf, generator=generator).softmax(dim=1)
    context = torch.randn(Ncam, Hf, Wf, C, generator=generator)
    with torch.enable_grad():
        trained = lift_to_bev(depth, context, geometry)  # torch index_add_ path
    with torch.no_grad():
        kernel = lift_to_bev(depth, context, geometry)  # numba bev_pool
    assert trained.shape == kernel.shape == (1, C, *config.grid.shape)
    assert kernel.abs().sum() > 0, 'some frustum points must land in the grid'
    torch.testing.assert_close(trained, kernel, rtol=1e-5, atol=1e-5)


def test_torch_pillar_max_matches_scatter_max_kernel(small_frame):
    config, _, lidar, _ = small_frame
    Nk = lidar.pillars.features.shape[0]
    C = 6
    features = torch.randn(Nk, C, generator=torch.Generator().manual_seed(2))
    with torch.enable_grad():
        trained = pillars_to_bev(features, lidar, config.grid.shape)  # scatter_reduce(amax) path
    with torch.no_grad():
        kernel = pillars_to_bev(features, lidar, config.grid.shape)  # scatter_max + scatter_to_bev
    assert trained.shape == kernel.shape == (1, C, *config.grid.shape)
    assert kernel.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(trained, kernel)
    pooled = scatter_max(features.numpy(), lidar.pillars.point_pillar, lidar.pillars.num_pillars)
    expected = scatter_to_bev(pooled, lidar.pillars.coords, config.grid.shape)  # (C, ny, nx)
    np.testing.assert_array_equal(kernel[0].numpy(), expected)


# ---------------------------------------------------------------------------------------------------
# Gated fuser


@pytest.mark.parametrize('spatial', [True, False])
def test_gated_fuser_ignores_an_absent_modality(spatial):
    torch.manual_seed(0)
    fuser = GatedFuser([4, 3, 2], FuserConfig(kind='gated', channels=6, spatial_gate=spatial)).eval()
    maps = [torch.randn(1, c, 8, 8) for c in (4, 3, 2)]
    present = torch.tensor([True, False, True])
    health = torch.tensor([0.9, 0.0, 0.7])
    with torch.no_grad():
        fused, gates = fuser(maps, present, health)
        garbage = [maps[0], torch.full((1, 3, 8, 8), float('nan')), maps[2]]
        fused_garbage, gates_garbage = fuser(garbage, present, health)
        huge = [maps[0], torch.full((1, 3, 8, 8), 1e30), maps[2]]
        fused_huge, _ = fuser(huge, present, torch.tensor([0.9, 1.0, 0.7]))  # even a health claim is ignored
    assert gates[1] == 0 and gates[0] > 0 and gates[2] > 0
    assert torch.equal(gates, gates_garbage)
    assert torch.equal(fused, fused_garbage)
    assert torch.equal(fused, fused_huge)


def test_gated_fuser_turns_down_an_unhealthy_modality():
    fuser = GatedFuser([4, 4, 4], FuserConfig(kind='gated', channels=4)).eval()
    maps = [torch.randn(1, 4, 8, 8) for _ in range(3)]
    present = torch.tensor([True, True, True])
    with torch.no_grad():
        _, gates = fuser(maps, present, torch.tensor([1.0, 0.1, 0.6]))
    assert gates[0] > gates[2] > gates[1]
    assert gates[1] < 0.1 < 0.9 < gates[0]


# ---------------------------------------------------------------------------------------------------
# Inputs


def test_camera_geometry_is_rebuilt_only_when_calibration_changes(make_config, calibration):
    config = make_config()
    cache = CameraGeometryCache(config.grid, config.camera)
    intrinsics, extrinsics = calibration
    first = cache.geometry(intrinsics, extrinsics)
    assert cache.geometry(list(intrinsics), list(extrinsics)) is first
    assert cache.rebuilds == 1
    nudged = [RigidTransform(extrinsics[0].rotation, extrinsics[0].translation + [0.1, 0, 0]), *extrinsics[1:]]
    second = cache.geometry(intrinsics, nudged)
    assert second is not first and cache.rebuilds == 2
    assert second.frustum_shape == (6, config.camera.num_depth_bins, *config.camera.feature_size[::-1])


def test_input_errors_name_the_problem(make_config, calibration):
    config = make_config()
    with pytest.raises(ModelError, match=r'lidar points: expected \(N, 5\) columns x, y, z, intensity, dt'):
        pillar_inputs(np.zeros((10, 4), np.float32), config.grid, config.lidar)
    with pytest.raises(ModelError, match='health: expected 3 values in'):
        model_inputs(health=[0.5, 2.0, 1.0])
    intrinsics, extrinsics = calibration
    geometry = CameraGeometryCache(config.grid, config.camera).geometry(intrinsics, extrinsics)
    with pytest.raises(ModelError, match=r'expected \(H, W, 3\) uint8 RGB images of one size'):
        camera_inputs([np.zeros((225, 400, 3), np.float32)] * 6, geometry, config.camera)
    with pytest.raises(ModelError, match='5 images for a geometry of 6 cameras'):
        camera_inputs([np.zeros((225, 400, 3), np.uint8)] * 5, geometry, config.camera)
    with pytest.raises(ModelError, match='6 intrinsics for 5 extrinsics'):
        CameraGeometryCache(config.grid, config.camera).geometry(intrinsics, extrinsics[:5])


def test_health_of_an_absent_modality_is_zero(small_frame):
    inputs = frame_of(small_frame, ('lidar',), health=[0.8, 0.9, 1.0])
    assert inputs.health.tolist() == pytest.approx([0.0, 0.9, 0.0])
    assert model_inputs(lidar=small_frame[2]).health.tolist() == [0.0, 1.0, 0.0]


# ---------------------------------------------------------------------------------------------------
# The real configurations


def test_cpu_default_model_runs_on_a_realistic_frame(calibration, point_makers):
    """Six cameras at the default size, 30k lidar points, 300 radar points (timing is for bench)."""
    torch.manual_seed(0)
    grid = GridConfig(cell_size=0.8)
    config = cpu_model_config(grid)
    assert grid.shape == (128, 128) and config.head_shape == (128 // config.head.output_stride,) * 2
    make_lidar, make_radar = point_makers
    rng = np.random.default_rng(3)
    intrinsics, extrinsics = calibration
    geometry = CameraGeometryCache(grid, config.camera).geometry(intrinsics, extrinsics)
    images = [rng.integers(0, 256, (225, 400, 3), dtype=np.uint8) for _ in range(6)]
    inputs = model_inputs(camera_inputs(images, geometry, config.camera),
                          pillar_inputs(make_lidar(rng, 30_000, 50.0), grid, config.lidar),
                          pillar_inputs(make_radar(rng, 300, 50.0), grid, config.radar, 'radar'))
    assert inputs.camera.images.shape == (6, 3, 128, 352)
    net = FusionNet(config).eval()
    with torch.inference_mode():
        start = time.perf_counter()
        out = net(inputs)
        elapsed = time.perf_counter() - start
    detections = decode_detections(out, grid, config.head, 0, 'base_link')
    assert out.head.heatmap.shape == (1, 5, *config.head_shape)
    assert len(detections) <= config.head.max_detections
    print(f'cpu model forward (first call, {torch.get_num_threads()} threads): {elapsed * 1e3:.1f} ms')


def test_gpu_config_builds_and_follows_the_grid():
    fine = gpu_model_config(GridConfig(cell_size=0.1))
    assert fine.grid.shape == (1024, 1024)
    assert fine.camera.image_size == (704, 256) and fine.camera.feature_size == (88, 32)
    assert fine.head.output_stride == 4 and fine.head_shape == (256, 256)
    coarse = gpu_model_config(GridConfig(cell_size=0.4))
    assert coarse.head.output_stride == 1
    net = FusionNet(coarse)
    assert sum(p.numel() for p in net.parameters()) > sum(p.numel() for p in FusionNet(cpu_model_config(
        GridConfig(cell_size=0.8))).parameters())


def test_a_present_modality_without_points_is_a_zero_map(small_frame):
    config = small_frame[0]
    empty = pillar_inputs(np.zeros((0, 5), np.float32), config.grid, config.lidar)
    net = FusionNet(config).eval()
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out = net(model_inputs(lidar=empty))
        assert out.present.tolist() == [False, True, False]
        assert torch.all(out.bev['lidar'] == 0) and torch.isfinite(out.head.heatmap).all()


def test_sweeps_are_stacked_newest_first_with_their_age():
    newest = np.ones((2, 4), np.float32)
    older = np.full((3, 4), 2.0, np.float32)
    oldest = np.full((1, 4), 3.0, np.float32)
    stacked = accumulate_sweeps([older, oldest, newest], [0.05, 0.1, 0.0], max_sweeps=2)
    assert stacked.shape == (5, 5) and stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked[:, 0], [1, 1, 2, 2, 2])
    np.testing.assert_allclose(stacked[:, 4], [0, 0, 0.05, 0.05, 0.05])
    with pytest.raises(ModelError, match='2 sweeps but 1 ages'):
        accumulate_sweeps([newest, older], [0.0], max_sweeps=3)


def test_camera_inputs_of_another_size_are_rejected(small_frame, make_config):
    config, camera, _, _ = small_frame
    net = FusionNet(config).eval()
    wrong = type(camera)(camera.images[:, :, :32, :64].contiguous(), camera.geometry)
    with pytest.raises(ModelError, match=r'camera: images 64x32 and geometry \(6, 19, 3, 8\) do not match'):
        net(model_inputs(camera=wrong))


def test_radar_pillars_given_as_lidar_are_rejected(small_frame):
    config, _, _, radar = small_frame
    with pytest.raises(ModelError, match=r'pillars: features have 12 columns, the encoder expects 5 fields'):
        FusionNet(config).eval()(model_inputs(lidar=radar))


def test_lift_puts_the_front_camera_in_front_at_its_depth(small_frame):
    """All probability on the 10 m bin of the front camera: its features land 10 m ahead of it."""
    config, camera, _, _ = small_frame
    Ncam, D, Hf, Wf = camera.geometry.frustum_shape
    depth = torch.zeros(Ncam, D, Hf, Wf)
    bin_10m = int(np.flatnonzero(config.camera.depth_values() == 10.0)[0])
    depth[0, bin_10m] = 1.0  # camera 0 is cam_front, mounted at x = 1.7 m looking along +x
    context = torch.ones(Ncam, Hf, Wf, 1)
    with torch.no_grad():
        bev = lift_to_bev(depth, context, camera.geometry)[0, 0]  # (ny, nx)
    rows, cols = torch.nonzero(bev, as_tuple=True)
    x = config.grid.x_range[0] + (cols.double() + 0.5) * config.grid.cell_size
    y = config.grid.y_range[0] + (rows.double() + 0.5) * config.grid.cell_size
    # The top feature row looks up 15 degrees: 10 m out it is 4.1 m high, above the grid's z range.
    assert (Hf, Wf) == (3, 8) and float(bev.sum()) == 2 * Wf, 'the two lower rows land in the grid, once each'
    assert torch.all((x > 11.0) & (x < 12.2)), x.unique()
    assert float(y.min()) < -3.0 and float(y.max()) > 3.0  # the 70 degree field of view spans about +-7 m
