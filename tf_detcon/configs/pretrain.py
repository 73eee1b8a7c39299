"""Pretraining experiment configs (Model Garden `ExperimentConfig`) and their registry.

An experiment is `task` (method, encoder, data, optimisation), `trainer` (steps, checkpoints) and
`runtime` (strategy, precision). Registered names are what `--experiment` takes; YAML files in
`official_configs/pretrain/` override them.
"""

import dataclasses
from typing import List, Optional

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import hyperparams
from official.vision.configs import backbones
from official.vision.configs import common
from official.vision.configs import decoders

from tf_detcon.configs import data as data_config

IMAGENET_TRAIN_EXAMPLES = 1281167
COCO_TRAIN_EXAMPLES = 118287


@dataclasses.dataclass
class EncoderConfig(hyperparams.Config):
  backbone: backbones.Backbone = dataclasses.field(default_factory=lambda: backbones.Backbone(
      type='resnet', resnet=backbones.ResNet(model_id=50)))
  norm_activation: common.NormActivation = dataclasses.field(
      default_factory=lambda: common.NormActivation(use_sync_bn=True, norm_momentum=0.9,
                                                    norm_epsilon=1e-5))


@dataclasses.dataclass
class HeadConfig(hyperparams.Config):
  hidden_dim: int = 4096
  output_dim: int = 256


@dataclasses.dataclass
class DetConConfig(hyperparams.Config):
  """DetCon (Hénaff et al. 2021, §3.1). variant 'b': BYOL-based (predictor, EMA target); 's':
  SimCLR-based. loss 'contrastive': the DetCon objective (eq. 3); 'regression': BYOL's
  2 − 2·cos(q, z′) per mask, no negatives (variant 'b' only; with one global mask it is BYOL)."""
  variant: str = 'b'
  loss: str = 'contrastive'
  feature_level: str = '5'
  num_samples: int = 16
  max_mask_ids: int = 256
  temperature: float = 0.1
  local_negatives: bool = True
  projector: HeadConfig = dataclasses.field(default_factory=HeadConfig)
  predictor: HeadConfig = dataclasses.field(default_factory=HeadConfig)
  ema_tau_base: float = 0.996


@dataclasses.dataclass
class DetCoConfig(hyperparams.Config):
  """DetCo (Xie et al. 2021, §3.2; docs/design.md §4) on MoCo v2. levels ['5'] without local
  views is MoCo v2.

  The key encoder is a momentum (EMA) copy. key_bn 'shuffle' (default, as DetCo takes MoCo's
  training details, DetCo appendix §6.5): MoCo's shuffling BN, per-replica BN on a cross-replica
  permutation of the key batch. 'sync': BN synchronised across replicas; global-batch statistics
  reduce, but with a queue do not remove, the intra-batch leak that shuffling guards against.
  """
  levels: List[str] = dataclasses.field(default_factory=lambda: ['2', '3', '4', '5'])
  level_weights: List[float] = dataclasses.field(default_factory=lambda: [0.1, 0.4, 0.7, 1.0])
  local: bool = True  # l↔l and g↔l terms on the jigsaw patches
  queue_size: int = 65536
  temperature: float = 0.2
  momentum: float = 0.999
  head_hidden_dim: int = 2048
  output_dim: int = 128
  key_bn: str = 'shuffle'


@dataclasses.dataclass
class DeConConfig(hyperparams.Config):
  """DeCon (Quetin et al. 2025; our adaptation, docs/design.md §5): an FPN decoder pretrained
  with the base method's own objective.

  variant 'sl': the decoder objective on P2 only; 'ml': on P2..P5 with per-level heads, averaged
  (decoder deep supervision). Loss α·L_enc + (1 − α)·L_dec. Channel dropout (whole channels) on
  the encoder features entering the decoder, in pretraining only. The FPN is built by Model
  Garden's decoder factory exactly as the Mask R-CNN experiment builds it, so it transfers.
  """
  base_method: str = 'detcon'  # 'detcon' or 'detco'
  variant: str = 'sl'
  alpha: float = 0.5
  channel_dropout: float = 0.1
  decoder: decoders.Decoder = dataclasses.field(
      default_factory=lambda: decoders.Decoder(type='fpn', fpn=decoders.FPN(num_filters=256)))
  min_level: int = 2
  max_level: int = 6


