"""DetCo (Xie et al. 2021): hierarchical intermediate contrast and cross global↔local contrast,
on MoCo v2. The authors released no pretraining code; this follows the paper and
docs/design.md §4.

Per level i (res2..res5), with a query encoder and its momentum key copy:
  q_g, k_g: global heads on the average-pooled level feature of the global views;
  q_l, k_l: local heads on the nine jigsaw patches' pooled features, concatenated in patch order;
  L_i = InfoNCE(q_g, k_g; global queue_i) + InfoNCE(q_l, k_l; local queue_i)
        + InfoNCE(q_l, k_g; global queue_i),   loss = Σ_i w_i L_i.
levels ['5'] with local=False is MoCo v2 from the same code.
"""

import functools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras

from tf_detcon.modeling import losses
from tf_detcon.primitives import replicas
from tf_detcon.configs import methods as methods_config
from tf_detcon.primitives import seeds
from tf_detcon.modeling import base
from tf_detcon.modeling import registry
from tf_detcon.modeling.blocks import encoders
from tf_detcon.modeling.blocks import queues


# Inside `encode`, key-side features of a target tail carry this prefix before their level.
_TAIL = 'tail/'


def _split_tail(features: base.LevelFeatures) -> Tuple[base.LevelFeatures, base.LevelFeatures]:
  """(encoder levels, tail levels without the prefix) of a key-side dict."""
  encoded, tail = {}, {}
  for level, value in features.items():
    if level.startswith(_TAIL):
      tail[level[len(_TAIL):]] = value
    else:
      encoded[level] = value
  return encoded, tail


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

  def __init__(self, channels: Dict[str, int], levels: Sequence[str], hidden_dim: int,
               output_dim: int, local: bool, num_patches: int, **kwargs):
    """Args: the channels of every level, the levels with heads, the heads' sizes, whether each
    level also has a local head (over `num_patches` concatenated patch features, DetCo §3.2)."""
    super().__init__(**kwargs)
    self.global_heads, self.local_heads = {}, {}
    for level in levels:
      head = ProjectionHead(hidden_dim, output_dim, name=f'global_{level}')
      head.build((None, channels[level]))
      self.global_heads[level] = head
      if local:
        head = ProjectionHead(hidden_dim, output_dim, name=f'local_{level}')
        head.build((None, num_patches * channels[level]))
        self.local_heads[level] = head

  def embed(self, global_features: base.LevelFeatures,
            patch_features: Optional[base.LevelFeatures], batch: int) -> Dict[str, tf.Tensor]:
    """{'g2': [B, D], 'l2': [B, D], ...} from level features of the view and of its patches
    (None without local views)."""
    out = {}
    for level, head in self.global_heads.items():
      out[f'g{level}'] = head(tf.reduce_mean(global_features[level], axis=[1, 2]))
    for level, head in self.local_heads.items():
      pooled = tf.reduce_mean(patch_features[level], axis=[1, 2])  # [B*P, C]
      out[f'l{level}'] = head(tf.reshape(pooled, [batch, -1]))  # patches in order
    return out


