"""ROS 2 nodes: the only part of the package that imports rclpy, and only when a node is made.

``fusion_node`` declares its parameters, loads the parameter files into a ``FusionConfig``, hands
serialized messages to ``runtime.service.FusionService`` and publishes what it returns. Importing
this package (or ``fusion_node``) needs no ROS install; making a node or calling ``main`` does.
"""
