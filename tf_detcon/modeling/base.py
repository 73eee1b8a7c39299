"""The shared tf_keras model and train step of every method.

One skeleton: views (colour on the accelerator if configured) → the method's objective →
gradients → optimiser → EMA/momentum targets → logs. A method subclasses `PretrainModel` and
supplies `compute_objective` (and, with a target network, `ema_pairs` and `ema_decay`); DeCon
wraps another method's objective. Nothing here is method-specific.
"""

from typing import Dict, List, Sequence, Tuple

import tensorflow as tf
import tf_keras

from tf_detcon.configs import data as data_config
from tf_detcon.data import color
from tf_detcon import replicas


def ema_update(pairs: Sequence[Tuple[tf.Variable, tf.Variable]], decay: tf.Tensor) -> None:
  """target ← decay · target + (1 − decay) · online, on every replica's copy (from any context)."""

  def blend(target, online, decay_):
    return target.assign(decay_ * target + (1.0 - decay_) * tf.cast(online, target.dtype))

  replicas.update_everywhere([(target, blend, (online, decay)) for target, online in pairs])


def weight_pairs(target: tf_keras.layers.Layer,
                 online: tf_keras.layers.Layer) -> List[Tuple[tf.Variable, tf.Variable]]:
  """(target, online) pairs of the online layer's trainable weights, matched by position in two
  identically built layers."""
  return [(t, o) for t, o in zip(target.weights, online.weights) if o.trainable]


def require_levels(levels: Sequence[str], channels: Dict[str, int]) -> None:
  """Raises a clear error when an objective asks for levels the features do not have."""
  missing = sorted(set(levels) - set(channels))
  if missing:
    raise ValueError(f'levels {missing} not among the features {sorted(channels)}')


def mirror_targets(pairs: Sequence[Tuple[tf.Variable, tf.Variable]]) -> None:
  """Initialises targets as copies of the online weights."""
  for target, online in pairs:
    target.assign(online)


class PretrainModel(tf_keras.Model):
  """Base of the pretraining models; `model.fit` drives `train_step`."""

  def __init__(self, data_cfg: data_config.DataConfig, total_steps: int,
               l2_weight_decay: float = 0.0, **kwargs):
    """Args: the data config (for on-device colour), the schedule length, and a coupled L2
    penalty (MoCo's SGD weight decay: wd/2·Σ‖w‖² over the optimised variables; LARS decays in
    the optimiser instead)."""
    super().__init__(**kwargs)
    self.data_cfg = data_cfg
    self.total_steps = total_steps
    self.l2_weight_decay = l2_weight_decay
    # `_logs` all-reduces every value inside the step; Keras would otherwise sum the replicas'
    # (already global) values under MirroredStrategy.
    self.distribute_reduction_method = 'first'

  # ------------------------------------------------------------------ what a method supplies
  # `encoder` (exported), `target_encoder` (EMA copy or None) and `objective`, a layer called as
  # objective(online_parts, target_parts, batch, training) -> (loss, stats), and:

  def features(self, batch: Dict[str, tf.Tensor], training: bool):
    """(online parts, target parts or None): per input part (a view, DetCo's patches), the
    encoder's level-feature dict {'2': ..., '5': ...}."""
    raise NotImplementedError

  def make_objective(self, channels: Dict[str, int], levels: Sequence[str],
                     weights: Sequence[float], name: str) -> tf_keras.layers.Layer:
    """The method's objective on other features (DeCon's decoder levels), with its own heads."""
    raise NotImplementedError

  def compute_objective(self, batch: Dict[str, tf.Tensor],
                        training: bool) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Returns (loss of this replica's examples, scalar statistics to log)."""
    online, target = self.features(batch, training)
    return self.objective(online, target, batch, training=training)

  def ema_pairs(self) -> List[Tuple[tf.Variable, tf.Variable]]:
    """(target, online) variables that follow the online network by EMA; none by default."""
    return []

  def ema_decay(self, step: tf.Tensor) -> tf.Tensor:
    del step
    return tf.constant(0.0)

  # ------------------------------------------------------------------------- shared machinery
  def optimized_variables(self) -> List[tf.Variable]:
    """Trainable variables minus the EMA targets. Targets stay `trainable` so that their BN
    uses batch statistics (Keras runs a non-trainable BN in inference mode), as BYOL's does."""
    targets = {t.ref() for t, _ in self.ema_pairs()}
    return [v for v in self.trainable_variables if v.ref() not in targets]

  def initialize_targets(self) -> None:
    mirror_targets(self.ema_pairs())

  def prepare_batch(self, batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Colour ops + normalisation when they run on the accelerator (`color_on_device`)."""
    if self.data_cfg.color_on_device:
      return color.finalize_batch(batch, self.data_cfg)
    return batch

  def train_step(self, batch):
    batch = self.prepare_batch(batch)
    _, num_replicas = replicas.replica_info()
    variables = self.optimized_variables()
    with tf.GradientTape() as tape:
      loss, stats = self.compute_objective(batch, training=True)
      # The optimiser sums gradients over replicas: this makes it the global mean's gradient.
      scaled_loss = loss / num_replicas
    gradients = tape.gradient(scaled_loss, variables)
    # Variables the objective does not reach (DeCon's unused FPN levels) get no update at all:
    # neither the coupled L2 below nor LARS's decay may shrink what nothing trains.
    trained = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    if self.l2_weight_decay:
      # MoCo's coupled L2, wd/2·Σ‖w‖² over the trained variables: its gradient wd·w, split over
      # the replicas as the loss is.
      trained = [(g + (self.l2_weight_decay / num_replicas) * tf.cast(v, g.dtype), v)
                 for g, v in trained]
    self.optimizer.apply_gradients(trained)
    decay = self.ema_decay(self.optimizer.iterations)
    ema_update(self.ema_pairs(), decay)
    return self._logs(dict(stats, loss=loss), decay)

  def _logs(self, values: Dict[str, tf.Tensor], decay: tf.Tensor) -> Dict[str, tf.Tensor]:
    logs = {name: replicas.mean(tf.cast(value, tf.float32)) for name, value in values.items()}
    learning_rate = self.optimizer.learning_rate
    if callable(learning_rate):
      learning_rate = learning_rate(self.optimizer.iterations)
    logs['learning_rate'] = tf.cast(learning_rate, tf.float32)
    if self.ema_pairs():
      logs['tau'] = decay
    return logs
