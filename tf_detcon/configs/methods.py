"""Method configs: one block per method, chosen by a one-of (`task.method.type`).

A YAML holds only its own method's block (`method: {type: detco, detco: {...}}`), and a block set
for a method that is not the chosen one is refused at start-up (`configs.validation`). DeCon is a
method that wraps another: its `base` is itself a one-of of the methods it can wrap.

Each block checks itself against the task (`check(task, path)`), which `configs.validation`
runs before anything is built. To add a method: its config dataclass here (with its checks) and a
field for it in `MethodConfig`; its model in a module of `tf_detcon/modeling/methods/`
(docs/architecture.md walks through one).
"""

import dataclasses
from typing import Any, List, Optional

from official.modeling import hyperparams
from official.vision.configs import decoders

from tf_detcon.configs import checks
from tf_detcon.configs import data as data_config


@dataclasses.dataclass
class HeadConfig(hyperparams.Config):
  hidden_dim: int = 4096
  output_dim: int = 256


@dataclasses.dataclass
class MethodBlock(hyperparams.Config):
  """What every method's block knows of itself, so that nothing outside it switches on its type:
  its checks (against the task, and against the number of replicas once the strategy is known),
  its warnings, its CPU miniature, and the method it wraps, if any."""

  def check(self, task: Any, path: str) -> None:
    """One-line `ConfigError`s for settings that cannot work with `task`; `path` names this
    block (e.g. 'task.method.detcon')."""

  def check_replicas(self, task: Any, path: str, num_replicas: int) -> None:
    """The checks that depend on the number of replicas (run once the strategy is built)."""

  def warning(self, task: Any) -> Optional[str]:
    """A setting that works but may defeat the method with `task`, in one line; None if none."""
    return None

  def tiny(self, task: Any) -> None:
    """Shrinks this block (and what it needs of `task`) to the CPU miniature
    (`configs.experiments.tiny`)."""

  def wrapped(self) -> Optional['BaseMethodConfig']:
    """The one-of of the method this one is built around (DeCon's base), or None."""
    return None

  def view_recipe(self) -> Optional[data_config.LocalViewConfig]:
    """The local views this method needs beyond the two global views (DetCo's jigsaw patches),
    which the input pipeline then cuts and colours for it (`Inputs.patches`); None if none."""
    return None

  def miniature(self, task: Any, feature_level: str) -> None:
    """Scales this block (and what it needs of `task`) to the miniature tables' CPU setting
    (benchmarks/mini_table.py): 256 → 64 heads, and `feature_level` where the method contrasts
    one level of the encoder."""

  def one_device(self, task: Any) -> None:
    """Makes a full-size block runnable on one replica (benchmarks/bench_step.py), where a
    setting needs more than one."""


