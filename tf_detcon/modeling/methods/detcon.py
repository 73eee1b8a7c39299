"""DetCon (Hénaff et al. 2021): DetCon_B (BYOL-based) and DetCon_S (SimCLR-based).

With a single global mask (masks.type='grid', grid_size=1) and one latent, DetCon_S is SimCLR
and DetCon_B has BYOL's architecture; with `loss='regression'` it is BYOL (BYOL's loss, not
DetCon's contrastive one), from the same code. `DetConObjective` acts on one feature level and
owns its heads, so DeCon can apply it to decoder levels too.
"""

import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple
import zlib

import tensorflow as tf
import tf_keras

from tf_detcon.modeling import losses
from tf_detcon.modeling import schedules
from tf_detcon.configs import methods as methods_config
from tf_detcon.primitives import seeds as seeds_lib
from tf_detcon.modeling import base
from tf_detcon.modeling import registry
from tf_detcon.modeling.blocks import encoders
from tf_detcon.modeling.blocks import heads
from tf_detcon.modeling.blocks import pooling


class DetConLevelObjective(tf_keras.layers.Layer):
  """The DetCon loss on one feature level (DetCon §3.1, eq. 3): sample masks, pool, project
  (predict), contrast."""

  def __init__(self, in_channels: int, projector: Tuple[int, int],
               predictor: Optional[Tuple[int, int]], loss: str = 'contrastive',
               temperature: float = 0.1, local_negatives: bool = True,
               global_negatives: bool = True, num_samples: int = 16, max_mask_ids: int = 256,
               use_sync_bn: bool = True, **kwargs):
    """Args:
      in_channels: channels of the features it pools.
      projector: (hidden, output) sizes of the projector MLP.
      predictor: those of BYOL's predictor (DetCon_B, with an EMA target projector), or None
        (DetCon_S: the projection is its own target).
      loss: 'contrastive' (DetCon eq. 3) or 'regression' (BYOL's).
      temperature, local_negatives, global_negatives: of the contrastive loss
        (`losses.detcon_loss`).
      num_samples: masks sampled per view; max_mask_ids: ids an id map may hold.
      use_sync_bn: the heads' BN across replicas.
    """
    super().__init__(**kwargs)
    self.byol = predictor is not None
    self.loss = loss
    self.temperature = temperature
    self.local_negatives = local_negatives
    self.global_negatives = global_negatives
    self.num_samples = num_samples
    self.max_mask_ids = max_mask_ids

    def head(dims, name):
      return heads.MLPHead(dims[0], dims[1], use_sync_bn, name=name)

    self.projector = head(projector, 'projector')
    self.projector.build((None, in_channels))
    if self.byol:
      self.predictor = head(predictor, 'predictor')
      self.predictor.build((None, projector[1]))
      self.target_projector = head(projector, 'target_projector')
      self.target_projector.build((None, in_channels))

  def ema_pairs(self):
    return base.weight_pairs(self.target_projector, self.projector) if self.byol else []

  def sample_masks(self, mask: tf.Tensor, grid: Sequence[int],
                   seed: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """(cell ids [B, cells], sampled ids [B, R]) of one view on a feature grid."""
    cell_ids = pooling.assign_cells(mask, grid[0], grid[1], self.max_mask_ids)
    return cell_ids, pooling.sample_ids(cell_ids, self.max_mask_ids, self.num_samples, seed)

  @staticmethod
  def embed(features: tf.Tensor, cell_ids: tf.Tensor, ids: tf.Tensor,
            head_layers: Sequence[tf_keras.layers.Layer], training: bool) -> tf.Tensor:
    pooled, _ = pooling.pool_by_ids(features, cell_ids, ids)
    batch, rois = tf.shape(pooled)[0], tf.shape(pooled)[1]
    x = tf.reshape(pooled, [batch * rois, pooled.shape[-1]])
    for layer in head_layers:
      x = layer(x, training=training)
    return tf.reshape(x, [batch, rois, x.shape[-1]])

  def call(self, online: Sequence[tf.Tensor], target: Optional[Sequence[tf.Tensor]],
           masks: Sequence[tf.Tensor], training: bool = True,
           seeds: Optional[Sequence[tf.Tensor]] = None) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Loss of two views.

    Args:
      online: [view1, view2] online features [B, h, w, C].
      target: [view1, view2] target-network features (DetCon_B) or None (DetCon_S).
      masks: [mask1, mask2] int id maps [B, H, W] aligned with the views.
      training: BN mode of the heads.
      seeds: optional stateless seeds per view for the id sampling (tests).

    Returns:
      (loss, {'positive_fraction': ...}).
    """
    preds, targets, ids = [], [], []
    for v in range(2):
      grid = online[v].shape[1:3]
      cell_ids, view_ids = self.sample_masks(masks[v], grid, None if seeds is None else seeds[v])
      ids.append(view_ids)
      if self.byol:
        preds.append(self.embed(online[v], cell_ids, view_ids,
                                [self.projector, self.predictor], training))
        targets.append(tf.stop_gradient(self.embed(target[v], cell_ids, view_ids,
                                                   [self.target_projector], training)))
      else:
        projection = self.embed(online[v], cell_ids, view_ids, [self.projector], training)
        preds.append(projection)
        targets.append(projection)
    if self.loss == 'regression':
      return losses.regression_loss_with_stats(preds[0], preds[1], targets[0], targets[1],
                                               ids[0], ids[1], ids[0], ids[1])
    return losses.detcon_loss_with_stats(
        preds[0], preds[1], targets[0], targets[1], ids[0], ids[1], ids[0], ids[1],
        temperature=self.temperature, local_negatives=self.local_negatives,
        global_negatives=self.global_negatives)


class DetConObjective(base.Objective):
  """DetCon on one or several levels (each with its own heads), levels weighted.

  The encoder uses one level (res5); DeCon's decoder uses P2 (SL) or P2..P5 averaged (ML).
  """

  def __init__(self, channels: Dict[str, int], levels: Sequence[str], weights: Sequence[float],
               level_settings: Dict[str, Any], **kwargs):
    """Args: the channels of every feature level, the levels it contrasts and their weights,
    and `DetConLevelObjective`'s other arguments (heads, loss, sampling), the same per level."""
    super().__init__(**kwargs)
    base.require_levels(levels, channels)
    self.weights_by_level = dict(zip(levels, weights))
    self.level_objectives = {
        level: DetConLevelObjective(channels[level], name=f'level_{level}', **level_settings)
        for level in levels}

  def ema_pairs(self):
    return [pair for objective in self.level_objectives.values()
            for pair in objective.ema_pairs()]

  def call(self, encoded: base.Encoded, inputs: base.Inputs, training: bool = True,
           seeds: Optional[Sequence[tf.Tensor]] = None) -> base.ObjectiveOutput:
    """Args: the two views' features (online; target for DetCon_B), the inputs (their masks),
    the BN mode, optional per-view sampling seeds (tests; by default they derive from the
    inputs' seed, per objective, level and view)."""
    online, target = encoded.online.views, encoded.target
    total, fractions, stats = 0.0, [], {}
    for level, objective in self.level_objectives.items():
      level_seeds = seeds
      if level_seeds is None:
        level_seeds = [inputs.seed_for(seeds_lib.MASK_SAMPLING, zlib.crc32(self.name.encode()),
                                       zlib.crc32(level.encode()), view)
                       for view in range(2)]
      loss, level_stats = objective(
          [online[0][level], online[1][level]],
          None if target is None else [target.views[0][level], target.views[1][level]],
          list(inputs.masks), training=training, seeds=level_seeds)
      total += self.weights_by_level[level] * loss
      fractions.append(level_stats['positive_fraction'])
      if len(self.level_objectives) > 1:
        stats[f'loss_level{level}'] = loss
    stats['positive_fraction'] = tf.add_n(fractions) / len(fractions)
    return base.ObjectiveOutput(total, stats)


ObjectiveFactory = Callable[..., 'DetConObjective']


class DetConModel(base.PretrainModel):
  """Online encoder (+ EMA target encoder for DetCon_B) and the DetCon objective on one level."""

  def __init__(self, encoder: tf_keras.Model, target_encoder: Optional[tf_keras.Model],
               objective: ObjectiveFactory, feature_level: str, ema_tau_base: float,
               total_steps: int, **kwargs):
    """Args: the built encoders; `objective(channels, levels, weights, name=)`, the DetCon
    objective with its settings bound (`make_objective`); the level it contrasts; BYOL's τ_base
    and the schedule length its τ anneals over."""
    super().__init__(**kwargs)
    self.ema_tau_base = ema_tau_base
    self.total_steps = total_steps
    # A partial, not a dict of settings: Keras would track a dict attribute.
    self._objective = objective
    self.encoder = encoder
    if target_encoder is not None:
      self.target_encoder = target_encoder
    self.objective = self.make_objective(encoders.level_channels(self.encoder),
                                         [feature_level], [1.0], name='detcon')

  def make_objective(self, channels: Dict[str, int], levels: Sequence[str],
                     weights: Sequence[float], name: str) -> DetConObjective:
    """The DetCon objective on other features (DeCon's decoder levels), with heads of its own."""
    return self._objective(channels, levels, weights, name=name)

  def ema_decay(self, step):
    return schedules.ema_tau(step, self.total_steps, self.ema_tau_base)

  def features(self, inputs: base.Inputs, training: bool) -> base.Encoded:
    """Both views through the online encoder and (DetCon_B) the target encoder."""
    online = base.Branch(views=[self.encoder(v, training=training) for v in inputs.views])
    target = None
    if self.target_encoder is not None:
      target = base.Branch(views=[self.target_encoder(v, training=training)
                                  for v in inputs.views])
    return base.Encoded(online, target)


@registry.register_method('detcon')
def build_detcon(cfg: methods_config.DetConConfig, context: registry.BuildContext) -> DetConModel:
  """DetCon_S / SimCLR (no target network) or DetCon_B / BYOL (`variant: b`: an EMA target
  encoder and a predictor), from the method's block."""
  byol = cfg.variant == 'b'
  objective = functools.partial(DetConObjective, level_settings=dict(
      projector=(cfg.projector.hidden_dim, cfg.projector.output_dim),
      predictor=(cfg.predictor.hidden_dim, cfg.predictor.output_dim) if byol else None,
      loss=cfg.loss, temperature=cfg.temperature, local_negatives=cfg.local_negatives,
      global_negatives=cfg.global_negatives, num_samples=cfg.num_samples,
      max_mask_ids=cfg.max_mask_ids, use_sync_bn=context.encoder.norm_activation.use_sync_bn))
  encoder = encoders.build_backbone(context.encoder)
  target_encoder = encoders.build_backbone(context.encoder) if byol else None
  return DetConModel(encoder, target_encoder, objective, cfg.feature_level, cfg.ema_tau_base,
                     context.total_steps)
