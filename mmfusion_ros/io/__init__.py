"""Recordings in and out: rosbag2 bags (sqlite3 and mcap) as raw CDR, dataset readers, JSON results.

Names are imported on first use, so a tool that only writes JSON does not need rosbags installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    'QOS_PRESETS': 'bag', 'STORAGES': 'bag', 'BagMessage': 'bag', 'BagReader': 'bag', 'BagWriter': 'bag',
    'QosProfile': 'bag', 'TopicInfo': 'bag', 'TruncatedFile': 'bag',
    'NuscenesCamera': 'nuscenes', 'NuscenesKeyframe': 'nuscenes', 'load_nuscenes_keyframe': 'nuscenes',
    'write_json': 'json_file',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
