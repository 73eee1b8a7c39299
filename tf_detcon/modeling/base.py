"""The method contract and the one train step that every pretraining method shares.

A method is a `PretrainModel` subclass whose builder is registered with
`registry.register_method(name)` under its `task.method.type`. The builder builds the parts from
the method's config block and hands them to the model, whose constructor sets

  encoder         the online encoder, exported as Model Garden's `backbone`;
  objective       an `Objective`: its heads, its loss and any state it keeps (DetCo's queues);
  target_encoder  an EMA / momentum copy of the encoder, or None (the default);

and it implements `features(inputs, training) -> Encoded` (which network encodes which input)
and, if it has a target network, `ema_decay(step)`. It may extend `ema_pairs()`,
`checkpoint_items` and `export_metadata()` (DeCon adds its decoder), `compute_objective` and
`update_state` (DeCon combines two objectives). A missing piece fails at construction, naming it.

`train_step`, the same for every method (docs/architecture.md draws it):
  1. inputs  = `prepare_inputs(batch)`: the `InputPreparation` the trainer composed from the
               data config (colour and normalisation of the host views, on the accelerator when
               `color_on_device`; the step's seed); an `Inputs` (views, masks, DetCo's patches).
  2. result  = `compute_objective(inputs)`: `features(inputs)` → `objective(encoded, inputs)`,
               an `ObjectiveOutput` (this replica's loss, statistics, state to keep).
  3. optimiser step on the gradient of the global mean loss, for the variables the loss reaches;
               SGD methods add MoCo's coupled L2 on those variables.
  4. EMA     : every (target, online) pair of `ema_pairs()` ← τ·target + (1 − τ)·online, with
               τ = `ema_decay(step)`, on every replica's copy.
  5. state   : `update_state(result.state)`, e.g. DetCo enqueues this step's keys.
  6. logs    : the statistics averaged over replicas, the learning rate applied, τ.
"""

import abc
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras

from tf_detcon.configs import data as data_config
from tf_detcon.primitives import replicas
from tf_detcon.primitives import color
from tf_detcon.primitives import seeds

LevelFeatures = Dict[str, tf.Tensor]  # {'2': [B, h, w, C], ..., '5': ...}
VariablePair = Tuple[tf.Variable, tf.Variable]
# A module run on each target-side features dict (DeCon's target decoder: `encode`).
TargetTail = Callable[[LevelFeatures], LevelFeatures]


@dataclasses.dataclass
class Inputs:
  """A batch as the methods see it, after colour and normalisation.

  views:   the two augmented views, [B, S, S, 3] each.
  masks:   their aligned id maps, [B, S, S] int each.
  seed:    this replica's batch seed [2] (`seeds.batch_seed`): the step's draws (mask ids,
           channel dropout, DetCo's shuffle) derive from it (`seed_for`).
  patches: the patches of each view's local crop, [B, N, p, p, 3] each, for a method that
           declares local views (DetCo's jigsaw; `MethodBlock.view_recipe`), or None.
  boxes:   where each view was cut from its source image, [B, 4] (y0, x0, y1, x1) in fractions
           of the source's height and width (`geometry.window_box`).
  flips:   whether each view was flipped left-right after the cut, [B] bool.
  extras:  every other key of the batch, by name: what a method's own input recipe adds.
  """
  views: Tuple[tf.Tensor, tf.Tensor]
  masks: Tuple[tf.Tensor, tf.Tensor]
  seed: tf.Tensor
  patches: Optional[Tuple[tf.Tensor, tf.Tensor]] = None
  boxes: Optional[Tuple[tf.Tensor, tf.Tensor]] = None
  flips: Optional[Tuple[tf.Tensor, tf.Tensor]] = None
  extras: Dict[str, tf.Tensor] = dataclasses.field(default_factory=dict)

  # Keys of the batch that have a field of their own (the rest are `extras`).
  FIELD_KEYS = ('view', 'mask', 'patches', 'box', 'flip')
  BOOKKEEPING_KEYS = ('position', 'pipeline')

  @classmethod
  def from_batch(cls, batch: Dict[str, tf.Tensor], seed: tf.Tensor) -> 'Inputs':
    def pair(key):
      return (batch[f'{key}1'], batch[f'{key}2']) if f'{key}1' in batch else None

    own = {f'{key}{i}' for key in cls.FIELD_KEYS for i in (1, 2)} | set(cls.BOOKKEEPING_KEYS)
    return cls(views=pair('view'), masks=pair('mask'), seed=seed, patches=pair('patches'),
               boxes=pair('box'), flips=pair('flip'),
               extras={key: value for key, value in batch.items() if key not in own})

  def seed_for(self, *keys) -> tf.Tensor:
    """The stateless seed of one draw of the step, keyed by what it is for."""
    return seeds.derive(self.seed, *keys)


