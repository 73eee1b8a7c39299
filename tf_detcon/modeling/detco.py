"""DetCo (Xie et al. 2021): hierarchical intermediate contrast and cross global↔local contrast,
on MoCo v2. The authors released no pretraining code; this follows the paper and SPEC §4.

Per level i (res2..res5), with a query encoder and its momentum key copy:
  q_g, k_g: global heads on the average-pooled level feature of the global views;
  q_l, k_l: local heads on the nine jigsaw patches' pooled features, concatenated in patch order;
  L_i = InfoNCE(q_g, k_g; global queue_i) + InfoNCE(q_l, k_l; local queue_i)
        + InfoNCE(q_l, k_g; global queue_i),   loss = Σ_i w_i L_i.
levels ['5'] with local=False is MoCo v2 from the same code.
"""

from typing import Dict, List, Tuple

import tensorflow as tf
import tf_keras

from tf_detcon import losses
from tf_detcon.configs import pretrain as pretrain_config
from tf_detcon.modeling import base
from tf_detcon.modeling import encoders
from tf_detcon.modeling import queues
from tf_detcon.training import optimization


class ProjectionHead(tf_keras.layers.Layer):
  """MoCo v2's MLP: linear → ReLU → linear (to the contrastive dimension)."""

  def __init__(self, hidden_dim: int, output_dim: int, **kwargs):
    super().__init__(**kwargs)
    self.hidden = tf_keras.layers.Dense(hidden_dim, activation='relu', name='hidden')
    self.output_layer = tf_keras.layers.Dense(output_dim, name='output')

  def build(self, input_shape):
    self.hidden.build(input_shape)
    self.output_layer.build(tuple(input_shape[:-1]) + (self.hidden.units,))
    super().build(input_shape)

  def call(self, inputs):
    return self.output_layer(self.hidden(inputs))


class DetCoHeads(tf_keras.layers.Layer):
  """Global (and local) heads of every level: one side, query or key."""

  def __init__(self, cfg: pretrain_config.DetCoConfig, channels: Dict[str, int],
               num_patches: int, **kwargs):
    super().__init__(**kwargs)
    self.global_heads, self.local_heads = {}, {}
    for level in cfg.levels:
      head = ProjectionHead(cfg.head_hidden_dim, cfg.output_dim, name=f'global_{level}')
      head.build((None, channels[level]))
      self.global_heads[level] = head
      if cfg.local:
        head = ProjectionHead(cfg.head_hidden_dim, cfg.output_dim, name=f'local_{level}')
        head.build((None, num_patches * channels[level]))
        self.local_heads[level] = head

  def embed(self, global_features: Dict[str, tf.Tensor],
            patch_features: Dict[str, tf.Tensor], batch: int) -> Dict[str, tf.Tensor]:
    """{'g2': [B, D], 'l2': [B, D], ...} from level features of the view and of its patches."""
    out = {}
    for level, head in self.global_heads.items():
      out[f'g{level}'] = head(tf.reduce_mean(global_features[level], axis=[1, 2]))
    for level, head in self.local_heads.items():
      pooled = tf.reduce_mean(patch_features[level], axis=[1, 2])  # [B*P, C]
      out[f'l{level}'] = head(tf.reshape(pooled, [batch, -1]))  # patches in order
    return out


class DetCoModel(base.PretrainModel):
  """Query encoder + heads, momentum key encoder + heads, eight (or fewer) key queues."""

  def __init__(self, task: pretrain_config.PretrainTask, total_steps: int, **kwargs):
    super().__init__(task.train_data, total_steps,
                     optimization.coupled_weight_decay(task.optimization), **kwargs)
    cfg = task.detco
    self.task = task
    self.cfg = cfg
    validate(task)
    self.encoder = encoders.build_backbone(task.encoder)
    self.key_encoder = encoders.build_backbone(task.encoder)
    channels = encoders.level_channels(self.encoder)
    missing = set(cfg.levels) - set(channels)
    if missing:
      raise ValueError(f'detco.levels {sorted(missing)} not in the encoder {sorted(channels)}')
    num_patches = task.train_data.local_views.grid_size ** 2
    self.query_heads = DetCoHeads(cfg, channels, num_patches, name='query_heads')
    self.key_heads = DetCoHeads(cfg, channels, num_patches, name='key_heads')
    self.queues = {}
    for level in cfg.levels:
      for kind in ('g', 'l') if cfg.local else ('g',):
        self.queues[f'{kind}{level}'] = queues.KeyQueue(cfg.queue_size, cfg.output_dim,
                                                         name=f'queue_{kind}{level}')

  def call(self, images, training=False):
    return self.encoder(images, training=training)

  def ema_pairs(self):
    def pairs(target, online):
      return [(t, o) for t, o in zip(target.weights, online.weights) if o.trainable]
    return pairs(self.key_encoder, self.encoder) + pairs(self.key_heads, self.query_heads)

  def ema_decay(self, step):
    del step
    return tf.constant(self.cfg.momentum)

  def _embed(self, encoder, heads, view, patches, training):
    batch = tf.shape(view)[0]
    global_features = encoder(view, training=training)
    patch_features = {}
    if self.cfg.local:
      size = patches.shape[2]
      patch_features = encoder(tf.reshape(patches, [-1, size, size, 3]), training=training)
    return heads.embed(global_features, patch_features, batch)

  def compute_objective(self, batch, training) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    query = self._embed(self.encoder, self.query_heads, batch['view1'], batch.get('patches1'),
                        training)
    key = self._embed(self.key_encoder, self.key_heads, batch['view2'], batch.get('patches2'),
                      training)
    key = {name: tf.stop_gradient(value) for name, value in key.items()}
    total, stats = 0.0, {}
    temperature = self.cfg.temperature
    for level, weight in zip(self.cfg.levels, self.cfg.level_weights):
      g = f'g{level}'
      terms = {'gg': losses.info_nce(query[g], key[g], self.queues[g].keys, temperature)}
      if self.cfg.local:
        l = f'l{level}'
        terms['ll'] = losses.info_nce(query[l], key[l], self.queues[l].keys, temperature)
        terms['gl'] = losses.info_nce(query[l], key[g], self.queues[g].keys, temperature)
      for term, value in terms.items():
        stats[f'loss_{term}_res{level}'] = value
      total += weight * tf.add_n(list(terms.values()))
    if training:
      for name, queue in self.queues.items():  # after the loss: this batch is not a negative
        queue.enqueue(key[name])
    return total, stats


def validate(task: pretrain_config.PretrainTask) -> None:
  """Config errors as clear messages at start-up."""
  cfg, data = task.detco, task.train_data
  if len(cfg.levels) != len(cfg.level_weights):
    raise ValueError(f'detco.levels {cfg.levels} and level_weights {cfg.level_weights} differ '
                     'in length')
  if cfg.queue_size % data.global_batch_size:
    raise ValueError(f'detco.queue_size {cfg.queue_size} is not a multiple of the global batch '
                     f'{data.global_batch_size}')
  if cfg.local != data.local_views.enabled:
    raise ValueError('detco.local needs train_data.local_views.enabled (and vice versa)')


def queue_variables(model: DetCoModel) -> List[tf.Variable]:
  return [v for q in model.queues.values() for v in (q.keys, q.pointer)]
