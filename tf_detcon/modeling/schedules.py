"""Schedules over training steps that Model Garden does not have: the EMA decay τ of target
networks (BYOL). The learning rate is Model Garden's (`configs/optimization.py`)."""

import math

import tensorflow as tf


def ema_tau(step: tf.Tensor, total_steps: int, tau_base: float) -> tf.Tensor:
  """BYOL's target decay τ_k = 1 − (1 − τ_0)(cos(πk/K) + 1)/2, from τ_0 up to 1."""
  progress = tf.minimum(tf.cast(step, tf.float32) / float(max(total_steps, 1)), 1.0)
  return 1.0 - (1.0 - tau_base) * (tf.cos(math.pi * progress) + 1.0) / 2.0