@dataclasses.dataclass
class DetConConfig(MethodBlock):
  """DetCon (Hénaff et al. 2021, §3.1). variant 'b': BYOL-based (predictor, EMA target); 's':
  SimCLR-based. loss 'contrastive': the DetCon objective (eq. 3); 'regression': BYOL's
  2 − 2·cos(q, z′) per mask, no negatives (variant 'b' only; with one global mask it is BYOL).

  global_negatives: negatives from the whole global batch (True, the paper's), or from the
  replica's own images only (DetCon Table 5 row a, "global neg" off; the release's
  `use_replicator_loss`). local_negatives: negatives from the other masks of the anchor's own
  image (True, DetCon §3.1); False is an ablation of ours, not one of the paper's.
  """
  variant: str = 'b'
  loss: str = 'contrastive'
  feature_level: str = '5'
  num_samples: int = 16
  max_mask_ids: int = 256
  temperature: float = 0.1
  local_negatives: bool = True
  global_negatives: bool = True
  projector: HeadConfig = dataclasses.field(default_factory=HeadConfig)
  predictor: HeadConfig = dataclasses.field(default_factory=HeadConfig)
  ema_tau_base: float = 0.996

  def warning(self, task: Any) -> Optional[str]:
    """A contrastive loss takes its negatives from other images (DetCon's, SimCLR's): with a
    global batch of one image it may learn nothing."""
    if task.train_data.global_batch_size == 1 and self.loss == 'contrastive':
      return ('global batch 1: the contrastive loss has no other image to take negatives from '
              '(only other masks of the same image, if any), so it may learn nothing; set '
              'task.train_data.global_batch_size to 2 or more')
    return None

  def check(self, task: Any, path: str) -> None:
    checks.one_of(self.variant, ('b', 's'), f'{path}.variant')
    checks.one_of(self.loss, ('contrastive', 'regression'), f'{path}.loss')
    checks.require(self.loss != 'regression' or self.variant == 'b',
                   f"{path}.loss 'regression' (BYOL's) needs {path}.variant 'b': without a "
                   'predictor and target network it collapses')
    levels = checks.encoder_levels(task)
    if levels is not None:
      checks.require(self.feature_level in levels,
                     f'{path}.feature_level {self.feature_level!r} is not a level of the '
                     f'encoder ({", ".join(levels)})')
      stride = 2 ** int(self.feature_level)
      for name in ('view1', 'view2'):
        size = getattr(task.train_data, name).output_size
        checks.require(size % stride == 0,
                       f'task.train_data.{name}.output_size {size} is not a multiple of '
                       f'{stride}, the stride of feature level {self.feature_level} (masks are '
                       'pooled to its grid)')
    checks.require(self.num_samples >= 1,
                   f'{path}.num_samples must be >= 1, got {self.num_samples}')
    checks.require(self.max_mask_ids >= 1, f'{path}.max_mask_ids must be >= 1')
    checks.positive(self.temperature, f'{path}.temperature')
    checks.probability(self.ema_tau_base, f'{path}.ema_tau_base')
    checks.require(self.global_negatives or self.loss == 'contrastive',
                   f"{path}.global_negatives false needs {path}.loss 'contrastive': the "
                   'regression loss has no negatives')

  def tiny(self, task: Any) -> None:
    del task
    self.override(dict(num_samples=min(self.num_samples, 4),
                       projector=dict(hidden_dim=64, output_dim=32),
                       predictor=dict(hidden_dim=64, output_dim=32)))

  def miniature(self, task: Any, feature_level: str) -> None:
    del task
    self.override({'feature_level': feature_level,
                   'projector': {'hidden_dim': 256, 'output_dim': 64},
                   'predictor': {'hidden_dim': 256, 'output_dim': 64}})
    if self.num_samples > 1:
      self.num_samples = 16  # DetCon §3.1


