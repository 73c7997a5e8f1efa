"""Putting sensor streams on one timeline: the time-aware transform tree and the online synchronizer."""

from mmfusion_ros.sync.approximate import (
    ApproximateTimeSynchronizer,
    InputStats,
    SyncedSet,
    SyncInput,
    SyncStats,
)
from mmfusion_ros.sync.tf_buffer import DEFAULT_CACHE_NS, TfBuffer

__all__ = [
    'DEFAULT_CACHE_NS',
    'ApproximateTimeSynchronizer',
    'InputStats',
    'SyncInput',
    'SyncStats',
    'SyncedSet',
    'TfBuffer',
]
