"""DeCon (Quetin, Ghosh, Maleki 2025): joint encoder–decoder contrastive pretraining.

A wrapper around any registered method that offers `make_objective` (DetCon_S, DetCon_B, DetCo):
the base method supplies its features and objective; DeCon adds Model Garden's FPN (and its EMA
target copy when the base has a target network), applies the base method's objective to decoder
levels with heads of their own, and trains on α·L_enc + (1 − α)·L_dec (docs/design.md §5).
"""

import dataclasses
import functools
import itertools
from typing import Any, Dict, List, Optional, Tuple
import zlib

import tensorflow as tf
import tf_keras

from tf_detcon.configs import methods as methods_config
from tf_detcon.primitives import seeds
from tf_detcon.modeling import base
from tf_detcon.modeling import registry
from tf_detcon.modeling.blocks import decoders
from tf_detcon.modeling.blocks import encoders


@dataclasses.dataclass(frozen=True)
class DeConSettings:
  """DeCon's own choices (docs/design.md §5), as plain values: the base method's name; the
  variant and the decoder levels it trains; α, the encoder loss's weight; the channel dropout rate
  on the skip laterals; and the decoder's config (as a dict) and levels, for the export."""
  base_method: str
  variant: str
  levels: Tuple[str, ...]
  alpha: float
  channel_dropout: float
  decoder: Dict[str, Any]
  min_level: int
  max_level: int