@dataclasses.dataclass
class OptimizationConfig(hyperparams.Config):
  """lr = base_learning_rate · global_batch / 256, linear warmup, then cosine (or COCO's
  piecewise ÷10 at 96% and 98%). Norm parameters and biases: no decay, no LARS adaptation."""
  optimizer: str = 'lars'  # 'lars' or 'sgd'
  base_learning_rate: float = 0.2
  momentum: float = 0.9
  weight_decay: float = 1.5e-6
  lars_eeta: float = 0.001
  schedule: str = 'cosine'  # 'cosine' or 'piecewise_coco'
  warmup_fraction: float = 0.01
  warmup_epochs: float = 0.0  # > 0 takes precedence over warmup_fraction
  examples_per_epoch: int = IMAGENET_TRAIN_EXAMPLES
  # Regexes on variable names (Model Garden LARS uses re.search): every BN gamma/beta (ResNet's
  # batch_normalization*, the FPN's norm_*, the heads' norm) and every bias. Under a multi-replica
  # strategy LARS is handed each replica's component variable, named '.../gamma/replica_1:0'.
  exclude_from_weight_decay: List[str] = dataclasses.field(
      default_factory=lambda: [r'(^|/)(gamma|beta|bias)(/replica_\d+)?(:\d+)?$'])


def coupled_weight_decay(cfg: OptimizationConfig) -> float:
  """MoCo's coupled L2, wd/2·Σ‖w‖², that an SGD-trained model adds to its loss (LARS decays the
  weights itself): the weight decay for SGD, 0 for LARS."""
  return cfg.weight_decay if cfg.optimizer == 'sgd' else 0.0


@dataclasses.dataclass
class PretrainTask(cfg.TaskConfig):
  method: str = 'detcon'
  encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
  detcon: DetConConfig = dataclasses.field(default_factory=DetConConfig)
  detco: DetCoConfig = dataclasses.field(default_factory=DetCoConfig)
  decon: DeConConfig = dataclasses.field(default_factory=DeConConfig)
  train_data: data_config.DataConfig = dataclasses.field(default_factory=data_config.DataConfig)
  optimization: OptimizationConfig = dataclasses.field(default_factory=OptimizationConfig)
  log_every_steps: int = 100


@dataclasses.dataclass
class PretrainExperiment(cfg.ExperimentConfig):
  task: PretrainTask = dataclasses.field(default_factory=PretrainTask)


