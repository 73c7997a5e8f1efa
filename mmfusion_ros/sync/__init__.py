"""Putting sensor streams on one timeline: the time-aware transform tree."""

from mmfusion_ros.sync.tf_buffer import DEFAULT_CACHE_NS, TfBuffer

__all__ = [
    'DEFAULT_CACHE_NS',
    'TfBuffer',
]
