"""Primitives shared by the host pipeline and the train step: colour ops, stateless seeds and
cross-replica helpers."""
