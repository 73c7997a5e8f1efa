"""Running the detector live: moving ROS 2 messages in and out without rclpy.

``dds`` carries serialized messages (raw CDR bytes) over Cyclone DDS on ROS 2's wire conventions.
"""
