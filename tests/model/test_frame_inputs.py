"""Frames from recordings become network inputs with exactly the modalities they have."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmfusion_ros.config import load_config
from mmfusion_ros.errors import ModelError
from mmfusion_ros.eval.run import SUBSETS, with_modalities
from mmfusion_ros.model import CameraGeometryCache, FusionNet
from mmfusion_ros.model.config import ModelConfig, PillarEncoderConfig, model_config
from mmfusion_ros.model.inputs import frame_inputs
from mmfusion_ros.sync.keyframes import bag_frames
from mmfusion_ros.types import RigidTransform

FUSION = load_config()
MODEL = model_config(FUSION)


@pytest.fixture(scope='module')
def frame(sim_dataset):
    frames = list(bag_frames(sim_dataset / 'scene_00001', FUSION, every=6))
    return frames[-2]


@pytest.mark.parametrize('subset', list(SUBSETS))
def test_every_subset_runs_with_its_modalities_flagged(frame, subset):
    cache = CameraGeometryCache(MODEL.grid, MODEL.camera)
    inputs = frame_inputs(with_modalities(frame, SUBSETS[subset]), MODEL, cache)
    assert [m for m, p in zip(('camera', 'lidar', 'radar'), inputs.present) if p] == list(SUBSETS[subset])
    with torch.inference_mode():
        out = FusionNet(MODEL).eval()(inputs)
    assert out.head.heatmap.shape == (1, MODEL.head.num_classes, *MODEL.head_shape)
    assert torch.isfinite(out.head.heatmap).all()


def test_the_lift_uses_the_calibration_at_the_frame_stamp(frame):
    cache = CameraGeometryCache(MODEL.grid, MODEL.camera)
    frame_inputs(frame, MODEL, cache)
    frame_inputs(frame, MODEL, cache)
    assert cache.rebuilds == 1  # unchanged calibration: built once
    front = frame.cameras[0]
    shifted = dataclasses.replace(front, camera_to_base=RigidTransform(
        front.camera_to_base.rotation, front.camera_to_base.translation + np.array([0.5, 0.0, 0.0])))
    frame_inputs(dataclasses.replace(frame, cameras=(shifted, *frame.cameras[1:])), MODEL, cache)
    assert cache.rebuilds == 2


def test_a_network_reading_a_field_frames_lack_is_refused(frame):
    odd = dataclasses.replace(MODEL, lidar=PillarEncoderConfig(point_fields=('x', 'y', 'z', 'ring', 'dt')))
    assert isinstance(odd, ModelConfig)
    with pytest.raises(ModelError, match='lidar points: the network reads ring'):
        frame_inputs(frame, odd, CameraGeometryCache(odd.grid, odd.camera))