@dataclasses.dataclass
class DetCoConfig(MethodBlock):
  """DetCo (Xie et al. 2021, §3.2; docs/design.md §4) on MoCo v2. levels ['5'] without local
  views is MoCo v2.

  The key encoder is a momentum (EMA) copy. key_bn 'shuffle' (default, as DetCo takes MoCo's
  training details, DetCo appendix §6.5): MoCo's shuffling BN, per-replica BN on a cross-replica
  permutation of the key batch. 'sync': BN synchronised across replicas; global-batch statistics
  reduce, but with a queue do not remove, the intra-batch leak that shuffling guards against.
  bn_splits: BN groups per replica for the shuffled key batch (MoCo's 8 GPUs on one device are 8
  splits). With one replica and one split there is nothing to shuffle across, so 'shuffle' needs
  bn_splits ≥ 2 there (validation refuses it otherwise).
  """
  levels: List[str] = dataclasses.field(default_factory=lambda: ['2', '3', '4', '5'])
  level_weights: List[float] = dataclasses.field(default_factory=lambda: [0.1, 0.4, 0.7, 1.0])
  local: bool = True  # l↔l and g↔l terms on the jigsaw patches of `local_views`
  local_views: data_config.LocalViewConfig = dataclasses.field(
      default_factory=data_config.LocalViewConfig)
  queue_size: int = 65536
  temperature: float = 0.2
  momentum: float = 0.999
  head_hidden_dim: int = 2048
  output_dim: int = 128
  key_bn: str = 'shuffle'
  bn_splits: int = 1

  def check(self, task: Any, path: str) -> None:
    data = task.train_data
    checks.require(len(self.levels) == len(self.level_weights) and self.levels,
                   f'{path}.levels {self.levels} and level_weights {self.level_weights} differ '
                   'in length')
    levels = checks.encoder_levels(task)
    if levels is not None:
      missing = sorted(set(self.levels) - set(levels))
      checks.require(not missing, f'{path}.levels {missing} are not levels of the encoder '
                     f'({", ".join(levels)})')
    checks.require(self.queue_size >= 1 and self.queue_size % data.global_batch_size == 0,
                   f'{path}.queue_size {self.queue_size} is not a multiple of the global batch '
                   f'(task.train_data.global_batch_size {data.global_batch_size})')
    checks.one_of(self.key_bn, ('sync', 'shuffle'), f'{path}.key_bn')
    checks.require(self.bn_splits >= 1 and data.global_batch_size % self.bn_splits == 0,
                   f'{path}.bn_splits {self.bn_splits} does not divide the global batch '
                   f'(task.train_data.global_batch_size {data.global_batch_size})')
    checks.require(self.bn_splits == 1 or self.key_bn == 'shuffle',
                   f'{path}.bn_splits {self.bn_splits} needs key_bn \'shuffle\'')
    if self.local:
      self.local_views.check(f'{path}.local_views')
    else:
      checks.require(self.local_views == data_config.LocalViewConfig(),
                     f'{path}.local_views is set but {path}.local is false: remove it')
    checks.positive(self.temperature, f'{path}.temperature')
    checks.probability(self.momentum, f'{path}.momentum')

  def check_replicas(self, task: Any, path: str, num_replicas: int) -> None:
    batch = task.train_data.global_batch_size
    checks.require(batch % (num_replicas * self.bn_splits) == 0,
                   f'{path}.bn_splits {self.bn_splits} does not divide the per-replica batch '
                   f'{batch // num_replicas}')
    checks.require(self.key_bn != 'shuffle' or num_replicas * self.bn_splits > 1,
                   f"{path}.key_bn 'shuffle' on one replica needs {path}.bn_splits >= 2 (BN "
                   "groups to shuffle the keys across; MoCo's 8 GPUs on one device are 8), or "
                   "key_bn 'sync'")

  def tiny(self, task: Any) -> None:
    # Two BN groups for the shuffled keys: on one device there is nothing else to shuffle across.
    del task
    self.override(dict(queue_size=16, head_hidden_dim=64, output_dim=32, bn_splits=2))
    if self.local:
      self.local_views.override(dict(output_size=48, grid_size=3, patch_size=16))

  def view_recipe(self) -> Optional[data_config.LocalViewConfig]:
    return self.local_views if self.local else None

  def miniature(self, task: Any, feature_level: str) -> None:
    # The papers' levels and weights: DetCo res2–res5 at (0.1, 0.4, 0.7, 1) (DetCo §6.5), MoCo v2
    # res5; their global heads pool each level, so res5's 3×3 grid at 96 px serves.
    del feature_level
    self.override({'queue_size': task.train_data.global_batch_size * 32,
                   'head_hidden_dim': 256, 'output_dim': 64})
    if self.local:
      self.local_views.override({'output_size': 96, 'patch_size': 32})

  def one_device(self, task: Any) -> None:
    del task
    self.bn_splits = 2  # shuffling BN on one device (the tiny configs' setting)


@dataclasses.dataclass
class BaseMethodConfig(hyperparams.OneOfConfig):
  """A method that DeCon can wrap: 'detcon' or 'detco'."""
  type: str = 'detcon'
  detcon: DetConConfig = dataclasses.field(default_factory=DetConConfig)
  detco: DetCoConfig = dataclasses.field(default_factory=DetCoConfig)

  def inner(self) -> 'BaseMethodConfig':
    """The one-of of the method that computes the features and their objective: the method a
    wrapping method is built around (DeCon's base), else this one."""
    wrapped = self.get().wrapped()
    return self if wrapped is None else wrapped.inner()


# The decoder levels each DeCon variant trains (docs/design.md §5).
DECON_VARIANT_LEVELS = {'sl': ('2',), 'ml': ('2', '3', '4', '5')}


