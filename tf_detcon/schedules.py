"""Schedules over training steps: the learning rate (linear warmup, then cosine or DetCon's
COCO piecewise constant) and the EMA decay τ of target networks (BYOL). Modeling may import this
module; it depends only on the configs."""

import math
from typing import Any, Dict

import tensorflow as tf
import tf_keras

from tf_detcon.configs import pretrain as pretrain_config


class WarmupSchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `peak` over `warmup_steps`, then cosine to 0 at `total_steps`
  (BYOL/DetCon), or constant with ÷10 at 96% and 98% of training (DetCon's COCO runs)."""

  def __init__(self, peak: float, total_steps: int, warmup_steps: int, kind: str = 'cosine'):
    super().__init__()
    if kind not in ('cosine', 'piecewise_coco'):
      raise ValueError(f"schedule must be 'cosine' or 'piecewise_coco', got {kind!r}")
    self.peak, self.total_steps, self.warmup_steps, self.kind = (peak, total_steps,
                                                                 warmup_steps, kind)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(max(self.warmup_steps, 1))
    after = tf.maximum(step - self.warmup_steps, 0.0)
    span = float(max(self.total_steps - self.warmup_steps, 1))
    if self.kind == 'cosine':
      decayed = self.peak * 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(after / span, 1.0)))
    else:
      decayed = self.peak * tf.where(step < 0.96 * self.total_steps, 1.0,
                                     tf.where(step < 0.98 * self.total_steps, 0.1, 0.01))
    return tf.where(step < self.warmup_steps, self.peak * step / warmup, decayed)

  def get_config(self) -> Dict[str, Any]:
    return dict(peak=self.peak, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                kind=self.kind)


def peak_learning_rate(cfg: pretrain_config.OptimizationConfig, global_batch: int) -> float:
  return cfg.base_learning_rate * global_batch / 256.0


def warmup_steps(cfg: pretrain_config.OptimizationConfig, total_steps: int,
                 global_batch: int) -> int:
  if cfg.warmup_epochs > 0:
    return int(cfg.warmup_epochs * cfg.examples_per_epoch // global_batch)
  return int(cfg.warmup_fraction * total_steps)


def build_schedule(cfg: pretrain_config.OptimizationConfig, total_steps: int,
                   global_batch: int) -> WarmupSchedule:
  return WarmupSchedule(peak_learning_rate(cfg, global_batch), total_steps,
                        warmup_steps(cfg, total_steps, global_batch), cfg.schedule)


def ema_tau(step: tf.Tensor, total_steps: int, tau_base: float) -> tf.Tensor:
  """BYOL's target decay τ_k = 1 − (1 − τ_0)(cos(πk/K) + 1)/2, from τ_0 up to 1."""
  progress = tf.minimum(tf.cast(step, tf.float32) / float(max(total_steps, 1)), 1.0)
  return 1.0 - (1.0 - tau_base) * (tf.cos(math.pi * progress) + 1.0) / 2.0
