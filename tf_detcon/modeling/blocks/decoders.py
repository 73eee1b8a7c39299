"""Decoders from Model Garden: the FPN, built exactly as its Mask R-CNN experiment builds it, and
DeCon's channel dropout on the FPN's skip laterals, run through the FPN's own layers."""

from typing import Dict, List, Mapping, Sequence, Tuple

import tensorflow as tf
import tf_keras

from official.vision.configs import common
from official.vision.configs import decoders as decoders_config
from official.vision.configs import maskrcnn as maskrcnn_config
from official.vision.modeling.decoders import factory as decoder_factory


def build_decoder(decoder: decoders_config.Decoder, min_level: int, max_level: int,
                  norm_activation: common.NormActivation,
                  input_specs: Mapping[str, tf.TensorShape]) -> tf_keras.Model:
  """Model Garden's decoder (`decoder`: its one-of config, e.g. an FPN and its filters) over
  levels `min_level`..`max_level`, with `norm_activation`, through its decoder factory and the
  config type Mask R-CNN uses, so the checkpoint loads into Mask R-CNN with
  `init_checkpoint_modules: [backbone, decoder]`."""
  model_config = maskrcnn_config.MaskRCNN(min_level=min_level, max_level=max_level,
                                          decoder=decoder, norm_activation=norm_activation)
  return decoder_factory.build_decoder(input_specs=input_specs, model_config=model_config)


def _level_layers(fpn: tf_keras.Model) -> List[Tuple[tf_keras.layers.Layer, str, int]]:
  """(layer, kind, level) for each weighted layer of a Model Garden FPN named `<kind>_<L>`."""
  out = []
  for layer in fpn.layers:
    kind, _, level = layer.name.rpartition('_')
    if layer.weights and level.isdigit():
      out.append((layer, kind, int(level)))
  return out


def _is_trained(fpn: tf_keras.Model, objective_levels: Sequence[str]):
  """Whether an objective on `objective_levels` trains the FPN layer of (kind, level)."""
  levels = [int(level) for level in objective_levels]
  coarser = {level for _, kind, level in _level_layers(fpn) if kind == 'coarser'}

  def trained(kind: str, level: int) -> bool:
    if kind == 'lateral':
      return any(j <= level for j in levels)
    if kind == 'coarser':
      return any(j >= level for j in levels)
    if kind == 'post_hoc':
      return level in levels or (level + 1 in coarser and any(j > level for j in levels))
    return level in levels  # norm

  return trained


def trained_layers(fpn: tf_keras.Model, objective_levels: Sequence[str]) -> List[str]:
  """The weighted layers of a Model Garden FPN that an objective on `objective_levels` trains:
  those on a path to one of its outputs. The top-down path carries lateral_L into every level
  at or below L; post_hoc_L and norm_L feed level L only; coarser_L starts from post_hoc_(L−1)
  and feeds level L and every coarser one. The others keep their initialisation (DeCon-SL's
  P3–P5 output convolutions, which its authors delete)."""
  trained = _is_trained(fpn, objective_levels)
  return sorted(layer.name for layer, kind, level in _level_layers(fpn) if trained(kind, level))


def untrained_variables(fpn: tf_keras.Model,
                        objective_levels: Sequence[str]) -> List[tf.Variable]:
  """The trainable variables of the FPN's weighted layers that `trained_layers` leaves out."""
  trained = _is_trained(fpn, objective_levels)
  return [v for layer, kind, level in _level_layers(fpn) if not trained(kind, level)
          for v in layer.trainable_weights]


def channel_dropout(features: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
  """Whole channels of each image [B, h, w, C] zeroed with probability `rate`, the others scaled
  by 1/(1 − rate) (PyTorch's Dropout2d, as DeCon's code applies it), drawn from the stateless
  `seed` [2]. Rate 1 zeroes every channel."""
  shape = tf.shape(features)
  keep = tf.random.stateless_uniform([shape[0], 1, 1, shape[3]], seed) >= rate
  scale = 0.0 if rate >= 1 else 1.0 / (1.0 - rate)
  return features * tf.cast(tf.where(keep, scale, 0.0), features.dtype)


class SkipLateralFPN:
  """A Model Garden FPN run in two halves, so that something can act between them: its lateral
  1×1 convolutions, then its top-down path, output convolutions, coarser levels and norms.

  Both halves are functional models over the FPN's own layers (no copy, no fork): run one after
  the other they compute the FPN's output exactly, and they share its variables and checkpoint.
  DeCon's authors drop channels of the skip connections' laterals (res4, res3, res2 on ResNet)
  where they join the top-down path; the top level's lateral starts the path and is never
  dropped (their `FPNDecoder`, detectron2-based, `Dropout2d` of `sk_channel_dropout_prob`).
  """

  def __init__(self, fpn: tf_keras.Model):
    levels = sorted((layer.name.split('_', 1)[1] for layer in fpn.layers
                     if layer.name.startswith('lateral_')), key=int)
    laterals = {level: fpn.get_layer(f'lateral_{level}').output for level in levels}
    self.levels = levels
    self.skip_levels = tuple(levels[:-1])
    self._laterals = tf_keras.Model(fpn.input, laterals)
    self._top_down = tf_keras.Model([laterals[level] for level in levels], fpn.output)

  def laterals(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return self._laterals(dict(features))

  def top_down(self, laterals: Mapping[str, tf.Tensor], training: bool) -> Dict[str, tf.Tensor]:
    return self._top_down([laterals[level] for level in self.levels], training=training)

  def __call__(self, features: Mapping[str, tf.Tensor], rate: float,
               seeds: Mapping[str, tf.Tensor], training: bool) -> Dict[str, tf.Tensor]:
    """The FPN's output with `channel_dropout` at `rate` on each skip lateral (seeds by level)."""
    laterals = self.laterals(features)
    dropped = {level: channel_dropout(value, rate, seeds[level])
               if level in self.skip_levels else value for level, value in laterals.items()}
    return self.top_down(dropped, training=training)
