"""A PixPro-style toy method, built only on the input contract (`base.Inputs.boxes` and
`flips`): the proof that a method which needs the views' geometry is its own module, its config
block and its registration, and nothing in data, colour or the trainer.

PixPro (Xie et al. 2021, "Propagate Yourself", §3.1–3.2): cells of the two views' feature maps
whose centres lie within `threshold` cell diagonals of each other in the source image are
positive pairs; the online branch's projection goes through the pixel propagation module
(y_a = Σ_b max(cos(x_a, x_b), 0)^γ · g(x_b), g one linear layer) and is pulled towards the EMA
target's projection of its positive partners, in both directions. The settings are those of
the authors' release script (pos-ratio 0.7, p 2, momentum 0.99, one transform layer); one level,
no instance branch: a toy, not a reproduction.
"""

import dataclasses

import tensorflow as tf
import tf_keras

from tf_detcon.configs import checks
from tf_detcon.configs import methods
from tf_detcon.modeling import base
from tf_detcon.modeling import registry
from tf_detcon.modeling import schedules
from tf_detcon.modeling.blocks import encoders
from tf_detcon.modeling.blocks import heads
from tf_detcon.primitives import boxes


@dataclasses.dataclass
class PixProConfig(methods.MethodBlock):
  """PixPro's pixel settings on one feature level."""
  feature_level: str = '3'
  threshold: float = 0.7
  sharpness: float = 2.0
  hidden_dim: int = 64
  dim: int = 32
  ema_tau_base: float = 0.99

  def check(self, task, path):
    levels = checks.encoder_levels(task)
    if levels is not None:
      checks.require(self.feature_level in levels,
                     f'{path}.feature_level {self.feature_level!r} is not a level of the '
                     f'encoder ({", ".join(levels)})')
    checks.positive(self.threshold, f'{path}.threshold')
    checks.positive(self.sharpness, f'{path}.sharpness')
    checks.probability(self.ema_tau_base, f'{path}.ema_tau_base')


@dataclasses.dataclass
class PixProMethodConfig(methods.MethodConfig):
  pixpro: PixProConfig = dataclasses.field(default_factory=PixProConfig)


def positive_pairs(inputs: base.Inputs, height: int, width: int, threshold: float) -> tf.Tensor:
  """[B, hw, hw] 1.0 where cell a of view 1 and cell b of view 2 show nearly the same source
  point: their centres' distance in the source, over the larger of the two cell diagonals, is
  below `threshold` (PixPro §3.1)."""
  centres = [boxes.cell_centres(inputs.boxes[v], inputs.flips[v], height, width)
             for v in range(2)]
  diagonal = tf.maximum(*[boxes.cell_diagonals(inputs.boxes[v], height, width)
                          for v in range(2)])
  distances = boxes.pairwise_distances(centres[0], centres[1]) / diagonal[:, None, None]
  return tf.cast(distances < threshold, tf.float32)


class PixProObjective(base.Objective):
  """The pixel propagation consistency loss on one level."""

  def __init__(self, channels, level, hidden_dim, dim, threshold, sharpness, **kwargs):
    super().__init__(**kwargs)
    self.level, self.threshold, self.sharpness = level, threshold, sharpness
    self.projector = heads.MLPHead(hidden_dim, dim, name='projector')
    self.target_projector = heads.MLPHead(hidden_dim, dim, name='target_projector')
    self.transform = tf_keras.layers.Dense(dim, name='transform')
    for layer, width in ((self.projector, channels), (self.target_projector, channels),
                         (self.transform, dim)):
      layer.build((None, width))

  def ema_pairs(self):
    return base.weight_pairs(self.target_projector, self.projector)

  def project(self, features, head, training):
    batch, height, width, channels = features.shape
    flat = tf.reshape(features, [-1, channels])
    return tf.reshape(head(flat, training=training), [-1, height * width, head.output_layer.units])

  def propagate(self, x):
    """PixPro's pixel propagation module over one view's cells [B, hw, D]."""
    unit = tf.math.l2_normalize(x, axis=-1)
    similarity = tf.maximum(tf.matmul(unit, unit, transpose_b=True), 0.0) ** self.sharpness
    values = tf.math.l2_normalize(self.transform(x), axis=-1)
    return tf.math.l2_normalize(tf.matmul(similarity, values), axis=-1)

  def call(self, encoded, inputs, training=True):
    online = [f[self.level] for f in encoded.online.views]
    height, width = online[0].shape[1:3]
    predictions = [self.propagate(self.project(f, self.projector, training)) for f in online]
    targets = [tf.stop_gradient(tf.math.l2_normalize(
        self.project(f[self.level], self.target_projector, training), axis=-1))
               for f in encoded.target.views]
    pairs = positive_pairs(inputs, height, width, self.threshold)
    loss = 0.0
    for a, b, mask in ((0, 1, pairs), (1, 0, tf.transpose(pairs, [0, 2, 1]))):
      cosines = tf.matmul(predictions[a], targets[b], transpose_b=True)
      per_image = (tf.reduce_sum(cosines * mask, axis=[1, 2]) /
                   (tf.reduce_sum(mask, axis=[1, 2]) + 1e-6))
      loss += -2.0 * tf.reduce_mean(per_image)
    return base.ObjectiveOutput(loss, {'positive_pairs': tf.reduce_mean(
        tf.reduce_sum(pairs, axis=[1, 2]))})


class PixProModel(base.PretrainModel):
  """Online and EMA target encoders; the PixPro objective on one level."""

  def __init__(self, encoder, target_encoder, objective, ema_tau_base, total_steps, **kwargs):
    super().__init__(**kwargs)
    self.ema_tau_base = ema_tau_base
    self.total_steps = total_steps
    self.encoder = encoder
    self.target_encoder = target_encoder
    self.objective = objective

  def ema_decay(self, step):
    return schedules.ema_tau(step, self.total_steps, self.ema_tau_base)

  def features(self, inputs, training):
    return base.Encoded(
        online=base.Branch(views=[self.encoder(v, training=training) for v in inputs.views]),
        target=base.Branch(views=[self.target_encoder(v, training=training)
                                  for v in inputs.views]))


@registry.register_method('pixpro')
def build_pixpro(cfg, context):
  encoder = encoders.build_backbone(context.encoder)
  target_encoder = encoders.build_backbone(context.encoder)
  objective = PixProObjective(encoders.level_channels(encoder)[cfg.feature_level],
                              cfg.feature_level, cfg.hidden_dim, cfg.dim, cfg.threshold,
                              cfg.sharpness, name='pixpro')
  return PixProModel(encoder, target_encoder, objective, cfg.ema_tau_base, context.total_steps)
