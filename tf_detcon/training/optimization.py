"""Optimisers: Model Garden LARS (or SGD) on the learning-rate schedule of `tf_detcon.schedules`."""

import tf_keras

from official.modeling.optimization import lars
from tf_detcon import schedules
from tf_detcon.configs import pretrain as pretrain_config


def build_optimizer(cfg: pretrain_config.OptimizationConfig, total_steps: int,
                    global_batch: int) -> tf_keras.optimizers.Optimizer:
  """LARS (trust ratio η, decay and adaptation skipped for norm parameters and biases) or SGD."""
  schedule = schedules.build_schedule(cfg, total_steps, global_batch)
  if cfg.optimizer == 'lars':
    return lars.LARS(learning_rate=schedule, momentum=cfg.momentum,
                     weight_decay_rate=cfg.weight_decay, eeta=cfg.lars_eeta,
                     exclude_from_weight_decay=list(cfg.exclude_from_weight_decay),
                     exclude_from_layer_adaptation=list(cfg.exclude_from_weight_decay))
  if cfg.optimizer == 'sgd':
    # Weight decay for SGD is added to the loss by the method (MoCo style), not here.
    return tf_keras.optimizers.legacy.SGD(learning_rate=schedule, momentum=cfg.momentum)
  raise ValueError(f"optimizer must be 'lars' or 'sgd', got {cfg.optimizer!r}")