class DeConModel(base.PretrainModel):
  """Base method + FPN decoder (+ EMA target FPN) + the base objective on decoder levels."""

  def __init__(self, base_model: base.PretrainModel, decoder: tf_keras.Model,
               target_decoder: Optional[tf_keras.Model], settings: DeConSettings, **kwargs):
    """Args: the built base method (its encoders and objective are DeCon's); the FPN decoder and,
    when the base has a target network, its EMA target copy (built with per-group BN when the
    base's target side runs on MoCo's shuffle: `decodes_in_shuffle`); DeCon's settings."""
    super().__init__(**kwargs)
    self.settings = settings
    self.base_model = base_model
    self.encoder = self.base_model.encoder
    self.target_encoder = self.base_model.target_encoder
    self.objective = self.base_model.objective
    self.decoder = decoder
    # A base whose target side runs on a shuffle in per-replica BN groups (MoCo's shuffling BN)
    # runs the target decoder inside them (`encode`), so its BN is per group too.
    self.decodes_in_shuffle = self.base_model.shuffles_keys
    self.target_decoder = target_decoder
    # Not an attribute Keras tracks: its halves are the decoder's own layers.
    self._skip_lateral_decoder = decoders.SkipLateralFPN(self.decoder)
    self.levels = settings.levels
    channels = encoders.level_channels(decoder)
    self.decoder_objective = self.base_model.make_objective(
        {level: channels[level] for level in self.levels}, self.levels,
        [1.0 / len(self.levels)] * len(self.levels), name='decoder_objective')

  def call(self, images, training=False):
    return self.decoder(self.encoder(images, training=training), training=training)

  @property
  def checkpoint_items(self) -> Dict[str, tf_keras.layers.Layer]:
    return dict(super().checkpoint_items, decoder=self.decoder)

  def export_metadata(self) -> Dict[str, Any]:
    """What `transfer.py` checks against the fine-tuning model, and the choices of §5."""
    settings = self.settings
    return {'decon': {'base_method': settings.base_method, 'variant': settings.variant,
                      'decoder_levels': list(self.levels), 'alpha': settings.alpha,
                      'channel_dropout': settings.channel_dropout},
            'decoder': {'decoder': settings.decoder, 'min_level': settings.min_level,
                        'max_level': settings.max_level,
                        # What pretraining trained; the rest keeps its initialisation and is
                        # never called pretrained when it loads (tf_detcon/finetuning/transfer.py).
                        'trained_layers': decoders.trained_layers(self.decoder, self.levels)}}

  def untrained_variables(self) -> List[tf.Variable]:
    return decoders.untrained_variables(self.decoder, self.levels)

  def ema_pairs(self):
    pairs = self.base_model.ema_pairs()
    if self.target_decoder is not None:
      pairs += base.weight_pairs(self.target_decoder, self.decoder)
    return pairs + self.decoder_objective.ema_pairs()

  def ema_decay(self, step):
    return self.base_model.ema_decay(step)

  def features(self, inputs: base.Inputs, training: bool) -> base.Encoded:
    """The base method's features, and its target side through the EMA target decoder
    (`Encoded.target_tail`), run where the base runs its target network (`encode`)."""
    tail = None
    if self.target_decoder is not None:
      tail = lambda features: self.target_decoder(features, training=training)  # pylint: disable=unnecessary-lambda-assignment
    return self.base_model.encode(inputs, training, target_tail=tail)

  def decode(self, encoded: base.Encoded, inputs: base.Inputs, training: bool) -> base.Encoded:
    """Every online features dict through the decoder, with channel dropout on the FPN's skip
    laterals in training (`decoders.SkipLateralFPN`, drawn from the inputs' seed); the target
    side is `features`' target tail, decoded by the EMA target decoder as it is."""
    calls = itertools.count()  # one dropout seed per features dict
    rate = self.settings.channel_dropout
    decoder = self._skip_lateral_decoder

    def online(features: base.LevelFeatures) -> base.LevelFeatures:
      call = next(calls)
      if not training or rate <= 0:
        return self.decoder(features, training=training)
      level_seeds = {level: inputs.seed_for(seeds.CHANNEL_DROPOUT, call,
                                            zlib.crc32(level.encode()))
                     for level in decoder.skip_levels}
      return decoder(features, rate, level_seeds, training=training)

    return base.Encoded(online=encoded.online.map(online), target=encoded.target_tail)

  def compute_objective(self, inputs: base.Inputs, training: bool) -> base.ObjectiveOutput:
    encoded = self.features(inputs, training)
    encoder_result = self.objective(encoded, inputs, training=training)
    decoder_result = self.decoder_objective(self.decode(encoded, inputs, training), inputs,
                                            training=training)
    alpha = self.settings.alpha
    stats = {'loss_encoder': encoder_result.loss, 'loss_decoder': decoder_result.loss}
    stats.update({f'encoder_{k}': v for k, v in encoder_result.stats.items()})
    stats.update({f'decoder_{k}': v for k, v in decoder_result.stats.items()})
    loss = alpha * encoder_result.loss + (1.0 - alpha) * decoder_result.loss
    return base.ObjectiveOutput(loss, stats, state={'encoder': encoder_result.state,
                                                    'decoder': decoder_result.state})

  def update_state(self, state: Dict[str, Any]) -> None:
    self.objective.update_state(state['encoder'])
    self.decoder_objective.update_state(state['decoder'])


@registry.register_method('decon')
def build_decon(cfg: methods_config.DeConConfig, context: registry.BuildContext) -> DeConModel:
  """DeCon around its base (`cfg.base`, built by the base's own builder): Model Garden's FPN on
  the base's encoder, and its EMA target copy when the base has a target network."""
  base_model = registry.build(cfg.base, context)
  norm = context.encoder.norm_activation
  decoder = functools.partial(decoders.build_decoder, cfg.decoder, cfg.min_level, cfg.max_level,
                              input_specs=base_model.encoder.output_specs)
  online = decoder(norm)
  target = None
  if base_model.target_encoder is not None:
    target = decoder(norm.replace(use_sync_bn=False) if base_model.shuffles_keys else norm)
  return DeConModel(base_model, online, target, DeConSettings(
      base_method=cfg.base.type, variant=cfg.variant,
      levels=methods_config.DECON_VARIANT_LEVELS[cfg.variant], alpha=cfg.alpha,
      channel_dropout=cfg.channel_dropout, decoder=cfg.decoder.as_dict(),
      min_level=cfg.min_level, max_level=cfg.max_level))
