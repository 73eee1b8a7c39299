"""Tests for tf_detcon.modeling.pooling against the one-hot → average-pool definition."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import blocky_ids
from tf_detcon.modeling.blocks import pooling


def reference_cells(mask: np.ndarray, grid: int, num_ids: int) -> np.ndarray:
  """The reference's way: one-hot [B, H, W, K], average-pool to the grid, argmax."""
  batch, height, width = mask.shape
  one_hot = np.eye(num_ids)[np.minimum(mask, num_ids - 1)]
  pooled = tf.nn.avg_pool2d(one_hot, height // grid, height // grid, 'VALID').numpy()
  return pooled.reshape(batch, grid * grid, num_ids).argmax(-1)


@pytest.mark.parametrize('grid,num_ids,block', [(7, 256, 16), (2, 8, 8), (4, 5, 4)])
def test_assign_cells_equals_one_hot_average_pool_argmax(grid, num_ids, block):
  size = grid * 32 if grid < 7 else 224
  mask = np.stack([blocky_ids(size, size, 12, block, seed=s) for s in range(3)]).astype(np.int32)
  got = pooling.assign_cells(tf.constant(mask), grid, grid, num_ids).numpy()
  np.testing.assert_array_equal(got, reference_cells(mask, grid, num_ids))


def test_assign_cells_needs_a_grid_multiple():
  with pytest.raises(ValueError, match='multiple of the feature grid'):
    pooling.assign_cells(tf.zeros([1, 30, 30], tf.int32), 7, 7, 4)


def test_sample_ids_draws_uniformly_among_existing_ids_only():
  cell_ids = tf.constant([[0, 0, 0, 0, 0, 0, 3, 5]] * 2, tf.int32)
  ids = pooling.sample_ids(cell_ids, num_ids=8, num_samples=3000).numpy()
  assert set(np.unique(ids)) == {0, 3, 5}
  frequencies = np.bincount(ids.ravel(), minlength=8)[[0, 3, 5]] / ids.size
  np.testing.assert_allclose(frequencies, 1 / 3, atol=0.03)  # not area-weighted


def test_pool_by_ids_averages_features_of_member_cells():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
  cell_ids = rng.integers(0, 3, size=(2, 9)).astype(np.int32)
  sampled = np.array([[0, 1, 2, 7], [2, 2, 0, 1]], np.int32)  # 7 owns no cell: zeros
  pooled, area = pooling.pool_by_ids(tf.constant(features), tf.constant(cell_ids),
                                     tf.constant(sampled))
  flat = features.reshape(2, 9, 4)
  for b in range(2):
    for r in range(4):
      members = cell_ids[b] == sampled[b, r]
      expected = flat[b][members].sum(0) / max(members.sum(), 1)
      np.testing.assert_allclose(pooled[b, r], expected, rtol=1e-5, atol=1e-6)
      assert area[b, r] == members.sum()