@dataclasses.dataclass
class DeConConfig(MethodBlock):
  """DeCon (Quetin et al. 2025; our adaptation, docs/design.md §5): an FPN decoder pretrained
  with the base method's own objective.

  variant 'sl': the decoder objective on P2 only; 'ml': on P2..P5 with per-level heads, averaged
  (decoder deep supervision). Loss α·L_enc + (1 − α)·L_dec. Channel dropout (whole channels,
  Dropout2d) on the FPN's skip laterals (every lateral but the top level's) where they join the
  top-down path, in pretraining only, as the authors' `FPNDecoder` does; rate 0.5, the value the
  authors' published DeCon-ML pretraining command passes (docs/paper_settings.md). The FPN is built by Model
  Garden's decoder factory exactly as the Mask R-CNN experiment builds it, so it transfers. Its
  levels are P2–P5, as the authors' pretraining FPN (no coarser level: nothing would train it).
  """
  base: BaseMethodConfig = dataclasses.field(default_factory=BaseMethodConfig)
  variant: str = 'sl'
  alpha: float = 0.5
  channel_dropout: float = 0.5
  decoder: decoders.Decoder = dataclasses.field(
      default_factory=lambda: decoders.Decoder(type='fpn', fpn=decoders.FPN(num_filters=256)))
  min_level: int = 2
  max_level: int = 5

  def check(self, task: Any, path: str) -> None:
    checks.one_of(self.variant, tuple(DECON_VARIANT_LEVELS), f'{path}.variant')
    checks.probability(self.alpha, f'{path}.alpha')
    checks.require(0.0 <= self.channel_dropout <= 1.0,
                   f'{path}.channel_dropout must be in [0, 1], got {self.channel_dropout}')
    checks.one_of(self.decoder.type, ('fpn',), f'{path}.decoder.type')
    levels = DECON_VARIANT_LEVELS[self.variant]
    checks.require(self.min_level <= int(min(levels)) and int(max(levels)) <= self.max_level,
                   f'{path}.variant {self.variant!r} uses decoder levels {list(levels)}, '
                   f'outside the FPN levels {self.min_level}..{self.max_level}')
    # The FPN adds upsampled res(i+1) to res(i): inputs must be multiples of res5's stride.
    data = task.train_data
    sizes = {'task.train_data.view1.output_size': data.view1.output_size,
             'task.train_data.view2.output_size': data.view2.output_size}
    recipe = self.view_recipe()
    if recipe is not None:
      sizes[f'{path}.base.{self.base.type}.local_views.patch_size'] = recipe.patch_size
    for name, size in sizes.items():
      checks.require(size % 32 == 0, f'DeCon needs {name} to be a multiple of 32, got {size}')
    base = checks.one_of_config(self.base, f'{path}.base')
    base.check(task, f'{path}.base.{self.base.type}')

  def check_replicas(self, task: Any, path: str, num_replicas: int) -> None:
    self.base.get().check_replicas(task, f'{path}.base.{self.base.type}', num_replicas)

  def tiny(self, task: Any) -> None:
    self.decoder.fpn.num_filters = 32
    self.base.get().tiny(task)
    recipe = self.view_recipe()
    if recipe is not None:  # the FPN needs patches that are multiples of 32 (res5's stride)
      recipe.override(dict(output_size=96, patch_size=32))

  def wrapped(self) -> BaseMethodConfig:
    return self.base

  def view_recipe(self) -> Optional[data_config.LocalViewConfig]:
    return self.base.get().view_recipe()

  def miniature(self, task: Any, feature_level: str) -> None:
    self.base.get().miniature(task, feature_level)  # the decoder keeps its tiny size

  def one_device(self, task: Any) -> None:
    self.base.get().one_device(task)


@dataclasses.dataclass
class MethodConfig(BaseMethodConfig):
  """The pretraining method: 'detcon' (DetCon_B/S, BYOL, SimCLR), 'detco' (DetCo, MoCo v2) or
  'decon' (DeCon around one of them)."""
  decon: DeConConfig = dataclasses.field(default_factory=DeConConfig)