@dataclasses.dataclass
class Branch:
  """One network's level features: of each view it encodes, and of each view's patches."""
  views: List[LevelFeatures]
  patches: Optional[List[LevelFeatures]] = None

  def map(self, fn: Callable[[LevelFeatures], LevelFeatures]) -> 'Branch':
    """The same branch with `fn` applied to every features dict (DeCon's decoder)."""
    return Branch(views=[fn(f) for f in self.views],
                  patches=None if self.patches is None else [fn(f) for f in self.patches])


@dataclasses.dataclass
class Encoded:
  """What `features` returns: the online network's branch and the target network's (None for
  methods without one, DetCon_S and SimCLR); from `encode` with a target tail, also the target
  branch through that tail."""
  online: Branch
  target: Optional[Branch] = None
  target_tail: Optional[Branch] = None


@dataclasses.dataclass
class ObjectiveOutput:
  """loss: the calling replica's loss (a mean over its examples); stats: scalars to log; state:
  what the objective keeps after the optimiser step (`Objective.update_state`)."""
  loss: tf.Tensor
  stats: Dict[str, tf.Tensor]
  state: Dict[str, Any] = dataclasses.field(default_factory=dict)


class Objective(tf_keras.layers.Layer):
  """A method's heads and loss. Called as `objective(encoded, inputs, training=...)`."""

  def call(self, encoded: Encoded, inputs: Inputs, training: bool = True) -> ObjectiveOutput:
    raise NotImplementedError

  def ema_pairs(self) -> List[VariablePair]:
    """(target, online) variables of heads that follow by EMA (BYOL's target projector)."""
    return []

  def update_state(self, state: Dict[str, Any]) -> None:
    """Keeps `ObjectiveOutput.state` after the optimiser step (DetCo: enqueue keys)."""
    del state


def weight_pairs(target: tf_keras.layers.Layer,
                 online: tf_keras.layers.Layer) -> List[VariablePair]:
  """(target, online) pairs of the online layer's trainable weights, matched by position in two
  identically built layers."""
  return [(t, o) for t, o in zip(target.weights, online.weights) if o.trainable]


def ema_update(pairs: Sequence[VariablePair], decay: tf.Tensor) -> None:
  """target ← decay · target + (1 − decay) · online, on every replica's copy (from any context)."""

  def blend(target, online, decay_):
    return target.assign(decay_ * target + (1.0 - decay_) * tf.cast(online, target.dtype))

  replicas.update_everywhere([(target, blend, (online, decay)) for target, online in pairs])


def mirror_targets(pairs: Sequence[VariablePair]) -> None:
  """Initialises targets as copies of the online weights."""
  for target, online in pairs:
    target.assign(online)


def require_levels(levels: Sequence[str], channels: Dict[str, int]) -> None:
  """A clear error when an objective asks for levels its features do not have."""
  missing = sorted(set(levels) - set(channels))
  if missing:
    raise ValueError(f'levels {missing} not among the features {sorted(channels)}')


class InputPreparation:
  """How a host batch becomes `Inputs` (the train step's first stage), composed from the data
  config and the method's view recipe (`MethodBlock.view_recipe`): colour and normalisation when
  they run on the accelerator (`color_on_device`), patches cut from the recipe's local views, and
  the step's seed (`seeds.batch_seed`)."""

  def __init__(self, data_cfg: data_config.DataConfig,
               local_views: Optional[data_config.LocalViewConfig] = None):
    self.data_cfg = data_cfg
    self.local_views = local_views

  def __call__(self, batch: Dict[str, tf.Tensor]) -> Inputs:
    if self.data_cfg.color_on_device:
      batch = color.finalize_batch(batch, self.data_cfg, self.local_views)
    return Inputs.from_batch(batch, seeds.batch_seed(seeds.base_seed(self.data_cfg), batch,
                                                     seeds.STEP))


