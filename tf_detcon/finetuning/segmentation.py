"""PASCAL VOC semantic segmentation as DetCon evaluates it, on Model Garden's segmentation task.

DetCon (§3.3, A.3) follows MoCo's VOC protocol: an FCN on the encoder whose res5 is dilated
(3×3 convolutions of conv5 with dilation 2 and stride 1, output stride 16), then two 3×3
convolutions of 256 channels with dilation 6, BN and ReLU, and a 1×1 classifier (He et al. 2020,
MoCo, appendix; the large field of view of DeepLab). Model Garden has the dilated ResNet
(`dilated_resnet`) but its segmentation head has no dilation, so the two dilated convolutions are
a decoder registered with Model Garden's decoder factory (`type: fcn`), followed by Model Garden's
own head with no convolutions of its own. Everything else (inputs, loss, training, evaluation) is
Model Garden's `SemanticSegmentationTask`, registered for the config below.

The dilated ResNet holds exactly the variables of the ResNet that pretraining exports, so the
export's `backbone` checkpoint loads into it (`transfer.check_backbone` treats them as one).
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional

import tensorflow as tf
import tf_keras

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.core import task_factory
from official.modeling import hyperparams
from official.modeling import optimization
from official.vision.configs import backbones
from official.vision.configs import common
from official.vision.configs import decoders
from official.vision.configs import semantic_segmentation as seg_config
from official.vision.modeling.decoders import factory as decoder_factory
from official.vision.tasks import semantic_segmentation as seg_task

EXPERIMENT = 'seg_detcon_pascal_fcn'
PASCAL_TRAIN_EXAMPLES = seg_config.PASCAL_TRAIN_EXAMPLES  # train_aug2012: 10582
PASCAL_VAL_EXAMPLES = seg_config.PASCAL_VAL_EXAMPLES


@dataclasses.dataclass
class FCNDecoderConfig(hyperparams.Config):
  """The FCN's dilated convolutions on one backbone level (MoCo's VOC protocol)."""
  level: int = 4
  num_convs: int = 2
  num_filters: int = 256
  dilation_rate: int = 6


@dataclasses.dataclass
class Decoder(decoders.Decoder):
  """Model Garden's decoder one-of, plus `fcn`."""
  fcn: FCNDecoderConfig = dataclasses.field(default_factory=FCNDecoderConfig)


@dataclasses.dataclass
class FCNSegmentationModel(seg_config.SemanticSegmentationModel):
  decoder: Decoder = dataclasses.field(default_factory=Decoder)


@dataclasses.dataclass
class FCNSegmentationTask(seg_config.SemanticSegmentationTask):
  model: FCNSegmentationModel = dataclasses.field(default_factory=FCNSegmentationModel)


# Model Garden's own task class, for our config type.
task_factory.register_task_cls(FCNSegmentationTask)(seg_task.SemanticSegmentationTask)


