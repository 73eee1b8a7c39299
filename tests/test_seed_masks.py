"""The per-seed mask statistics (benchmarks/seed_masks.py), against a count by hand."""

import numpy as np
import tensorflow as tf

import seed_masks


def test_mask_statistics_counts_masks_shared_masks_and_the_largest_share():
  # Two pairs of 2×2 views. Pair 1: ids {0, 1, 2} and {1, 2}, two shared, largest 2/4.
  # Pair 2: ids {3} and {3, 4}, one shared (no negative in the image), largest 4/4.
  first = np.array([[[0, 1], [2, 2]], [[3, 3], [3, 3]]], np.int32)
  second = np.array([[[1, 1], [2, 2]], [[3, 4], [4, 4]]], np.int32)
  dataset = tf.data.Dataset.from_tensors({'mask1': first, 'mask2': second}).repeat(3)
  stats = seed_masks.mask_statistics(dataset, batches=2)
  assert stats['masks per view'] == (3 + 1) / 2
  assert stats['shared by both views'] == (2 + 1) / 2
  assert stats['pairs sharing <= 1'] == 0.5
  assert stats['largest mask share'] == (2 / 4 + 4 / 4) / 2
