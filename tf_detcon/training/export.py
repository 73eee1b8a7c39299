"""Export for transfer: a SavedModel of the encoder, a Model Garden checkpoint, metadata.

Layout under `<model_dir>/export/`:
  saved_model/   signatures 'serving_default' (uint8 [N, H, W, 3] images) and 'serve_float'
                 (float [N, H, W, 3] in [0, 1]) → {'level_2': ..., 'level_5': ...} features;
                 ImageNet normalisation happens inside.
  checkpoint/    tf.train.Checkpoint(backbone=ResNet[, decoder=FPN]) with its `checkpoint` state
                 file: Model Garden's Mask R-CNN task loads it with init_checkpoint_modules.
  metadata.json  method, step, levels and channels, and the full experiment config.
The export is written beside its final place and renamed into it, so it is whole or absent.
"""

import json
import os
from typing import Any, Dict

from absl import logging
import tensorflow as tf
import tf_keras

from tf_detcon.data import color

EXPORT_DIR = 'export'


class EncoderServer(tf.Module):
  """Serving wrapper: raw images in, normalised, level features out (float32, inference BN)."""

  def __init__(self, encoder: tf_keras.Model):
    super().__init__()
    self.encoder = encoder

  def _features(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    features = self.encoder(color.normalize(images), training=False)
    return {f'level_{level}': tf.cast(value, tf.float32) for level, value in features.items()}

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
  def serve_uint8(self, images):
    return self._features(tf.cast(images, tf.float32) / 255.0)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
  def serve_float(self, images):
    return self._features(images)


def float32_copy(module: tf_keras.Model) -> tf_keras.Model:
  """A float32 copy of a (possibly bfloat16-compute) Keras model, rebuilt from its own config
  (Model Garden's backbones and decoders are serialisable), for serving and checkpoints."""
  policy = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy('float32')
  try:
    copy = type(module).from_config(module.get_config())
  finally:
    tf_keras.mixed_precision.set_global_policy(policy)
  copy.set_weights(module.get_weights())
  return copy


def export(model_dir: str, modules: Dict[str, tf_keras.Model], metadata: Dict[str, Any]) -> str:
  """Writes `<model_dir>/export/` (replacing an older export) from the float32 modules by their
  checkpoint names (`backbone`, and e.g. `decoder`); returns its path."""
  final = os.path.join(model_dir, EXPORT_DIR)
  staging = final + '.tmp'
  if tf.io.gfile.exists(staging):
    tf.io.gfile.rmtree(staging)
  tf.io.gfile.makedirs(staging)
  encoder = modules['backbone']
  server = EncoderServer(encoder)
  tf.saved_model.save(server, os.path.join(staging, 'saved_model'),
                      signatures={'serving_default': server.serve_uint8,
                                  'serve_float': server.serve_float})
  tf.train.Checkpoint(**modules).save(os.path.join(staging, 'checkpoint', 'ckpt'))
  metadata = dict(metadata, init_checkpoint_modules=sorted(modules),
                  levels={k: int(v[-1]) for k, v in encoder.output_specs.items()})
  with tf.io.gfile.GFile(os.path.join(staging, 'metadata.json'), 'w') as f:
    json.dump(metadata, f, indent=2, sort_keys=True, default=str)
  if tf.io.gfile.exists(final):
    tf.io.gfile.rmtree(final)
  tf.io.gfile.rename(staging, final)
  logging.info('exported %s to %s', sorted(modules), final)
  return final
