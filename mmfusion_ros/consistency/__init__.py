"""Modality consistency: what each modality says about each detection, and where they disagree."""

from __future__ import annotations

from .evidence import DetectionEvidence, detection_evidence, disagreement_flags, flag_modality

__all__ = ['DetectionEvidence', 'detection_evidence', 'disagreement_flags', 'flag_modality']
