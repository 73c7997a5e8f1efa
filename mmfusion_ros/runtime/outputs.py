"""A ``FusionResult`` as the service's output messages (standard types only).

- objects: ``vision_msgs/Detection3DArray`` (the convention of ``msgs/README.md``: velocity as a
  second hypothesis); ids are the tracker's (``t<n>``): an object keeps its id over frames;
- disagreements: ``diagnostic_msgs/DiagnosticArray``, one ``DiagnosticStatus`` per flagged
  detection: ``name`` = ``object/<id>``, ``level`` WARN, ``message`` = the reasons joined by ``, ``,
  ``hardware_id`` = the class, and key-values: ``id``, ``reasons``, ``score``, ``x``/``y``/``z``, and
  per modality ``<m>_head`` (its own head's score, ``absent`` when the modality is not in the frame),
  ``<m>_expected`` and ``<m>_supports``, then ``lidar_points`` and ``radar_points``. An empty array
  is published too: no flags is news;
- markers: ``visualization_msgs/MarkerArray``, green where the modalities agree, orange where a
  detection is flagged; the label carries class, score and the first reason.
"""

from __future__ import annotations

import numpy as np

from ..config import ConsistencySection
from ..model.config import MODALITIES
from ..pipeline import FusionResult
from ..types import BoxMarker, Detections3D, DiagnosticStatus

__all__ = ['AGREE_RGBA', 'FLAGGED_RGBA', 'box_markers', 'disagreement_statuses']

AGREE_RGBA = np.array([0.1, 0.85, 0.3, 0.45])
FLAGGED_RGBA = np.array([1.0, 0.5, 0.0, 0.6])


def disagreement_statuses(result: FusionResult, detections: Detections3D,
                          config: ConsistencySection) -> list[DiagnosticStatus]:
    """One WARN status per flagged detection, with each modality's evidence (module docstring)."""
    evidence = result.evidence
    support = evidence.supports(config)
    expected = evidence.expected()
    residual = evidence.doppler_residual(detections.velocities)
    statuses = []
    for row, reasons in enumerate(result.flags):
        if not reasons:
            continue
        scores = result.flag_scores[row] if result.flag_scores else {}
        values: list[tuple[str, str]] = [
            ('id', detections.ids[row]), ('reasons', ','.join(reasons)),
            ('reason_scores', ','.join(f'{scores.get(r, float("nan")):.2f}' for r in reasons)),
            ('score', f'{detections.scores[row]:.3f}'), ('class', detections.labels[row]),
            *((axis, f'{v:.2f}') for axis, v in zip('xyz', detections.centers[row])),
        ]
        for k, modality in enumerate(MODALITIES):
            head = evidence.head[row, k]
            values += [(f'{modality}_head', 'absent' if np.isnan(head) else f'{head:.3f}'),
                       (f'{modality}_expected', str(bool(expected[row, k])).lower()),
                       (f'{modality}_supports', str(bool(support[row, k])).lower())]
        values += [('lidar_points', str(int(evidence.lidar_points[row]))),
                   ('radar_points', str(int(evidence.radar_points[row]))),
                   ('radar_radial_mps', 'nan' if np.isnan(evidence.doppler_measured[row])
                    else f'{evidence.doppler_measured[row]:.2f}'),
                   ('radar_radial_residual_mps', 'nan' if np.isnan(residual[row]) else f'{residual[row]:.2f}')]
        statuses.append(DiagnosticStatus(DiagnosticStatus.WARN, f'object/{detections.ids[row]}', ', '.join(reasons),
                                         detections.labels[row], tuple(values)))
    return statuses


def box_markers(result: FusionResult, detections: Detections3D, lifetime_ns: int = 0) -> list[BoxMarker]:
    """A box per detection, coloured by agreement, labelled with class, score and first flag."""
    markers = []
    for row in range(len(detections)):
        reasons = result.flags[row]
        label = f'{detections.labels[row]} {detections.scores[row]:.2f}' + (f' {reasons[0]}' if reasons else '')
        markers.append(BoxMarker(row, detections.centers[row], detections.sizes[row], float(detections.yaws[row]),
                                 FLAGGED_RGBA if reasons else AGREE_RGBA, label, detections.velocities[row],
                                 lifetime_ns))
    return markers
