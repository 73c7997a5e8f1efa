"""The BEV fusion network: encoders per modality, fuser, backbone, CenterPoint-style heads, decoding.

``network.py`` reads top-down as the stages run; ``inputs.py`` builds a frame's inputs from numpy;
``decode.py`` turns head maps into boxes (and boxes into training targets); ``config.py`` holds the
parameters, the CPU real-time model by default.
"""

from __future__ import annotations

from .config import (
    CLASSES,
    MODALITIES,
    BevBackboneConfig,
    CameraEncoderConfig,
    FuserConfig,
    HeadConfig,
    ModelConfig,
    ModelError,
    PillarEncoderConfig,
    cpu_model_config,
    gpu_model_config,
)
from .decode import HeadTargets, decode_detections, encode_targets, gaussian_radius
from .inputs import (
    CameraGeometryCache,
    CameraInputs,
    ModelInputs,
    PillarInputs,
    accumulate_sweeps,
    camera_inputs,
    model_inputs,
    pillar_inputs,
)
from .network import (
    ABSENT_LOGIT,
    AuxHeatmapHead,
    BevBackbone,
    CameraEncoder,
    CenterHead,
    ConvFuser,
    FusionNet,
    GatedFuser,
    HeadOutputs,
    NetOutputs,
    PillarEncoder,
    lift_to_bev,
    pillars_to_bev,
)

__all__ = [
    'ABSENT_LOGIT',
    'CLASSES',
    'MODALITIES',
    'AuxHeatmapHead',
    'BevBackbone',
    'BevBackboneConfig',
    'CameraEncoder',
    'CameraEncoderConfig',
    'CameraGeometryCache',
    'CameraInputs',
    'CenterHead',
    'ConvFuser',
    'FuserConfig',
    'FusionNet',
    'GatedFuser',
    'HeadConfig',
    'HeadOutputs',
    'HeadTargets',
    'ModelConfig',
    'ModelError',
    'ModelInputs',
    'NetOutputs',
    'PillarEncoder',
    'PillarEncoderConfig',
    'PillarInputs',
    'accumulate_sweeps',
    'camera_inputs',
    'cpu_model_config',
    'decode_detections',
    'encode_targets',
    'gaussian_radius',
    'gpu_model_config',
    'lift_to_bev',
    'model_inputs',
    'pillar_inputs',
    'pillars_to_bev',
]
