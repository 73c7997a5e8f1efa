"""ROS 2 messages to typed samples and back, without rclpy: CDR bytes in, CDR bytes out.

``decode`` turns the raw payload of one message (from a bag or a subscription with
``raw=True``) into the samples of ``mmfusion_ros.types``; ``encode`` writes samples as messages.
Both use one typestore: ROS 2 Humble plus the vision_msgs and radar_msgs definitions shipped in
``definitions/``. Failures are ``DecodeError`` / ``EncodeError`` with one line naming the topic,
field and value.
"""

from mmfusion_ros.msgs.decode import (
    decode,
    decode_camera_info,
    decode_compressed_image,
    decode_detections,
    decode_diagnostics,
    decode_image,
    decode_markers,
    decode_pointcloud,
    decode_radar,
    decode_tf,
)
from mmfusion_ros.msgs.encode import (
    encode_camera_info,
    encode_compressed_image,
    encode_detections,
    encode_diagnostics,
    encode_float64,
    encode_image,
    encode_markers,
    encode_pointcloud,
    encode_radar,
    encode_tf,
)
from mmfusion_ros.msgs.typestore import deserialize, serialize, shipped_msgtypes, typestore

__all__ = [
    'decode',
    'decode_camera_info',
    'decode_compressed_image',
    'decode_detections',
    'decode_diagnostics',
    'decode_image',
    'decode_markers',
    'decode_pointcloud',
    'decode_radar',
    'decode_tf',
    'deserialize',
    'encode_camera_info',
    'encode_compressed_image',
    'encode_detections',
    'encode_diagnostics',
    'encode_float64',
    'encode_image',
    'encode_markers',
    'encode_pointcloud',
    'encode_radar',
    'encode_tf',
    'serialize',
    'shipped_msgtypes',
    'typestore',
]
