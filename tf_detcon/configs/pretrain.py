"""The pretraining experiment config (Model Garden `ExperimentConfig`).

An experiment is `task` (method, encoder, data, optimisation), `trainer` (steps, checkpoints) and
`runtime` (strategy, precision). The registered experiments, one factory per paper run, are in
`configs/experiments.py`; YAML files in `official_configs/pretrain/` override them, and
`configs/validation.py` checks a whole experiment in one pass before anything is built.
"""

import dataclasses
from typing import List

from official.core import config_definitions as cfg
from official.modeling import hyperparams
from official.vision.configs import backbones
from official.vision.configs import common

from tf_detcon.configs import data as data_config
from tf_detcon.configs import methods

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
  method: methods.MethodConfig = dataclasses.field(default_factory=methods.MethodConfig)
  encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
  train_data: data_config.DataConfig = dataclasses.field(default_factory=data_config.DataConfig)
  validation_data: data_config.ProbeDataConfig = dataclasses.field(
      default_factory=data_config.ProbeDataConfig)
  optimization: OptimizationConfig = dataclasses.field(default_factory=OptimizationConfig)
  log_every_steps: int = 100


@dataclasses.dataclass
class PretrainExperiment(cfg.ExperimentConfig):
  task: PretrainTask = dataclasses.field(default_factory=PretrainTask)


def steps_for_epochs(epochs: int, global_batch: int, examples: int) -> int:
  return int(epochs * examples // global_batch)
