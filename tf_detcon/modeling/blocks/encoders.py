"""Encoders from Model Garden: the ResNet backbone, built exactly as Model Garden builds it."""

import tf_keras

from official.vision.modeling.backbones import factory as backbone_factory
from tf_detcon.configs import pretrain as pretrain_config


def build_backbone(cfg: pretrain_config.EncoderConfig) -> tf_keras.Model:
  """A Model Garden backbone (ResNet by default) returning {'2': res2, ..., '5': res5}."""
  input_specs = tf_keras.layers.InputSpec(shape=[None, None, None, 3])
  return backbone_factory.build_backbone(
      input_specs=input_specs, backbone_config=cfg.backbone,
      norm_activation_config=cfg.norm_activation)


def level_channels(backbone: tf_keras.Model) -> dict:
  """{'2': C2, ..., '5': C5} from the backbone's output specs."""
  return {level: spec[-1] for level, spec in backbone.output_specs.items()}
