"""Frozen encoders to probe: an export of ours, or a random-init encoder of an experiment.

An export directory (`<model_dir>/export`) is read from its checkpoint and metadata.json when
they are there: the backbone (and, for DeCon, the FPN decoder, whose levels are named 'p2'..'p5')
is rebuilt from the recorded config and restored by value. An export with only its SavedModel
is served through its `serve_float` signature (encoder levels only). `random:<experiment>` builds
the encoder of a registered experiment with fixed-seed random weights: the floor every pretrained
method must beat. BN always runs in inference mode.
"""

import os
from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf
import tf_keras

from official.core import exp_factory
from official.vision.configs import decoders as decoders_config
from tf_detcon.configs import experiments  # pylint: disable=unused-import  (registers them)
from tf_detcon.configs import pretrain
from tf_detcon.primitives import color
from tf_detcon.exports import manifest
from tf_detcon.modeling.blocks import decoders
from tf_detcon.modeling.blocks import encoders
from tf_detcon.modeling.blocks import padding

RANDOM_PREFIX = 'random:'


class FrozenEncoder:
  """images uint8 [N, H, W, 3] → {level: float32 [N, h, w, C]}, ImageNet normalisation inside."""

  def __init__(self, name: str, levels: List[str],
               features_fn: Callable[[tf.Tensor], Dict[str, tf.Tensor]],
               model_dir: Optional[str] = None, size_multiple: int = 1):
    self.name = name
    self.levels = levels
    self.model_dir = model_dir  # the run's directory, if the encoder came from one
    # Image sides it takes: any, or for an FPN (DeCon) multiples of the top level's stride, at
    # which its top-down path adds each level to the one above upsampled 2×.
    self.size_multiple = size_multiple
    self._features = tf.function(features_fn, reduce_retracing=True)

  def check_image_size(self, size: int, flag: str = '--image_size') -> None:
    """One line naming `flag` unless images of side `size` fit this encoder."""
    if size % self.size_multiple:
      raise ValueError(f'{flag} {size}: {self.name} has an FPN (DeCon), which takes images '
                       f'whose side is a multiple of {self.size_multiple}, e.g. '
                       f'{max(self.size_multiple, size - size % self.size_multiple)}')

  def __call__(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self._features(tf.cast(images, tf.float32) / 255.0)


def _keras_features(backbone: tf_keras.Model, decoder: Optional[tf_keras.Model] = None):

  @tf.autograph.experimental.do_not_convert  # plain TF ops; autograph only warns on the closure
  def features(images: tf.Tensor) -> Dict[str, tf.Tensor]:
    out = backbone(color.normalize(images), training=False)
    levels = {level: tf.cast(value, tf.float32) for level, value in out.items()}
    if decoder is not None:
      decoded = decoder(out, training=False)
      levels.update({f'p{level}': tf.cast(value, tf.float32) for level, value in decoded.items()})
    return levels

  return features


def _levels(backbone: tf_keras.Model, decoder: Optional[tf_keras.Model] = None) -> List[str]:
  levels = sorted(backbone.output_specs)
  if decoder is not None:
    levels += [f'p{level}' for level in sorted(decoder.output_specs)]
  return levels


def from_keras(name: str, backbone: tf_keras.Model, decoder: Optional[tf_keras.Model] = None,
               model_dir: Optional[str] = None) -> FrozenEncoder:
  """A live Keras backbone (and decoder), e.g. the online encoder during pretraining."""
  multiple = 2 ** max(int(level) for level in backbone.output_specs) if decoder else 1
  return FrozenEncoder(name, _levels(backbone, decoder), _keras_features(backbone, decoder),
                       model_dir, multiple)


def from_experiment(experiment: str, seed: int = 0) -> FrozenEncoder:
  """The encoder of a registered experiment, randomly initialised from `seed`."""
  try:
    params = exp_factory.get_exp_config(experiment)
  except LookupError as e:
    raise ValueError(f'--export=random:{experiment}: no such registered experiment') from e
  if not isinstance(params, pretrain.PretrainExperiment):
    raise ValueError(f'--export=random:{experiment} is not a pretraining experiment')
  tf_keras.utils.set_random_seed(seed)
  backbone = encoders.build_backbone(params.task.encoder)
  return from_keras(f'random-{experiment}', backbone)


def encoder_config(metadata: manifest.Manifest) -> pretrain.EncoderConfig:
  """An export's recorded encoder config, for inference (no cross-replica BN)."""
  cfg = pretrain.EncoderConfig()
  cfg.override(metadata.encoder, is_strict=True)
  cfg.norm_activation.use_sync_bn = False
  return cfg


def backbone_from_metadata(metadata: manifest.Manifest) -> tf_keras.Model:
  """An export's backbone, built (not restored) from its metadata, with PyTorch's padding for an
  import that asked for it (weights/)."""
  backbone = encoders.build_backbone(encoder_config(metadata))
  if metadata.padding == 'symmetric':
    padding.symmetric(backbone)
  return backbone


def decoder_from_metadata(metadata: manifest.Manifest, backbone: tf_keras.Model
                          ) -> Optional[tf_keras.Model]:
  """An export's pretrained decoder (DeCon), built (not restored) on `backbone`; None if the
  export holds none."""
  if not metadata.has_decoder:
    return None
  recorded = metadata.decoder
  decoder_config = decoders_config.Decoder()
  decoder_config.override(recorded['decoder'], is_strict=True)
  return decoders.build_decoder(decoder_config, recorded['min_level'], recorded['max_level'],
                                encoder_config(metadata).norm_activation,
                                backbone.output_specs)


def _export_dir(path: str) -> str:
  """An export directory from its path or its saved_model/; ValueError if it is absent."""
  path = path.rstrip('/')
  if os.path.basename(path) == 'saved_model':
    path = os.path.dirname(path)
  if not tf.io.gfile.isdir(path):
    raise ValueError(f'--export {path!r} does not exist')
  return path


def _restore(path: str, metadata: manifest.Manifest, checkpoint: str
             ) -> Tuple[tf_keras.Model, Optional[tf_keras.Model]]:
  """The export's backbone and decoder (None without one), rebuilt and restored by value."""
  backbone = backbone_from_metadata(metadata)
  modules = {'backbone': backbone}
  decoder = decoder_from_metadata(metadata, backbone)
  if decoder is not None:
    modules['decoder'] = decoder
  status = tf.train.Checkpoint(**modules).read(checkpoint)
  # Everything the modules hold is restored; the export's save counter is not wanted.
  status.assert_existing_objects_matched().expect_partial()
  return backbone, decoder


def modules_from_export(path: str) -> Tuple[manifest.Manifest, tf_keras.Model,
                                            Optional[tf_keras.Model]]:
  """(manifest, backbone, decoder or None) of an export that has its checkpoint and manifest;
  ValueError in one line for one that lacks either."""
  path = _export_dir(path)
  checkpoint = tf.train.latest_checkpoint(os.path.join(path, 'checkpoint'))
  if not checkpoint:
    raise ValueError(f'--export {path!r} has no checkpoint/ (an export of ours or an import '
                     'holds one): export or import it again')
  metadata = manifest.read(path)
  if metadata is None:
    raise ValueError(f'--export {path!r} has no {manifest.FILE}: export or import it again')
  return (metadata, *_restore(path, metadata, checkpoint))


def from_export(path: str) -> FrozenEncoder:
  """An export directory (checkpoint + metadata.json, or a SavedModel), or its saved_model/."""
  path = _export_dir(path)
  model_dir = os.path.dirname(path)
  name = os.path.basename(model_dir) or 'export'
  checkpoint = tf.train.latest_checkpoint(os.path.join(path, 'checkpoint'))
  metadata = manifest.read(path) if checkpoint else None
  if metadata is not None:
    return from_keras(name, *_restore(path, metadata, checkpoint), model_dir)
  saved_model = os.path.join(path, 'saved_model')
  if not tf.io.gfile.exists(os.path.join(saved_model, 'saved_model.pb')):
    raise ValueError(f'--export {path!r} holds neither a checkpoint with {manifest.FILE} nor a '
                     'SavedModel')
  loaded = tf.saved_model.load(saved_model)
  serve = loaded.signatures['serve_float']
  levels = sorted(k[len('level_'):] for k in serve.structured_outputs)

  def features(images):
    return {k[len('level_'):]: v for k, v in serve(images=images).items()}

  encoder = FrozenEncoder(name, levels, features, model_dir)
  encoder.loaded = loaded  # keeps the SavedModel's variables alive
  return encoder


def load(spec: str, seed: int = 0) -> FrozenEncoder:
  """`random:<experiment>` or an export path."""
  if spec.startswith(RANDOM_PREFIX):
    return from_experiment(spec[len(RANDOM_PREFIX):], seed)
  return from_export(spec)