def steps_for_epochs(epochs: int, global_batch: int, examples: int) -> int:
  return int(epochs * examples // global_batch)


def _experiment(task: PretrainTask, train_steps: int, steps_per_loop: int = 1000,
                checkpoint_interval: int = 5000, distribution: str = 'tpu',
                precision: str = 'bfloat16') -> PretrainExperiment:
  return PretrainExperiment(
      task=task,
      trainer=cfg.TrainerConfig(train_steps=train_steps, steps_per_loop=steps_per_loop,
                                checkpoint_interval=checkpoint_interval,
                                summary_interval=steps_per_loop, max_to_keep=3),
      runtime=cfg.RuntimeConfig(distribution_strategy=distribution,
                                mixed_precision_dtype=precision),
      restrictions=['task.train_data.global_batch_size > 0'])


def detcon_task(variant: str, epochs: int, dataset: str = 'imagenet',
                masks: Optional[data_config.MaskConfig] = None,
                batch: int = 4096) -> PretrainTask:
  """DetCon_B / DetCon_S with the paper's settings (DetCon §3.1, A.1–A.3)."""
  views = data_config.byol_views() if variant == 'b' else data_config.simclr_views()
  data = data_config.DataConfig(global_batch_size=batch, masks=masks or
                                data_config.MaskConfig(), **views)
  if variant == 'b':
    # DetCon A.2/A.3: DetCon_B takes BYOL's settings; 1000 epochs: lr 0.2, wd 1.5e-6, τ0 0.996;
    # 300 epochs: DetCon_S's lr 0.3 and wd 1e-6, τ0 0.99.
    detcon = DetConConfig(variant='b', projector=HeadConfig(hidden_dim=4096, output_dim=256),
                          predictor=HeadConfig(hidden_dim=4096, output_dim=256),
                          ema_tau_base=0.996 if epochs >= 1000 else 0.99)
    optimization = OptimizationConfig(base_learning_rate=0.2 if epochs >= 1000 else 0.3,
                                      weight_decay=1.5e-6 if epochs >= 1000 else 1e-6)
  else:
    detcon = DetConConfig(variant='s', projector=HeadConfig(hidden_dim=2048, output_dim=128))
    optimization = OptimizationConfig(base_learning_rate=0.3, weight_decay=1e-6)
  optimization.warmup_epochs = 10  # BYOL/DetCon: 10 epochs of linear warmup
  if dataset == 'coco':
    optimization.schedule = 'piecewise_coco'
    optimization.examples_per_epoch = COCO_TRAIN_EXAMPLES
  return PretrainTask(method='detcon', detcon=detcon, train_data=data,
                      optimization=optimization)


GLOBAL_MASK = data_config.MaskConfig(kind='grid', grid_size=1)


def as_baseline(task: PretrainTask) -> PretrainTask:
  """The method DetCon builds on (§3.1): one global mask and one latent per view (DetCon
  Table 4, '#latents 1'). DetCon_B becomes BYOL with BYOL's regression loss, DetCon_S SimCLR."""
  task.train_data.masks = GLOBAL_MASK.replace()
  task.detcon.num_samples = 1
  if task.detcon.variant == 'b':
    task.detcon.loss = 'regression'
  return task


def global_contrastive(task: PretrainTask) -> PretrainTask:
  """DetCon_B's contrastive loss on one global mask: BYOL's architecture, not its loss."""
  task.train_data.masks = GLOBAL_MASK.replace()
  return task


def _register_detcon(name: str, variant: str, epochs: int, dataset: str = 'imagenet',
                     masks: Optional[data_config.MaskConfig] = None, derive=None) -> None:
  examples = IMAGENET_TRAIN_EXAMPLES if dataset == 'imagenet' else COCO_TRAIN_EXAMPLES

  @exp_factory.register_config_factory(name)
  def factory() -> PretrainExperiment:
    task = detcon_task(variant, epochs, dataset, masks)
    if derive is not None:
      task = derive(task)
    return _experiment(task, steps_for_epochs(epochs, 4096, examples))

  del factory


for _epochs in (300, 1000):
  _register_detcon(f'detcon_b_imagenet_{_epochs}ep', 'b', _epochs)
  _register_detcon(f'detcon_s_imagenet_{_epochs}ep', 's', _epochs)
  _register_detcon(f'byol_imagenet_{_epochs}ep', 'b', _epochs, derive=as_baseline)
  _register_detcon(f'simclr_imagenet_{_epochs}ep', 's', _epochs, derive=as_baseline)
  _register_detcon(f'detcon_b_global_imagenet_{_epochs}ep', 'b', _epochs,
                   derive=global_contrastive)
_register_detcon('detcon_b_imagenet', 'b', 1000)
_register_detcon('detcon_s_imagenet', 's', 1000)
_register_detcon('byol_imagenet', 'b', 1000, derive=as_baseline)
_register_detcon('simclr_imagenet', 's', 1000, derive=as_baseline)
_register_detcon('detcon_b_coco', 'b', 1000, 'coco')
_register_detcon('detcon_s_coco', 's', 1000, 'coco')
_register_detcon('detcon_b_coco_grid', 'b', 1000, 'coco',
                 masks=data_config.MaskConfig(kind='grid', grid_size=5))


# ----------------------------------------------------------------------------- tiny, for CPU

TINY_IMAGE_SIZE = 64
TINY_BATCH = 4


def tiny_encoder() -> EncoderConfig:
  """ResNet-10 at a quarter width: channels 16/32/64/128, a few hundred thousand weights."""
  return EncoderConfig(backbone=backbones.Backbone(
      type='resnet', resnet=backbones.ResNet(model_id=10, depth_multiplier=0.25)))


def tiny_detcon_task(variant: str, masks: Optional[data_config.MaskConfig] = None,
                     derive=None) -> PretrainTask:
  task = detcon_task(variant, epochs=1000, masks=masks, batch=TINY_BATCH)
  task.encoder = tiny_encoder()
  views = (data_config.byol_views if variant == 'b' else data_config.simclr_views)(
      TINY_IMAGE_SIZE)
  task.train_data.override(dict(shuffle_buffer_size=32, cycle_length=2, **{
      k: v.as_dict() for k, v in views.items()}))
  task.detcon.projector = HeadConfig(hidden_dim=64, output_dim=32)
  task.detcon.predictor = HeadConfig(hidden_dim=64, output_dim=32)
  task.detcon.num_samples = 4
  if derive is not None:
    task = derive(task)
  task.optimization.warmup_epochs = 0
  task.optimization.warmup_fraction = 0.1
  task.optimization.examples_per_epoch = 18
  task.log_every_steps = 5
  return task


def _register_tiny(name: str, variant: str, derive=None) -> None:
  @exp_factory.register_config_factory(name)
  def factory() -> PretrainExperiment:
    return _experiment(tiny_detcon_task(variant, derive=derive), train_steps=20,
                       steps_per_loop=5, checkpoint_interval=10, distribution='mirrored',
                       precision='float32')

  del factory


_register_tiny('detcon_b_tiny', 'b')
_register_tiny('detcon_s_tiny', 's')
_register_tiny('byol_tiny', 'b', as_baseline)
_register_tiny('simclr_tiny', 's', as_baseline)
_register_tiny('detcon_b_global_tiny', 'b', global_contrastive)


# ------------------------------------------------------------------------------------- DetCo

DETCO_LEARNING_RATE = 0.06  # DetCo §6.5: "The learning rate for pre-training is 0.06"
MOCOV2_LEARNING_RATE = 0.03  # MoCo v2 (Chen et al. 2020)


def detco_task(local: bool = True, levels=('2', '3', '4', '5'),
               weights=(0.1, 0.4, 0.7, 1.0), batch: int = 256,
               base_learning_rate: float = DETCO_LEARNING_RATE) -> PretrainTask:
  """DetCo (Xie et al. 2021, §3.2, §3.3, appendix §6.5), or MoCo v2 (Chen et al. 2020) with
  local=False, levels=('5',), weights=(1.0,)."""
  data = data_config.DataConfig(global_batch_size=batch, masks=GLOBAL_MASK,
                                local_views=data_config.LocalViewConfig(enabled=local),
                                **data_config.mocov2_views())
  # Cosine decay, SGD momentum 0.9 and weight decay 1e-4: MoCo's, which DetCo takes (§6.5).
  return PretrainTask(
      method='detco', train_data=data,
      detco=DetCoConfig(levels=list(levels), level_weights=list(weights), local=local),
      optimization=OptimizationConfig(optimizer='sgd', base_learning_rate=base_learning_rate,
                                      momentum=0.9, weight_decay=1e-4, warmup_fraction=0.0))


def _register_detco(name: str, local: bool, levels, weights, learning_rate: float) -> None:
  @exp_factory.register_config_factory(name)
  def factory() -> PretrainExperiment:
    task = detco_task(local, levels, weights, base_learning_rate=learning_rate)
    return _experiment(task, steps_for_epochs(200, 256, IMAGENET_TRAIN_EXAMPLES),
                       distribution='tpu', precision='bfloat16')

  del factory


_register_detco('detco_imagenet_200ep', True, ('2', '3', '4', '5'), (0.1, 0.4, 0.7, 1.0),
                DETCO_LEARNING_RATE)
_register_detco('mocov2_imagenet_200ep', False, ('5',), (1.0,), MOCOV2_LEARNING_RATE)


def tiny_detco_task(local: bool, levels, weights,
                    learning_rate: float = DETCO_LEARNING_RATE) -> PretrainTask:
  task = detco_task(local, levels, weights, batch=TINY_BATCH, base_learning_rate=learning_rate)
  task.encoder = tiny_encoder()
  task.train_data.override(dict(
      shuffle_buffer_size=32, cycle_length=2,
      local_views=dict(output_size=48, grid_size=3, patch_size=16),
      **{k: v.as_dict() for k, v in data_config.mocov2_views(TINY_IMAGE_SIZE).items()}))
  task.detco.override(dict(queue_size=16, head_hidden_dim=64, output_dim=32))
  task.optimization.examples_per_epoch = 18
  task.log_every_steps = 5
  return task


def _register_tiny_detco(name: str, local: bool, levels, weights, learning_rate: float) -> None:
  @exp_factory.register_config_factory(name)
  def factory() -> PretrainExperiment:
    return _experiment(tiny_detco_task(local, levels, weights, learning_rate), train_steps=20,
                       steps_per_loop=5, checkpoint_interval=10, distribution='mirrored',
                       precision='float32')

  del factory


_register_tiny_detco('detco_tiny', True, ('2', '3', '4', '5'), (0.1, 0.4, 0.7, 1.0),
                     DETCO_LEARNING_RATE)
_register_tiny_detco('mocov2_tiny', False, ('5',), (1.0,), MOCOV2_LEARNING_RATE)


# ------------------------------------------------------------------------------------- DeCon

def decon_task(base: PretrainTask, base_method: str, variant: str) -> PretrainTask:
  """DeCon-SL / DeCon-ML on a base method's task: the same data, encoder and optimiser."""
  task = base.replace(method='decon')
  task.decon = DeConConfig(base_method=base_method, variant=variant)
  return task


def _register_decon(name: str, variant: str, base_factory, base_method: str,
                    tiny: bool = False) -> None:
  @exp_factory.register_config_factory(name)
  def factory() -> PretrainExperiment:
    experiment = base_factory()
    experiment.task = decon_task(experiment.task, base_method, variant)
    if tiny:
      experiment.task.decon.decoder.fpn.num_filters = 32
      # The FPN's top-down path needs inputs in multiples of 32 px (res5's stride).
      experiment.task.train_data.local_views.override(dict(output_size=96, patch_size=32))
    return experiment

  del factory


for _variant in ('sl', 'ml'):
  for _base in ('detcon_b', 'detcon_s'):
    for _data in ('coco', 'imagenet'):
      _register_decon(f'decon_{_variant}_{_base}_{_data}', _variant,
                      lambda n=f'{_base}_{_data}': exp_factory.get_exp_config(n), 'detcon')
    _register_decon(f'decon_{_variant}_{_base}_tiny', _variant,
                    lambda n=f'{_base}_tiny': exp_factory.get_exp_config(n), 'detcon', tiny=True)
  _register_decon(f'decon_{_variant}_detco_imagenet_200ep', _variant,
                  lambda: exp_factory.get_exp_config('detco_imagenet_200ep'), 'detco')
  _register_decon(f'decon_{_variant}_detco_tiny', _variant,
                  lambda: exp_factory.get_exp_config('detco_tiny'), 'detco', tiny=True)
