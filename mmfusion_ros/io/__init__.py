"""Recordings in and out: rosbag2 bags (sqlite3 and mcap) as raw CDR, and dataset readers."""

from mmfusion_ros.io.bag import (
    QOS_PRESETS,
    STORAGES,
    BagMessage,
    BagReader,
    BagWriter,
    QosProfile,
    TopicInfo,
    TruncatedFile,
)
from mmfusion_ros.io.nuscenes import NuscenesCamera, NuscenesKeyframe, load_nuscenes_keyframe

__all__ = [
    'QOS_PRESETS',
    'STORAGES',
    'BagMessage',
    'BagReader',
    'BagWriter',
    'NuscenesCamera',
    'NuscenesKeyframe',
    'QosProfile',
    'TopicInfo',
    'TruncatedFile',
    'load_nuscenes_keyframe',
]
