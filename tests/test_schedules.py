"""Tests for tf_detcon.modeling.schedules: BYOL's EMA τ."""

import numpy as np

from tf_detcon.modeling import schedules


def test_ema_tau_follows_the_cosine_schedule():
  for step, expected in ((0, 0.99), (50, 1 - 0.01 * 0.5), (100, 1.0)):
    np.testing.assert_allclose(float(schedules.ema_tau(step, 100, 0.99)), expected,
                               rtol=1e-6)