class DetCoObjective(base.Objective):
  """DetCo's loss on a set of levels: query/key heads (key heads follow by EMA) and queues.

  The queues are this objective's state: its output carries the step's keys, and
  `update_state` enqueues them after the optimiser step (the train step's step 5), so the
  current batch is never its own negative.
  """

  def __init__(self, channels: Dict[str, int], levels: Sequence[str], weights: Sequence[float],
               num_patches: int, hidden_dim: int = 2048, output_dim: int = 128,
               local: bool = True, queue_size: int = 65536, temperature: float = 0.2,
               **kwargs):
    """Args: the channels of every level, the levels it contrasts and their weights (DetCo
    §3.2's w_i), patches per local view, the heads' sizes, whether the local terms are on, the
    length of each queue and the InfoNCE temperature."""
    super().__init__(**kwargs)
    base.require_levels(levels, channels)
    self.local = local
    self.temperature = temperature
    self.weights_by_level = dict(zip(levels, weights))
    head_settings = dict(levels=levels, hidden_dim=hidden_dim, output_dim=output_dim,
                         local=local, num_patches=num_patches)
    self.query_heads = DetCoHeads(channels, name='query_heads', **head_settings)
    self.key_heads = DetCoHeads(channels, name='key_heads', **head_settings)
    self.queues = {}
    for level in levels:
      for kind in ('g', 'l') if local else ('g',):
        self.queues[f'{kind}{level}'] = queues.KeyQueue(queue_size, output_dim,
                                                         name=f'queue_{kind}{level}')

  def ema_pairs(self):
    return base.weight_pairs(self.key_heads, self.query_heads)

  def call(self, encoded: base.Encoded, inputs: base.Inputs,
           training: bool = True) -> base.ObjectiveOutput:
    """encoded.online: the query side (view 1 and its patches); encoded.target: the key side
    (view 2 and its patches, through the momentum encoder)."""
    del inputs
    query_side, key_side = encoded.online, encoded.target
    first_level = next(iter(query_side.views[0]))
    batch_size = tf.shape(query_side.views[0][first_level])[0]

    def patches(branch: base.Branch) -> Optional[base.LevelFeatures]:
      return None if branch.patches is None else branch.patches[0]

    query = self.query_heads.embed(query_side.views[0], patches(query_side), batch_size)
    key = {name: tf.stop_gradient(value) for name, value in
           self.key_heads.embed(key_side.views[0], patches(key_side), batch_size).items()}
    total, stats = 0.0, {}
    temperature = self.temperature
    for level, weight in self.weights_by_level.items():
      g = f'g{level}'
      terms = {'gg': losses.info_nce(query[g], key[g], self.queues[g].keys, temperature)}
      if self.local:
        l = f'l{level}'
        terms['ll'] = losses.info_nce(query[l], key[l], self.queues[l].keys, temperature)
        terms['gl'] = losses.info_nce(query[l], key[g], self.queues[g].keys, temperature)
      for term, value in terms.items():
        stats[f'loss_{term}_level{level}'] = value
      total += weight * tf.add_n(list(terms.values()))
    return base.ObjectiveOutput(total, stats, state={name: key[name] for name in self.queues})

  def update_state(self, state):
    """Enqueues the step's keys (gathered from every replica) into their queues."""
    for name, queue in self.queues.items():
      queue.enqueue(state[name])


