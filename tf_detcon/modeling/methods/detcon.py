"""DetCon (Hénaff et al. 2021): DetCon_B (BYOL-based) and DetCon_S (SimCLR-based).

With a single global mask (masks.kind='grid', grid_size=1) and one latent, DetCon_S is SimCLR
and DetCon_B has BYOL's architecture; with `loss='regression'` it is BYOL (BYOL's loss, not
DetCon's contrastive one), from the same code. `DetConObjective` acts on one feature level and
owns its heads, so DeCon can apply it to decoder levels too.
"""

from typing import Dict, Optional, Sequence, Tuple
import zlib

import tensorflow as tf
import tf_keras

from tf_detcon import losses
from tf_detcon import schedules
from tf_detcon.configs import methods as methods_config
from tf_detcon.configs import pretrain as pretrain_config
from tf_detcon.data import seeds as seeds_lib
from tf_detcon.modeling import base
from tf_detcon.modeling import registry
from tf_detcon.modeling.blocks import encoders
from tf_detcon.modeling.blocks import heads
from tf_detcon.modeling.blocks import pooling


class DetConLevelObjective(tf_keras.layers.Layer):
  """The DetCon loss on one feature level: sample masks, pool, project (predict), contrast."""

  def __init__(self, cfg: methods_config.DetConConfig, in_channels: int,
               use_sync_bn: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.cfg = cfg
    self.byol = cfg.variant == 'b'

    def head(head_cfg, name):
      return heads.MLPHead(head_cfg.hidden_dim, head_cfg.output_dim, use_sync_bn, name=name)

    self.projector = head(cfg.projector, 'projector')
    self.projector.build((None, in_channels))
    if self.byol:
      self.predictor = head(cfg.predictor, 'predictor')
      self.predictor.build((None, cfg.projector.output_dim))
      self.target_projector = head(cfg.projector, 'target_projector')
      self.target_projector.build((None, in_channels))

  def ema_pairs(self):
    return base.weight_pairs(self.target_projector, self.projector) if self.byol else []

  def sample_masks(self, mask: tf.Tensor, grid: Sequence[int],
                   seed: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """(cell ids [B, cells], sampled ids [B, R]) of one view on a feature grid."""
    cell_ids = pooling.assign_cells(mask, grid[0], grid[1], self.cfg.max_mask_ids)
    return cell_ids, pooling.sample_ids(cell_ids, self.cfg.max_mask_ids, self.cfg.num_samples,
                                        seed)

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
    if self.cfg.loss == 'regression':
      return losses.regression_loss_with_stats(preds[0], preds[1], targets[0], targets[1],
                                               ids[0], ids[1], ids[0], ids[1])
    return losses.detcon_loss_with_stats(
        preds[0], preds[1], targets[0], targets[1], ids[0], ids[1], ids[0], ids[1],
        temperature=self.cfg.temperature, local_negatives=self.cfg.local_negatives,
        global_negatives=self.cfg.global_negatives)


class DetConObjective(base.Objective):
  """DetCon on one or several levels (each with its own heads), levels weighted.

  The encoder uses one level (res5); DeCon's decoder uses P2 (SL) or P2..P5 averaged (ML).
  """

  def __init__(self, cfg: methods_config.DetConConfig, channels: Dict[str, int],
               levels: Sequence[str], weights: Sequence[float], use_sync_bn: bool = True,
               **kwargs):
    super().__init__(**kwargs)
    base.require_levels(levels, channels)
    self.weights_by_level = dict(zip(levels, weights))
    self.level_objectives = {
        level: DetConLevelObjective(cfg, channels[level], use_sync_bn, name=f'level_{level}')
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


@registry.register_method('detcon')
class DetConModel(base.PretrainModel):
  """Online encoder (+ EMA target encoder for DetCon_B) and the DetCon objective on res5."""

  def __init__(self, task: pretrain_config.PretrainTask, total_steps: int, **kwargs):
    super().__init__(task, total_steps, **kwargs)
    self.cfg = task.method.detcon
    self.encoder = encoders.build_backbone(task.encoder)
    if self.cfg.variant == 'b':
      self.target_encoder = encoders.build_backbone(task.encoder)
    self.objective = self.make_objective(encoders.level_channels(self.encoder),
                                         [self.cfg.feature_level], [1.0], name='detcon')

  def make_objective(self, channels: Dict[str, int], levels: Sequence[str],
                     weights: Sequence[float], name: str) -> DetConObjective:
    """The DetCon objective on other features (DeCon's decoder levels), with heads of its own."""
    return DetConObjective(self.cfg, channels, levels, weights,
                           self.task.encoder.norm_activation.use_sync_bn, name=name)

  def ema_decay(self, step):
    return schedules.ema_tau(step, self.total_steps, self.cfg.ema_tau_base)

  def features(self, inputs: base.Inputs, training: bool) -> base.Encoded:
    """Both views through the online encoder and (DetCon_B) the target encoder."""
    online = base.Branch(views=[self.encoder(v, training=training) for v in inputs.views])
    target = None
    if self.target_encoder is not None:
      target = base.Branch(views=[self.target_encoder(v, training=training)
                                  for v in inputs.views])
    return base.Encoded(online, target)
