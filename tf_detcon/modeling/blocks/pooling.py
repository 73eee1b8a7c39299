"""From id maps to mask-pooled features (DetCon §3.1; docs/design.md §3).

The reference one-hot encodes the full-resolution map ([B, 224, 224, K] floats), average-pools it
to the feature grid and takes the argmax. Here the same majority vote is a segment count over
(image, cell, id) keys, [B, cells, K] integers, and pooling is a [B, R, cells] membership matmul.
"""

from typing import Tuple

import tensorflow as tf


def assign_cells(mask: tf.Tensor, grid_height: int, grid_width: int,
                 num_ids: int) -> tf.Tensor:
  """Majority id of each feature cell.

  Args:
    mask: int [B, H, W] id map; H, W multiples of the grid size (224 → 7×7 cells of 32×32).
    grid_height, grid_width: the feature grid.
    num_ids: ids >= num_ids are counted as num_ids - 1 (the smallest segments share the last id).

  Returns:
    int32 [B, grid_height * grid_width]: each cell's most frequent id (ties: the smallest id,
    as argmax of the average-pooled one-hot).
  """
  batch = tf.shape(mask)[0]
  height, width = mask.shape[1], mask.shape[2]
  if height is None or width is None or height % grid_height or width % grid_width:
    raise ValueError(f'mask size {height}x{width} must be a static multiple of the feature grid '
                     f'{grid_height}x{grid_width} (views of 224 give 7x7 res5 cells of 32x32)')
  ids = tf.minimum(tf.cast(mask, tf.int32), num_ids - 1)
  rows = tf.range(height) // (height // grid_height)
  cols = tf.range(width) // (width // grid_width)
  cell = rows[:, None] * grid_width + cols[None, :]  # [H, W]
  num_cells = grid_height * grid_width
  keys = (tf.range(batch)[:, None, None] * num_cells + cell[None]) * num_ids + ids
  counts = tf.math.unsorted_segment_sum(tf.ones_like(keys), keys,
                                        batch * num_cells * num_ids)
  counts = tf.reshape(counts, [batch, num_cells, num_ids])
  return tf.argmax(counts, axis=-1, output_type=tf.int32)


def sample_ids(cell_ids: tf.Tensor, num_ids: int, num_samples: int,
               seed: tf.Tensor = None) -> tf.Tensor:
  """`num_samples` ids per image, uniformly with replacement among ids that own >= 1 cell.

  Args:
    cell_ids: int32 [B, cells] from `assign_cells`.
    num_ids: the id range.
    num_samples: R.
    seed: optional [2] stateless seed (for reproducible tests); random otherwise.

  Returns:
    int32 [B, R].
  """
  exists = tf.reduce_any(tf.equal(cell_ids[:, :, None], tf.range(num_ids)), axis=1)
  logits = tf.where(exists, 0.0, -1e9)
  if seed is None:
    return tf.random.categorical(logits, num_samples, dtype=tf.int32)
  # XLA registers StatelessMultinomial for int32 seeds only.
  return tf.random.stateless_categorical(logits, num_samples, tf.cast(seed, tf.int32),
                                         dtype=tf.int32)


def pool_by_ids(features: tf.Tensor, cell_ids: tf.Tensor,
                sampled_ids: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Average features inside each sampled mask: h_m = Σ_{cells in m} h / max(area, 1).

  Args:
    features: [B, h, w, C] feature map whose h·w cells `cell_ids` describe.
    cell_ids: int32 [B, h·w].
    sampled_ids: int32 [B, R].

  Returns:
    ([B, R, C] pooled features in the features' dtype, [B, R] float32 areas in cells).
  """
  shape = tf.shape(features)
  flat = tf.reshape(features, [shape[0], shape[1] * shape[2], features.shape[-1]])
  member = tf.cast(tf.equal(sampled_ids[:, :, None], cell_ids[:, None, :]), flat.dtype)
  area = tf.reduce_sum(tf.cast(member, tf.float32), axis=-1)
  pooled = tf.einsum('brn,bnc->brc', member, flat)
  return pooled / tf.cast(tf.maximum(area, 1.0), flat.dtype)[..., None], area
