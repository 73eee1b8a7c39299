"""Export for transfer: a SavedModel of the encoder, a Model Garden checkpoint, metadata.

Layout under `<model_dir>/export/`:
  saved_model/   a Reusable SavedModel (tensorflow.org/hub/reusable_saved_models): callable as
                 `obj(images, training=False)` on float [N, H, W, 3] images in [0, 1], with
                 `variables`, `trainable_variables` and `regularization_losses`, so that
                 `hub.KerasLayer(path, trainable=True)` fine-tunes it (BN statistics update in
                 training mode); and the serving signatures 'serving_default' (uint8 images)
                 and 'serve_float' (float in [0, 1]). All give {'level_2': ..., 'level_5': ...}
                 float32 features; ImageNet normalisation happens inside.
  checkpoint/    tf.train.Checkpoint(backbone=ResNet[, decoder=FPN]) with its `checkpoint` state
                 file: Model Garden's Mask R-CNN task loads it with init_checkpoint_modules.
  metadata.json  its manifest (tf_detcon/exports/manifest.py): method, step, levels, the full
                 experiment config, and `network`, the fields that decide the function the
                 exported network computes, which fine-tuning carries over
                 (finetuning/transfer.py).
The export is written beside its final place and renamed into it, so it is whole or absent.
"""

import contextlib
import dataclasses
import os
from typing import Any, Dict, Iterator, Tuple

from absl import logging
import tensorflow as tf
import tf_keras

from tf_detcon.primitives import color
from tf_detcon.support import console
from tf_detcon.support import locks
from tf_detcon.exports import manifest

EXPORT_DIR = 'export'
# A float image whose largest value exceeds this is taken to be in [0, 255], not [0, 1].
MAX_UNIT_VALUE = 2.0


class CheckedImages(tf_keras.layers.Layer):
  """Passes float [N, H, W, 3] images in [0, 1]; stops, naming the problem, on images with
  another number of channels or values that are clearly in [0, 255]."""

  def call(self, images: tf.Tensor) -> tf.Tensor:
    # A caller's static shape (e.g. [4, 64, 64, 1]) would fail shape inference in the first
    # convolution, in TF's words, before the checks run: forget it, check, then restore it.
    images = tf.raw_ops.PlaceholderWithDefault(input=images, shape=tf.TensorShape([None] * 4))
    channels = tf.debugging.assert_equal(
        tf.shape(images)[-1], 3,
        message='the encoder takes RGB images [N, H, W, 3]; convert grayscale images with '
                'tf.image.grayscale_to_rgb')
    scale = tf.debugging.assert_less_equal(
        tf.reduce_max(images), tf.constant(MAX_UNIT_VALUE, images.dtype),
        message='the encoder takes float images in [0, 1]; these look like [0, 255]: divide '
                "by 255, or give uint8 images to the 'serving_default' signature")
    with tf.control_dependencies([channels, scale]):
      return tf.ensure_shape(tf.identity(images), [None, None, None, 3])


@contextlib.contextmanager
def _float32_policy() -> Iterator[None]:
  """Keras layers built inside compute in float32, whatever the training precision."""
  policy = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy('float32')
  try:
    yield
  finally:
    tf_keras.mixed_precision.set_global_policy(policy)


def reusable_encoder(encoder: tf_keras.Model) -> tf_keras.Model:
  """float [N, H, W, 3] images in [0, 1] → {'level_L': float32 features}: the input checked,
  ImageNet-normalised as in pretraining (`color.normalize`), then the (float32) encoder."""
  with _float32_policy():
    images = tf_keras.Input([None, None, None], dtype=tf.float32, name='images')
    features = encoder(color.normalize(CheckedImages(name='checked_images')(images)))
    outputs = {f'level_{level}': tf_keras.layers.Activation('linear', name=f'level_{level}')(v)
               for level, v in features.items()}
    return tf_keras.Model(images, outputs, name='encoder')