class DetCoModel(base.PretrainModel):
  """Query encoder, momentum key encoder (`target_encoder`), DetCo objective with its queues."""

  def __init__(self, encoder: tf_keras.Model, key_encoder: tf_keras.Model,
               objective: Callable[..., 'DetCoObjective'], levels: Sequence[str],
               level_weights: Sequence[float], momentum: float, local: bool, bn_splits: int,
               shuffles_keys: bool, sync_query_bn: bool, patch_size: int, **kwargs):
    """Args: the built query and key encoders; `objective(channels, levels, weights, name=)`,
    the DetCo objective with its settings bound (`make_objective`); the levels it contrasts and
    their weights; the key encoder's momentum; whether the local (jigsaw) contrasts run; the BN
    groups per replica; whether the keys run on MoCo's cross-replica shuffle; whether the query
    encoder's BN is synchronised; the side of a jigsaw patch."""
    super().__init__(**kwargs)
    self.momentum = momentum
    self.local = local
    self.bn_splits = bn_splits
    self.shuffles_keys = shuffles_keys
    self.sync_query_bn = sync_query_bn
    self.patch_size = patch_size
    # A partial, not a dict of settings: Keras would track a dict attribute.
    self._objective = objective
    self.encoder = encoder
    self.target_encoder = key_encoder
    self.objective = self.make_objective(encoders.level_channels(self.encoder), levels,
                                         level_weights, name='detco')

  def make_objective(self, channels: Dict[str, int], levels: Sequence[str],
                     weights: Sequence[float], name: str) -> DetCoObjective:
    """The DetCo objective on other features (DeCon's decoder levels), with its own heads and
    queues."""
    return self._objective(channels, levels, weights, name=name)

  @property
  def queues(self) -> Dict[str, queues.KeyQueue]:
    return self.objective.queues

  def ema_decay(self, step):
    del step
    return tf.constant(self.momentum)

  def features(self, inputs: base.Inputs, training: bool) -> base.Encoded:
    """The query side (view 1 and its patches) through the encoder, the key side (view 2 and its
    patches) through the momentum encoder, on a cross-replica shuffle with `key_bn: shuffle`.

    Without sync BN the query side runs in `bn_splits` BN groups per replica, as MoCo's query
    encoder has per-GPU BN (only the keys are shuffled).
    """
    return self._features(inputs, training)

  def encode(self, inputs: base.Inputs, training: bool,
             target_tail: Optional[base.TargetTail] = None) -> base.Encoded:
    """With shuffling BN, a target tail (DeCon's target decoder) runs on the key encoder's
    features inside the same shuffle and BN groups (`base.PretrainModel.encode`)."""
    if target_tail is None or not self.shuffles_keys:
      return super().encode(inputs, training, target_tail)
    encoded = self._features(inputs, training, target_tail)
    target = encoded.target.map(lambda f: _split_tail(f)[0])
    tail = encoded.target.map(lambda f: _split_tail(f)[1])
    return base.Encoded(online=encoded.online, target=target, target_tail=tail)

  def _features(self, inputs: base.Inputs, training: bool,
                key_tail: Optional[base.TargetTail] = None) -> base.Encoded:
    """`features`; `key_tail`'s outputs join the key side's features under `_TAIL` + level."""
    size = self.patch_size

    def side(network: Callable[[tf.Tensor], base.LevelFeatures]):
      def run(view: tf.Tensor, patches: Optional[tf.Tensor]) -> base.Branch:
        patch_features = None
        if patches is not None:
          patch_features = [network(tf.reshape(patches, [-1, size, size, 3]))]
        return base.Branch(views=[network(view)], patches=patch_features)
      return run

    def key_network(images: tf.Tensor) -> base.LevelFeatures:
      features = self.target_encoder(images, training=training)
      if key_tail is None:
        return features
      tail = key_tail(features)
      return dict(features, **{_TAIL + level: value for level, value in tail.items()})

    patches = inputs.patches if self.local else (None, None)
    query_side = side(lambda images: self.encoder(images, training=training))
    if self.sync_query_bn:
      query = query_side(inputs.views[0], patches[0])
    else:
      query = in_groups(query_side, inputs.views[0], patches[0], self.bn_splits)
    if self.shuffles_keys:
      # A fresh permutation each step, the same on every replica: replica 0's seed.
      seed = replicas.gather(inputs.seed_for(seeds.KEY_SHUFFLE)[None])[0]
      key = shuffled_across_replicas(side(key_network), inputs.views[1], patches[1], seed,
                                     self.bn_splits)
    else:
      key = side(key_network)(inputs.views[1], patches[1])
    return base.Encoded(online=query, target=key)


