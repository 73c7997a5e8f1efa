"""Pictures of the replay report: bird's-eye view, camera boxes, the video and index.html.

Nothing here runs in the detection pipeline; ``mmfusion replay BAG --report DIR`` calls it per
frame. Pictures are (H, W, 3) uint8 BGR arrays, ready for ``cv2.imwrite``.
"""

from __future__ import annotations

from .bev import bev_map_size, pixel_to_world, render_bev, world_to_pixel
from .camera import camera_mosaic, render_camera
from .palette import agreement_colour
from .report import BevVideo, write_index_html

__all__ = [
    'BevVideo',
    'agreement_colour',
    'bev_map_size',
    'camera_mosaic',
    'pixel_to_world',
    'render_bev',
    'render_camera',
    'world_to_pixel',
    'write_index_html',
]
