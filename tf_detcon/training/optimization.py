"""The optimiser and learning-rate schedule of `trainer.optimizer_config`, built by Model
Garden's own `OptimizerFactory` (LARS, SGD, or any optimiser and schedule it offers)."""

import tf_keras

from official.modeling import optimization


def build_optimizer(config: optimization.OptimizationConfig) -> tf_keras.optimizers.Optimizer:
  factory = optimization.OptimizerFactory(config)
  return factory.build_optimizer(factory.build_learning_rate())
