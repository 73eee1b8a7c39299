"""Record decoding (host, per example): a pretraining record → image, id map and validity.

The map comes from the configured mask source (`mask_sources`): one of the example's stored id
maps (FH scales, ground truth), drawn uniformly, or a grid of the image (the global mask of
SimCLR/BYOL/MoCo is a 1×1 grid). A record whose map is missing or does not match its image is
flagged, with a message naming it, so the pipeline can stop on it or skip it.
"""

from typing import Dict

import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.data import mask_sources
from tf_detcon.data import records


def decode_example(serialized: tf.Tensor, mask_cfg: data_config.MaskConfig,
                   seed: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Parses a record into uint8 image [H, W, 3], int32 mask [H, W], key and a validity flag.

  The mask comes from the registered source of `mask_cfg.type` (`mask_sources`), drawing from the
  stateless `seed` [2]. `valid` is false when the source cannot give the example a map (a stored
  map missing or of another size); `error` then says why, naming the example.
  """
  parsed = records.parse_example(serialized)
  key = parsed[records.IMAGE_KEY]
  image = tf.io.decode_image(parsed[records.IMAGE_ENCODED], channels=3, expand_animations=False)
  ids = mask_sources.build(mask_cfg).ids(image, parsed, key, seed)
  return {'key': key, 'image': image, 'mask': ids.mask, 'valid': ids.valid, 'error': ids.error}


def check_example(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Raises InvalidArgumentError with the example's error message if it is not valid."""
  assertion = tf.debugging.Assert(example['valid'], [example['error']], summarize=1)
  with tf.control_dependencies([assertion]):
    return {k: tf.identity(v) for k, v in example.items()}
