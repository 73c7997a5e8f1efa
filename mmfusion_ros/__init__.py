"""mmfusion_ros: camera + lidar + radar 3D detection in bird's-eye view, with modality agreement."""

__version__ = '0.1.0'
