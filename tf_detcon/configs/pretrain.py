"""The pretraining experiment config (Model Garden `ExperimentConfig`).

An experiment is `task` (method, encoder, data, losses), `trainer` (steps, checkpoints, and the
optimiser in Model Garden's `trainer.optimizer_config`) and `runtime` (strategy, precision). The registered experiments, one factory per paper run, are in
`configs/experiments.py`; YAML files in `official_configs/pretrain/` override them, and
`configs/validation.py` checks a whole experiment in one pass before anything is built.
"""

import dataclasses
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
class PretrainLosses(hyperparams.Config):
  """l2_weight_decay: MoCo's coupled L2, wd/2·Σ‖w‖² added to the loss over the variables it
  trains (its SGD's weight decay), as Model Garden's vision tasks' `losses.l2_weight_decay`.
  LARS decays weights itself (`trainer.optimizer_config.optimizer.lars.weight_decay_rate`)."""
  l2_weight_decay: float = 0.0


@dataclasses.dataclass
class PretrainTask(cfg.TaskConfig):
  method: methods.MethodConfig = dataclasses.field(default_factory=methods.MethodConfig)
  encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
  train_data: data_config.DataConfig = dataclasses.field(default_factory=data_config.DataConfig)
  validation_data: data_config.ProbeDataConfig = dataclasses.field(
      default_factory=data_config.ProbeDataConfig)
  losses: PretrainLosses = dataclasses.field(default_factory=PretrainLosses)
  log_every_steps: int = 100
  # Model Garden's switch for image summaries: pictures of the views every summary_interval.
  allow_image_summary: bool = True


@dataclasses.dataclass
class PretrainExperiment(cfg.ExperimentConfig):
  task: PretrainTask = dataclasses.field(default_factory=PretrainTask)


def steps_for_epochs(epochs: int, global_batch: int, examples: int) -> int:
  return int(epochs * examples // global_batch)
