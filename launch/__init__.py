"""The absl front ends; installed as the package `tf_detcon_launch` (setup.py's commands)."""
