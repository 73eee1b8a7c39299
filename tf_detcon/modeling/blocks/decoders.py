"""Decoders from Model Garden: the FPN, built exactly as its Mask R-CNN experiment builds it."""

from typing import Mapping

import tensorflow as tf
import tf_keras

from official.vision.configs import common
from official.vision.configs import maskrcnn as maskrcnn_config
from official.vision.modeling.decoders import factory as decoder_factory
from tf_detcon.configs import methods


def build_decoder(cfg: methods.DeConConfig, norm_activation: common.NormActivation,
                  input_specs: Mapping[str, tf.TensorShape]) -> tf_keras.Model:
  """The FPN through Model Garden's decoder factory and the same config type Mask R-CNN uses,
  so the checkpoint loads into Mask R-CNN with `init_checkpoint_modules: [backbone, decoder]`."""
  model_config = maskrcnn_config.MaskRCNN(min_level=cfg.min_level, max_level=cfg.max_level,
                                          decoder=cfg.decoder, norm_activation=norm_activation)
  return decoder_factory.build_decoder(input_specs=input_specs, model_config=model_config)