def shuffled_across_replicas(fn: Callable[[tf.Tensor, Optional[tf.Tensor]], base.Branch],
                             view: tf.Tensor, patches: Optional[tf.Tensor],
                             seed: tf.Tensor, splits: int = 1) -> base.Branch:
  """MoCo's shuffling BN (MoCo §3.3): run `fn(view, patches)` on a random permutation of the
  global batch (whole images, with their patches), in BN groups, then undo the permutation.

  The groups are the replicas, each split into `splits` groups that `fn` sees one at a time (the
  GPUs of MoCo on one device). Every replica draws the same permutation from `seed`, so each
  group holds images from all over the batch; its BN statistics then do not belong to the
  queries' sub-batch. With one group in all there is nothing to shuffle, and `fn` runs as is.
  """
  replica_id, num_replicas = replicas.replica_info()
  if num_replicas * splits == 1:
    return fn(view, patches)
  patch_rows = 0 if patches is None else patches.shape[1]  # patches per image
  # Static shapes throughout: all_gather of a tensor with an unknown batch takes a padding path.
  local = view.shape[0]
  if local is None:
    raise ValueError('shuffling BN needs a static per-replica batch (drop_remainder=True)')
  if local % splits:
    raise ValueError(f'task.method.detco.bn_splits {splits} does not divide the per-replica '
                     f'batch {local}')
  total = local * num_replicas
  permutation = tf.argsort(tf.random.stateless_uniform([total], seed))
  inverse = tf.math.invert_permutation(permutation)
  mine = tf.reshape(permutation, [num_replicas, local])[replica_id]
  view = tf.gather(replicas.gather(view), mine)
  if patches is not None:
    patches = tf.gather(replicas.gather(patches), mine)
  outputs = in_groups(fn, view, patches, splits)
  own = tf.reshape(inverse, [num_replicas, local])[replica_id]

  def unshuffle(features: base.LevelFeatures, rows_per_image: int) -> base.LevelFeatures:
    restored = {}
    for level, value in features.items():
      value = tf.ensure_shape(value, [local * rows_per_image] + [None] * (value.shape.rank - 1))
      gathered = replicas.gather(value)
      grouped = tf.reshape(gathered, tf.concat([[total, rows_per_image], tf.shape(value)[1:]], 0))
      restored[level] = tf.reshape(tf.gather(grouped, own), tf.shape(value))
    return restored

  return base.Branch(
      views=[unshuffle(f, 1) for f in outputs.views],
      patches=None if outputs.patches is None else [unshuffle(f, patch_rows)
                                                    for f in outputs.patches])


def in_groups(fn: Callable[[tf.Tensor, Optional[tf.Tensor]], base.Branch], view: tf.Tensor,
              patches: Optional[tf.Tensor], splits: int) -> base.Branch:
  """`fn` on `splits` consecutive groups of images (each with its own BN statistics), its
  outputs concatenated back in image order."""
  if splits == 1:
    return fn(view, patches)
  views = tf.split(view, splits)
  patch_groups = [None] * splits if patches is None else tf.split(patches, splits)
  parts = [fn(v, p) for v, p in zip(views, patch_groups)]

  def concat(branches: Sequence[Sequence[base.LevelFeatures]]) -> List[base.LevelFeatures]:
    return [{level: tf.concat([b[i][level] for b in branches], 0) for level in branches[0][i]}
            for i in range(len(branches[0]))]

  return base.Branch(
      views=concat([p.views for p in parts]),
      patches=None if parts[0].patches is None else concat([p.patches for p in parts]))


@registry.register_method('detco')
def build_detco(cfg: methods_config.DetCoConfig, context: registry.BuildContext) -> DetCoModel:
  """DetCo, or MoCo v2 (`levels: ['5']`, `local: false`), from the method's block; the patches'
  size and number come from its view recipe (`local_views`)."""
  local_views = cfg.local_views
  objective = functools.partial(
      DetCoObjective, num_patches=local_views.grid_size ** 2, hidden_dim=cfg.head_hidden_dim,
      output_dim=cfg.output_dim, local=cfg.local, queue_size=cfg.queue_size,
      temperature=cfg.temperature)
  encoder = encoders.build_backbone(context.encoder)
  # 'shuffle': per-replica BN on a shuffled batch, MoCo's way; 'sync': BN across replicas.
  norm = context.encoder.norm_activation
  key_encoder = encoders.build_backbone(context.encoder.replace(
      norm_activation=norm.replace(use_sync_bn=cfg.key_bn == 'sync')))
  return DetCoModel(encoder, key_encoder, objective, cfg.levels, cfg.level_weights, cfg.momentum,
                    cfg.local, cfg.bn_splits, shuffles_keys=cfg.key_bn == 'shuffle',
                    sync_query_bn=norm.use_sync_bn, patch_size=local_views.patch_size)
