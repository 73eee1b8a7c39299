"""Tests for tf_detcon.schedules: learning rate (warmup, cosine, COCO piecewise) and EMA τ."""

import math

import numpy as np

from tf_detcon import schedules
from tf_detcon.configs import pretrain as pretrain_config


def test_lr_is_base_times_batch_over_256_with_warmup_then_cosine():
  cfg = pretrain_config.OptimizationConfig(base_learning_rate=0.2, warmup_fraction=0.1)
  schedule = schedules.build_schedule(cfg, total_steps=100, global_batch=4096)
  peak = 0.2 * 4096 / 256
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), peak * 5 / 10, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), peak, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(55)), peak * 0.5 * (1 + math.cos(math.pi * 0.5)),
                             rtol=1e-5)
  assert abs(float(schedule(100))) < 1e-6


def test_warmup_in_epochs_and_the_coco_piecewise_schedule():
  cfg = pretrain_config.OptimizationConfig(base_learning_rate=0.3, warmup_epochs=1,
                                           examples_per_epoch=2560, schedule='piecewise_coco')
  schedule = schedules.build_schedule(cfg, total_steps=1000, global_batch=256)
  assert schedules.warmup_steps(cfg, 1000, 256) == 10
  np.testing.assert_allclose([float(schedule(s)) for s in (5, 10, 959, 960, 979, 980)],
                             [0.15, 0.3, 0.3, 0.03, 0.03, 0.003], rtol=1e-5)


def test_ema_tau_follows_the_cosine_schedule():
  for step, expected in ((0, 0.99), (50, 1 - 0.01 * 0.5), (100, 1.0)):
    np.testing.assert_allclose(float(schedules.ema_tau(step, 100, 0.99)), expected,
                               rtol=1e-6)