class DilatedConvDecoder(tf_keras.layers.Layer):
  """`num_convs` 3×3 convolutions with `dilation_rate`, each followed by BN and the activation,
  on feature level `level`; returns {level: features}."""

  def __init__(self, input_specs: Mapping[str, tf.TensorShape], level: int, num_convs: int,
               num_filters: int, dilation_rate: int, activation: str = 'relu',
               use_sync_bn: bool = False, norm_momentum: float = 0.99,
               norm_epsilon: float = 0.001,
               kernel_regularizer: Optional[tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    if str(level) not in input_specs:
      raise ValueError(f'decoder.fcn.level {level} is not a backbone level '
                       f'({sorted(input_specs)})')
    self._config = dict(level=level, num_convs=num_convs, num_filters=num_filters,
                        dilation_rate=dilation_rate, activation=activation,
                        use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
                        norm_epsilon=norm_epsilon)
    self._level = str(level)
    self._activation = tf_keras.activations.get(activation)
    self._convs = [tf_keras.layers.Conv2D(
        num_filters, 3, padding='same', dilation_rate=dilation_rate, use_bias=False,
        kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
        kernel_regularizer=kernel_regularizer, name=f'fcn_conv_{i}') for i in range(num_convs)]
    self._norms = [tf_keras.layers.BatchNormalization(
        momentum=norm_momentum, epsilon=norm_epsilon, synchronized=use_sync_bn,
        name=f'fcn_norm_{i}') for i in range(num_convs)]
    spec = input_specs[self._level]
    self._output_specs = {self._level: tf.TensorShape(
        list(spec[:-1]) + [num_filters if num_convs else spec[-1]])}

  @property
  def output_specs(self) -> Dict[str, tf.TensorShape]:
    return self._output_specs

  def call(self, features: Mapping[str, tf.Tensor], training=None) -> Dict[str, tf.Tensor]:
    x = features[self._level]
    for conv, norm in zip(self._convs, self._norms):
      x = self._activation(norm(conv(x), training=training))
    return {self._level: x}

  def get_config(self) -> Dict[str, Any]:
    return dict(super().get_config(), **self._config)


@decoder_factory.register_decoder_builder('fcn')
def build_fcn_decoder(input_specs: Mapping[str, tf.TensorShape],
                      model_config: hyperparams.Config,
                      l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
                      ) -> DilatedConvDecoder:
  """Model Garden's decoder-factory entry for `decoder.type: fcn`."""
  fcn = model_config.decoder.fcn
  norm = model_config.norm_activation
  return DilatedConvDecoder(
      input_specs=input_specs, level=fcn.level, num_convs=fcn.num_convs,
      num_filters=fcn.num_filters, dilation_rate=fcn.dilation_rate,
      activation=norm.activation, use_sync_bn=norm.use_sync_bn,
      norm_momentum=norm.norm_momentum, norm_epsilon=norm.norm_epsilon,
      kernel_regularizer=l2_regularizer)


@exp_factory.register_config_factory(EXPERIMENT)
def seg_detcon_pascal_fcn() -> cfg.ExperimentConfig:
  """DetCon A.3 / MoCo's VOC recipe: train_aug2012, 512² (Model Garden's even size for 513),
  flip and scale [0.5, 2.0], 45 epochs, SGD momentum 0.9, lr 0.02 ÷10 at 70% and 90%, weight
  decay 1e-4, batch 16; ResNet-50 with res5 dilated (output stride 16) and the dilated FCN."""
  batch = 16
  steps_per_epoch = PASCAL_TRAIN_EXAMPLES // batch
  train_steps = 45 * steps_per_epoch
  base = exp_factory.get_exp_config('seg_deeplabv3_pascal')
  model = FCNSegmentationModel(
      num_classes=21, input_size=[None, None, 3],
      backbone=backbones.Backbone(type='dilated_resnet', dilated_resnet=backbones.DilatedResNet(
          model_id=50, output_stride=16, stem_type='v0', multigrid=None)),
      decoder=Decoder(type='fcn', fcn=FCNDecoderConfig(level=4, num_convs=2, num_filters=256,
                                                       dilation_rate=6)),
      head=seg_config.SegmentationHead(level=4, num_convs=0, feature_fusion=None,
                                       prediction_kernel_size=1),
      norm_activation=common.NormActivation(activation='relu', use_sync_bn=True,
                                            norm_momentum=0.99, norm_epsilon=0.001))
  train_data = base.task.train_data.replace(global_batch_size=batch, aug_rand_hflip=True,
                                            aug_scale_min=0.5, aug_scale_max=2.0)
  return cfg.ExperimentConfig(
      task=FCNSegmentationTask(
          model=model, losses=seg_config.Losses(l2_weight_decay=1e-4),
          train_data=train_data, validation_data=base.task.validation_data,
          init_checkpoint='', init_checkpoint_modules='backbone'),
      trainer=cfg.TrainerConfig(
          train_steps=train_steps, steps_per_loop=steps_per_epoch,
          summary_interval=steps_per_epoch, checkpoint_interval=steps_per_epoch,
          validation_interval=steps_per_epoch,
          validation_steps=PASCAL_VAL_EXAMPLES // base.task.validation_data.global_batch_size,
          optimizer_config=optimization.OptimizationConfig({
              'optimizer': {'type': 'sgd', 'sgd': {'momentum': 0.9}},
              'learning_rate': {'type': 'stepwise', 'stepwise': {
                  'boundaries': [int(0.7 * train_steps), int(0.9 * train_steps)],
                  'values': [0.02, 0.002, 0.0002]}},
          })),
      restrictions=['task.train_data.is_training != None',
                    'task.validation_data.is_training != None'])
