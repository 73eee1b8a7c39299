"""Record decoding (host, per example): a pretraining record → image, id map and validity.

The map is one of the example's stored id maps (FH scales, ground truth), drawn uniformly, or a
grid of the image (the global mask of SimCLR/BYOL/MoCo is a 1×1 grid). A record whose map is
missing or does not match its image is flagged, with a message naming it, so the pipeline can
stop on it or skip it.
"""

from typing import Dict

import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.data import records


def decode_mask_png(png: tf.Tensor) -> tf.Tensor:
  """int32 [H, W] ids from an 8- or 16-bit PNG (decode_png as uint16 would rescale 8-bit data)."""
  bit_depth = tf.io.decode_raw(tf.strings.substr(png, 24, 1), tf.uint8)[0]
  return tf.cond(
      tf.equal(bit_depth, 16),
      lambda: tf.cast(tf.io.decode_png(png, channels=1, dtype=tf.uint16), tf.int32),
      lambda: tf.cast(tf.io.decode_png(png, channels=1, dtype=tf.uint8), tf.int32))[..., 0]


def grid_ids(height: tf.Tensor, width: tf.Tensor, grid_size: int) -> tf.Tensor:
  """int32 [H, W] ids of grid_size × grid_size equal cells, row-major (1: the global mask)."""
  rows = tf.minimum(tf.range(height) * grid_size // tf.maximum(height, 1), grid_size - 1)
  cols = tf.minimum(tf.range(width) * grid_size // tf.maximum(width, 1), grid_size - 1)
  return rows[:, None] * grid_size + cols[None, :]


def decode_example(serialized: tf.Tensor, mask_cfg: data_config.MaskConfig,
                   seed: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Parses a record into uint8 image [H, W, 3], int32 mask [H, W], key and a validity flag.

  With several stored maps (FH scales) one is drawn uniformly, by the stateless `seed` [2]. `valid` is false when the record
  has no map or its map does not match the image size; `error` then says why, naming the example.
  """
  parsed = records.parse_example(serialized)
  key = parsed[records.IMAGE_KEY]
  image = tf.io.decode_image(parsed[records.IMAGE_ENCODED], channels=3, expand_animations=False)
  image_shape = tf.shape(image)[:2]
  if mask_cfg.kind == 'grid':
    mask = grid_ids(image_shape[0], image_shape[1], mask_cfg.grid_size)
    return {'key': key, 'image': image, 'mask': mask, 'valid': tf.constant(True),
            'error': tf.constant('')}
  if mask_cfg.kind != 'stored':
    raise ValueError(f"masks.kind must be 'stored' or 'grid', got {mask_cfg.kind!r}")
  pngs = parsed[records.MASK_ENCODED]
  num_masks = tf.size(pngs)
  index = tf.random.stateless_uniform([], seed, 0, tf.maximum(num_masks, 1), dtype=tf.int32)
  mask = tf.cond(num_masks > 0,
                 lambda: decode_mask_png(pngs[tf.minimum(index, num_masks - 1)]),
                 lambda: tf.zeros([0, 0], tf.int32))
  mask_shape = tf.shape(mask)
  valid = tf.reduce_all(tf.equal(mask_shape, image_shape))
  error = tf.cond(
      num_masks > 0,
      lambda: tf.strings.format('example {}: mask {} does not match image {}',
                                (key, mask_shape, image_shape)),
      lambda: tf.strings.format('example {}: record has no mask', key))
  return {'key': key, 'image': image, 'mask': mask, 'valid': valid, 'error': error}


def check_example(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Raises InvalidArgumentError with the example's error message if it is not valid."""
  assertion = tf.debugging.Assert(example['valid'], [example['error']], summarize=1)
  with tf.control_dependencies([assertion]):
    return {k: tf.identity(v) for k, v in example.items()}
