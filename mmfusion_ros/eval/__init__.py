"""Offline evaluation of what the pipeline produces against ground truth."""

from __future__ import annotations

from .detection import (
    DETECTION_CLASSES,
    TP_METRICS,
    ClassMetrics,
    DetectionEvalConfig,
    DetectionMetrics,
    evaluate_detections,
)

__all__ = [
    'DETECTION_CLASSES',
    'TP_METRICS',
    'ClassMetrics',
    'DetectionEvalConfig',
    'DetectionMetrics',
    'evaluate_detections',
]
