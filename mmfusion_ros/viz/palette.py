"""Colours, fonts and box geometry shared by the bird's-eye view and the camera pictures.

Colours are OpenCV BGR tuples. A detection's colour says whether the modalities agree on it:
green when it carries no flag, orange with one flag reason, red with two or more. Ground truth is
always pure white and nothing else in the map area is, so a picture can be checked by colour.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from mmfusion_ros.errors import ReportError
from mmfusion_ros.types import Detections3D

__all__ = [
    'AGREES',
    'BACKGROUND',
    'EGO',
    'FLAGGED_ONE',
    'FLAGGED_SEVERAL',
    'RADAR_MOVING',
    'RADAR_STATIC',
    'RING',
    'TRUTH',
    'agreement_colour',
    'box_corners',
    'checked_flags',
    'cv_points',
    'draw_text',
    'short_reason',
]

Colour = tuple[int, int, int]

AGREES: Colour = (60, 220, 60)  # green: no flag
FLAGGED_ONE: Colour = (0, 150, 255)  # orange: one flag reason
FLAGGED_SEVERAL: Colour = (40, 40, 235)  # red: two or more reasons
TRUTH: Colour = (255, 255, 255)  # white outlines
TEXT: Colour = (230, 230, 230)
DIM_TEXT: Colour = (150, 150, 150)
BACKGROUND: Colour = (26, 22, 20)
PANEL: Colour = (40, 35, 32)
RING: Colour = (62, 62, 62)
RING_LABEL: Colour = (115, 115, 115)
EGO: Colour = (235, 165, 80)  # blue
RADAR_STATIC: Colour = (230, 230, 0)  # cyan
RADAR_MOVING: Colour = (230, 60, 230)  # magenta

FONT = cv2.FONT_HERSHEY_SIMPLEX
SHIFT = 4  # sub-pixel bits for cv2 drawing: coordinates are passed times 2**SHIFT
_SCALE = 1 << SHIFT
MAX_REASON_CHARS = 22


def agreement_colour(reasons: Sequence[str]) -> Colour:
    """Green for no flag, orange for one reason, red for several."""
    if not reasons:
        return AGREES
    return FLAGGED_ONE if len(reasons) == 1 else FLAGGED_SEVERAL


def short_reason(reasons: Sequence[str]) -> str:
    """The first flag reason, cut to fit beside a box; ASCII only (Hershey fonts have nothing else)."""
    if not reasons:
        return ''
    text = str(reasons[0]).encode('ascii', 'replace').decode('ascii')
    if len(text) > MAX_REASON_CHARS:
        text = text[:MAX_REASON_CHARS - 2] + '..'
    return text if len(reasons) == 1 else f'{text} +{len(reasons) - 1}'


def checked_flags(flags: Sequence[Sequence[str]] | None, count: int) -> list[tuple[str, ...]]:
    """One tuple of reasons per detection; ``None`` means no detection is flagged."""
    if flags is None:
        return [()] * count
    if isinstance(flags, str) or len(flags) != count:
        got = 'a string' if isinstance(flags, str) else f'{len(flags)} entries'
        raise ReportError(f'flags: expected one sequence of reasons per detection ({count}), got {got}')
    checked = []
    for i, reasons in enumerate(flags):
        if isinstance(reasons, str):
            raise ReportError(f'flags[{i}]: expected a sequence of reason strings, got the string {reasons!r}')
        checked.append(tuple(str(r) for r in reasons))
    return checked


def box_corners(detections: Detections3D) -> np.ndarray:
    """(N, 8, 3) float64 corners: bottom face then top face, each front-left, front-right,
    rear-right, rear-left (front is along the heading, left is +y of the box)."""
    n = len(detections)
    half_l, half_w, half_h = (detections.sizes[:, k, None] / 2 for k in range(3))  # (N, 1) each
    along = np.array([1, 1, -1, -1] * 2, np.float64)[None] * half_l  # (N, 8)
    across = np.array([1, -1, -1, 1] * 2, np.float64)[None] * half_w
    up = np.array([-1] * 4 + [1] * 4, np.float64)[None] * half_h
    cos, sin = np.cos(detections.yaws)[:, None], np.sin(detections.yaws)[:, None]  # (N, 1)
    corners = np.stack([along * cos - across * sin, along * sin + across * cos, up], axis=-1)  # (N, 8, 3)
    assert corners.shape == (n, 8, 3), 'corner array shape'
    return corners + detections.centers[:, None, :]


def cv_points(uv: np.ndarray) -> np.ndarray:
    """Continuous image coordinates to OpenCV drawing coordinates, fixed point with SHIFT bits.

    Pixel ``(col, row)`` covers ``[col, col + 1) x [row, row + 1)`` here, as in
    ``geometry/projection.py``; OpenCV puts pixel centres on integers, hence the half pixel.
    Values are clamped far outside any image so that they fit OpenCV's int32 points.
    """
    fixed = np.round((np.asarray(uv, np.float64) - 0.5) * _SCALE)
    return np.clip(fixed, -(1 << 28), 1 << 28).astype(np.int32)


def draw_text(image: np.ndarray, text: str, origin: tuple[int, int], colour: Colour, scale: float = 0.4,
              backing: Colour | None = None) -> tuple[int, int]:
    """Text with its baseline-left at ``origin`` (pixels), on a filled ``backing`` box when given.

    Returns the text's (width, height) in pixels.
    """
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x, y = origin
    if backing is not None:
        cv2.rectangle(image, (x - 2, y - height - 2), (x + width + 1, y + baseline), backing, cv2.FILLED)
    cv2.putText(image, text, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)
    return width, height
