"""DeCon (Quetin, Ghosh, Maleki 2025): joint encoder–decoder contrastive pretraining.

A wrapper around any base method (DetCon_S, DetCon_B, DetCo): the base supplies its features
and objective; DeCon adds Model Garden's FPN (and its EMA target copy when the base has a
target network), applies the base method's objective to decoder levels with their own heads
(`make_objective`), and trains on α·L_enc + (1 − α)·L_dec. DeCon on a new method is
configuration: it needs only `features`, `objective` and `make_objective`.
"""

from typing import Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from official.vision.configs import maskrcnn as maskrcnn_config
from official.vision.modeling.decoders import factory as decoder_factory
from tf_detcon.configs import pretrain as pretrain_config
from tf_detcon.modeling import base
from tf_detcon.modeling import detco
from tf_detcon.modeling import detcon

BASE_MODELS = {'detcon': detcon.DetConModel, 'detco': detco.DetCoModel}
VARIANT_LEVELS = {'sl': ['2'], 'ml': ['2', '3', '4', '5']}


def build_decoder(task: pretrain_config.PretrainTask,
                  encoder: tf_keras.Model) -> tf_keras.Model:
  """The FPN exactly as Model Garden's Mask R-CNN builds it (same factory, same config type)."""
  cfg = task.decon
  model_config = maskrcnn_config.MaskRCNN(
      min_level=cfg.min_level, max_level=cfg.max_level, decoder=cfg.decoder,
      norm_activation=task.encoder.norm_activation)
  return decoder_factory.build_decoder(input_specs=encoder.output_specs,
                                       model_config=model_config)


def decoder_levels(cfg: pretrain_config.DeConConfig) -> Sequence[str]:
  if cfg.variant not in VARIANT_LEVELS:
    raise ValueError(f"decon.variant must be 'sl' or 'ml', got {cfg.variant!r}")
  levels = VARIANT_LEVELS[cfg.variant]
  if int(min(levels)) < cfg.min_level or int(max(levels)) > cfg.max_level:
    raise ValueError(f'decoder levels {levels} outside the FPN levels '
                     f'{cfg.min_level}..{cfg.max_level}')
  return levels


def validate_input_sizes(task: pretrain_config.PretrainTask) -> None:
  """The FPN adds upsampled res(i+1) to res(i): every input must be a multiple of res5's
  stride (32 px), or the shapes disagree deep inside the graph."""
  data = task.train_data
  sizes = {'view1.output_size': data.view1.output_size,
           'view2.output_size': data.view2.output_size}
  if data.local_views.enabled:
    sizes['local_views.patch_size'] = data.local_views.patch_size
  for name, size in sizes.items():
    if size % 32:
      raise ValueError(f'DeCon needs train_data.{name} to be a multiple of 32, got {size}')


class DeConModel(base.PretrainModel):
  """Base method + FPN decoder (+ EMA target FPN) + the base objective on decoder levels."""

  def __init__(self, task: pretrain_config.PretrainTask, total_steps: int, **kwargs):
    super().__init__(task.train_data, total_steps,
                     pretrain_config.coupled_weight_decay(task.optimization), **kwargs)
    cfg = task.decon
    if cfg.base_method not in BASE_MODELS:
      raise ValueError(f'decon.base_method must be one of {sorted(BASE_MODELS)}, got '
                       f'{cfg.base_method!r}')
    if not 0.0 <= cfg.alpha <= 1.0 or not 0.0 <= cfg.channel_dropout < 1.0:
      raise ValueError('need 0 <= decon.alpha <= 1 and 0 <= decon.channel_dropout < 1')
    if cfg.decoder.type != 'fpn':
      raise ValueError(f"decon.decoder.type must be 'fpn', got {cfg.decoder.type!r}")
    self.task = task
    validate_input_sizes(task)
    self.base_model = BASE_MODELS[cfg.base_method](task.replace(method=cfg.base_method),
                                                   total_steps)
    self.encoder = self.base_model.encoder
    self.target_encoder = self.base_model.target_encoder
    self.objective = self.base_model.objective
    self.decoder = build_decoder(task, self.encoder)
    self.target_decoder = None
    if self.target_encoder is not None:
      self.target_decoder = build_decoder(task, self.encoder)
    self.channel_dropout = tf_keras.layers.SpatialDropout2D(cfg.channel_dropout)
    levels = decoder_levels(cfg)
    filters = cfg.decoder.fpn.num_filters
    self.decoder_objective = self.base_model.make_objective(
        {level: filters for level in levels}, levels, [1.0 / len(levels)] * len(levels),
        name='decoder_objective')

  def call(self, images, training=False):
    return self.decoder(self.encoder(images, training=training), training=training)

  def ema_pairs(self):
    pairs = self.base_model.ema_pairs()
    if self.target_decoder is not None:
      pairs += base.weight_pairs(self.target_decoder, self.decoder)
    return pairs + self.decoder_objective.ema_pairs()

  def ema_decay(self, step):
    return self.base_model.ema_decay(step)

  def features(self, batch, training):
    return self.base_model.features(batch, training)

  def decode(self, parts: Sequence[Dict[str, tf.Tensor]], decoder: tf_keras.Model,
             training: bool, dropout: bool) -> Sequence[Dict[str, tf.Tensor]]:
    decoded = []
    for part in parts:
      if not part:  # e.g. DetCo without local views
        decoded.append({})
        continue
      if dropout:
        part = {level: self.channel_dropout(value, training=training)
                for level, value in part.items()}
      decoded.append(decoder(part, training=training))
    return decoded

  def compute_objective(self, batch, training):
    online, target = self.features(batch, training)
    encoder_loss, encoder_stats = self.objective(online, target, batch, training=training)
    decoder_online = self.decode(online, self.decoder, training, dropout=True)
    decoder_target: Optional[Sequence[Dict[str, tf.Tensor]]] = None
    if target is not None:
      decoder_target = self.decode(target, self.target_decoder, training, dropout=False)
    decoder_loss, decoder_stats = self.decoder_objective(decoder_online, decoder_target, batch,
                                                         training=training)
    alpha = self.task.decon.alpha
    stats = {'loss_encoder': encoder_loss, 'loss_decoder': decoder_loss}
    stats.update({f'encoder_{k}': v for k, v in encoder_stats.items()})
    stats.update({f'decoder_{k}': v for k, v in decoder_stats.items()})
    return alpha * encoder_loss + (1.0 - alpha) * decoder_loss, stats
