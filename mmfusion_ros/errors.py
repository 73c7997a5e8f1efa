"""The errors mmfusion_ros raises: one base class, one subclass per stage.

Every message names the file, topic, field or value at fault, so the command line can print it as
one line. Lower-level errors are re-raised as ours with ``raise ... from err``.
"""

from __future__ import annotations

__all__ = [
    'BagError',
    'CalibrationError',
    'ConfigError',
    'DecodeError',
    'EncodeError',
    'EvalError',
    'GeometryError',
    'MessageError',
    'MmfusionError',
    'ModelError',
    'ReportError',
    'SyncError',
    'TransformError',
    'TransportError',
]


class MmfusionError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(MmfusionError):
    """A parameter file or value is invalid; the message starts with the key path."""


class MessageError(MmfusionError):
    """A message could not be converted between CDR bytes and typed samples."""


class DecodeError(MessageError):
    """CDR bytes or their content (encoding, layout, sizes) are not what the type promises."""


class EncodeError(MessageError):
    """A typed sample cannot be written as the requested message."""


class BagError(MmfusionError):
    """A rosbag2 recording cannot be opened, read or written."""


class SyncError(MmfusionError):
    """Synchronisation of sensor streams failed."""


class TransformError(SyncError):
    """A transform between two frames is unknown or outside the buffered time range."""


class CalibrationError(MmfusionError):
    """Calibration (intrinsics, extrinsics) is missing or inconsistent."""


class ReportError(MmfusionError):
    """A result file or report cannot be written."""


class GeometryError(MmfusionError):
    """Input to a geometry kernel (points, grid, calibration, feature maps) has the wrong shape or type."""


class EvalError(MmfusionError):
    """Input to an evaluation (ground truth, predictions, their pairing) is inconsistent or invalid."""


class ModelError(MmfusionError):
    """Input to the network or its decoding (tensors, boxes, class names) is inconsistent."""


class TransportError(MmfusionError):
    """Messages cannot be moved over DDS: unknown type, bytes that are not that type, or a closed bridge."""