def reusable_saved_model(model: tf_keras.Model) -> Tuple[tf.train.Checkpoint, Dict[str, Any]]:
  """The SavedModel's root and its serving signatures, over `reusable_encoder`'s model.

  The root is the Reusable SavedModel interface (tensorflow.org/hub/reusable_saved_models):
  `__call__(images, training=False)`, traced for both values of `training`, with `variables`,
  `trainable_variables` and `regularization_losses`. It tracks the model's variables and traced
  functions, not the Keras model: saving a Keras model also traces every layer's call for
  Keras revival, which no user of the export needs (they load it with `hub.KerasLayer` or
  `tf.saved_model.load`), and that took two thirds of the export's time. The signatures take
  uint8 images ('serving_default') or float images in [0, 1] ('serve_float')."""
  # Pretraining applies its L2 in the gradient (PretrainTask.losses.l2_weight_decay), so the
  # encoder holds no Keras regularizers; one that did would lose them here, so it is refused.
  if model.losses:
    raise ValueError('the encoder has Keras regularization losses, which the export does not '
                     'carry: build it without kernel_regularizer')
  any_images = [None, None, None, None]

  @tf.function
  def call(images, training=False):
    return model(images, training=training)

  float_images = tf.TensorSpec(any_images, tf.float32, name='images')
  call.get_concrete_function(float_images, True)
  # The signatures call the inference trace rather than tracing the encoder again (each trace
  # of a ResNet is a second or more of every export).
  serve_float = call.get_concrete_function(float_images, False)

  @tf.function(input_signature=[tf.TensorSpec(any_images, tf.uint8, name='images')])
  def serve_uint8(images):
    return serve_float(tf.cast(images, tf.float32) / 255.0)

  root = tf.train.Checkpoint()
  root.variables = list(model.variables)
  root.trainable_variables = list(model.trainable_variables)
  root.regularization_losses = []
  root.__call__ = call
  return root, {'serving_default': serve_uint8, 'serve_float': serve_float}


def float32_copy(module: tf_keras.Model) -> tf_keras.Model:
  """A float32 copy of a (possibly bfloat16-compute) Keras model, rebuilt from its own config
  (Model Garden's backbones and decoders are serialisable), for serving and checkpoints."""
  config = module.get_config()
  if 'use_sync_bn' in config:  # same variables; a replica all-reduce means nothing in an export
    config['use_sync_bn'] = False
  with _float32_policy():
    copy = type(module).from_config(config)
  copy.set_weights(module.get_weights())
  return copy


def export(model_dir: str, modules: Dict[str, tf_keras.Model],
           record: manifest.Manifest) -> str:
  """Writes `<model_dir>/export/` (replacing an older export) from the float32 modules by their
  checkpoint names (`backbone`, and e.g. `decoder`); returns its path.

  An export of a later step than `record.step` (a run resumed from an older checkpoint because
  its newest one was lost) may be the only copy of those weights: it is set aside as
  `export-step<N>`, not replaced."""
  final = os.path.join(model_dir, EXPORT_DIR)
  _set_aside_a_later_export(final, record.step)
  return write(final, modules, record)


def _set_aside_a_later_export(final: str, step: int) -> None:
  try:
    previous = manifest.read(final)
  except ValueError:  # unreadable: nothing to tell its step by; it is replaced
    return
  if previous is None or previous.step is None or previous.step <= step:
    return
  kept = locks.unused_path(f'{final}-step{previous.step}')
  tf.io.gfile.rename(final, kept)
  console.warn(f'{final} held step {previous.step}, later than this run\'s step {step}; it is '
               f'kept as {kept}')


def write(final: str, modules: Dict[str, tf_keras.Model], record: manifest.Manifest) -> str:
  """Writes an export into the directory `final` (replacing what is there): pretraining's and
  launch/import_weights.py's. Returns `final`.

  It is written beside `final` and renamed into place, the previous export kept until then, so
  `final` is always a whole export. A write that fails (a full disk, no permission) removes what
  it wrote and stops in one line."""
  staging = f'{final}.tmp-{os.getpid()}'
  previous = f'{final}.old-{os.getpid()}'
  try:
    if tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
    tf.io.gfile.makedirs(staging)
    encoder = modules['backbone']
    root, signatures = reusable_saved_model(reusable_encoder(encoder))
    tf.saved_model.save(root, os.path.join(staging, 'saved_model'), signatures=signatures)
    tf.train.Checkpoint(**modules).save(os.path.join(staging, 'checkpoint', 'ckpt'))
    manifest.write(staging, dataclasses.replace(
        record, init_checkpoint_modules=sorted(modules),
        levels={k: int(v[-1]) for k, v in encoder.output_specs.items()},
        network=manifest.network_fields(record.encoder, record.decoder)))
    if tf.io.gfile.exists(final):
      tf.io.gfile.rename(final, previous)
    tf.io.gfile.rename(staging, final)
  except (OSError, tf.errors.OpError) as e:
    for leftover in (staging,):
      try:
        if tf.io.gfile.exists(leftover):
          tf.io.gfile.rmtree(leftover)
      except (OSError, tf.errors.OpError):
        pass
    if tf.io.gfile.exists(previous) and not tf.io.gfile.exists(final):
      tf.io.gfile.rename(previous, final)
    reason = ' '.join((getattr(e, 'message', None) or str(e)).split())[:200]
    raise ValueError(f'cannot write the export to {final} ({reason}): free space there or '
                     'choose another place, then rerun') from e
  if tf.io.gfile.exists(previous):
    tf.io.gfile.rmtree(previous)
  logging.info('exported %s to %s', sorted(modules), final)
  return final