class _Contract(abc.ABCMeta):
  """Checks the contract once a method's constructor has run."""

  def __call__(cls, *args, **kwargs):
    model = super().__call__(*args, **kwargs)
    model.check_contract()
    return model


class PretrainModel(tf_keras.Model, metaclass=_Contract):
  """Base of the pretraining methods; `model.fit` drives `train_step` (see the module doc)."""

  # Whether the target side runs on a cross-replica shuffle in per-replica BN groups (MoCo's
  # shuffling BN): a target tail (`encode`) then runs inside them, so its BN is per group too.
  shuffles_keys: bool = False

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    # Set by `set_training` (`registry.build_model`): how a batch becomes `Inputs`, and MoCo's
    # coupled L2 for SGD (LARS decays in the optimiser).
    self.input_preparation: Optional[InputPreparation] = None
    self.l2_weight_decay = 0.0
    # `_logs` all-reduces every value inside the step; Keras would otherwise sum the replicas'
    # (already global) values under MirroredStrategy.
    self.distribute_reduction_method = 'first'
    self.encoder: Optional[tf_keras.Model] = None
    self.objective: Optional[Objective] = None
    self.target_encoder: Optional[tf_keras.Model] = None
    # Per input pipeline, the position to read from on resume (checkpointed with the model).
    self.input_positions = tf.Variable(
        tf.zeros([seeds.MAX_INPUT_PIPELINES], tf.int64), trainable=False, name='input_positions',
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def set_training(self, input_preparation: 'InputPreparation', l2_weight_decay: float) -> None:
    """What the train step takes from outside the method: the input preparation and MoCo's
    coupled L2 weight (`PretrainTask.losses.l2_weight_decay`)."""
    self.input_preparation = input_preparation
    self.l2_weight_decay = l2_weight_decay

  # ------------------------------------------------------------------ what a method provides
  @abc.abstractmethod
  def features(self, inputs: Inputs, training: bool) -> Encoded:
    """Encodes the inputs: which network sees which view (and patches)."""

  def encode(self, inputs: Inputs, training: bool,
             target_tail: Optional[TargetTail] = None) -> Encoded:
    """`features`, and with `target_tail` (a wrapping method's module on the target side, e.g.
    DeCon's target decoder) that tail applied to every target-side features dict, in
    `Encoded.target_tail`. A method whose target side runs on a shuffle in BN groups
    (`shuffles_keys`) overrides this to run the tail inside them."""
    encoded = self.features(inputs, training)
    if target_tail is None or encoded.target is None:
      return encoded
    return dataclasses.replace(encoded, target_tail=encoded.target.map(target_tail))

  def ema_decay(self, step: tf.Tensor) -> tf.Tensor:
    """τ at `step` for the EMA of `ema_pairs()`; a method with a target network defines it."""
    raise NotImplementedError

  def ema_pairs(self) -> List[VariablePair]:
    """(target, online) variables that follow the online network by EMA."""
    pairs = [] if self.target_encoder is None else weight_pairs(self.target_encoder,
                                                                self.encoder)
    return pairs + self.objective.ema_pairs()

  @property
  def checkpoint_items(self) -> Dict[str, tf_keras.layers.Layer]:
    """The modules exported for transfer, by the name Model Garden's tasks load them under."""
    return {'backbone': self.encoder}

  def export_metadata(self) -> Dict[str, Any]:
    """Method-specific entries of the export's metadata.json."""
    return {}

  def check_contract(self) -> None:
    name = type(self).__name__
    if not isinstance(self.encoder, tf_keras.layers.Layer):
      raise TypeError(f'{name} must set self.encoder (the online encoder) in its constructor')
    if not isinstance(self.objective, Objective):
      raise TypeError(f'{name} must set self.objective to a base.Objective in its constructor')
    if self.ema_pairs() and type(self).ema_decay is PretrainModel.ema_decay:
      raise TypeError(f'{name} has a target network but does not define ema_decay(step)')

  def call(self, images, training=False):
    return self.encoder(images, training=training)

  # ------------------------------------------------------------------------- the train step
  def prepare_inputs(self, batch: Dict[str, tf.Tensor]) -> Inputs:
    if self.input_preparation is None:
      raise ValueError(f'{type(self).__name__} has no input preparation: build it with '
                       'registry.build_model, or call set_training')
    return self.input_preparation(batch)

  def record_input_positions(self, batch: Dict[str, tf.Tensor]) -> None:
    """`input_positions[p]` ← the position after the last example input pipeline p has fed,
    over all replicas: where a resumed run starts reading again (`seeds`)."""
    pipelines = replicas.gather(batch['pipeline'][:1])
    following = replicas.gather(tf.reduce_max(batch['position'], keepdims=True) + 1)

    def assign(variable, pipelines_, following_):
      return variable.assign(tf.tensor_scatter_nd_max(variable, pipelines_[:, None], following_))

    replicas.update_everywhere([(self.input_positions, assign, (pipelines, following))])

  def compute_objective(self, inputs: Inputs, training: bool) -> ObjectiveOutput:
    return self.objective(self.features(inputs, training), inputs, training=training)

  def update_state(self, state: Dict[str, Any]) -> None:
    self.objective.update_state(state)

  def optimized_variables(self) -> List[tf.Variable]:
    """Trainable variables minus the EMA targets. Targets stay `trainable` so that their BN
    uses batch statistics (Keras runs a non-trainable BN in inference mode), as BYOL's does."""
    targets = {t.ref() for t, _ in self.ema_pairs()}
    return [v for v in self.trainable_variables if v.ref() not in targets]

  def untrained_variables(self) -> List[tf.Variable]:
    """Optimised variables that the objective never reaches (no gradient, so no optimiser slot;
    DeCon-SL's P3–P5 output convolutions): what the trainer leaves out when it creates the
    optimiser's slots before the first step."""
    return []

  def initialize_targets(self) -> None:
    mirror_targets(self.ema_pairs())

  @tf.autograph.experimental.do_not_convert
  def train_step(self, batch):
    """One optimiser step on the global batch's replica share. Left to autograph, Keras would
    rewrite this step and every function it reaches (objectives, heads, queues) into graph control
    flow, once per function and process; they are plain TF ops that branch only on Python values,
    so the rewrite changes no op but costs seconds of each process's first trace. A tensor used
    as a Python bool or iterated here fails at trace time, not silently."""
    inputs = self.prepare_inputs(batch)
    _, num_replicas = replicas.replica_info()
    variables = self.optimized_variables()
    with tf.GradientTape() as tape:
      result = self.compute_objective(inputs, training=True)
      # The optimiser sums gradients over replicas: this makes it the global mean's gradient.
      scaled_loss = result.loss / num_replicas
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
    learning_rate = self._applied_learning_rate()
    decay = None
    if self.ema_pairs():
      decay = self.ema_decay(self.optimizer.iterations)
      ema_update(self.ema_pairs(), decay)
    self.update_state(result.state)
    self.record_input_positions(batch)
    return self._logs(dict(result.stats, loss=result.loss), learning_rate, decay)

  def _applied_learning_rate(self) -> tf.Tensor:
    """The learning rate the optimiser step just applied (read after it: Keras creates
    `iterations` on the first step)."""
    learning_rate = self.optimizer.learning_rate
    if callable(learning_rate):
      learning_rate = learning_rate(self.optimizer.iterations - 1)
    return tf.cast(learning_rate, tf.float32)

  def _logs(self, values: Dict[str, tf.Tensor], learning_rate: tf.Tensor,
            decay: Optional[tf.Tensor]) -> Dict[str, tf.Tensor]:
    logs = {name: replicas.mean(tf.cast(value, tf.float32)) for name, value in values.items()}
    logs['learning_rate'] = learning_rate
    if decay is not None:
      logs['tau'] = tf.cast(decay, tf.float32)
    return logs
