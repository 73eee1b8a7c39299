"""Tests for the optimisation: Model Garden's factory from trainer.optimizer_config (every
experiment's schedule against its closed form), our LARS exclusions, and a Model Garden user's
optimizer YAML working unchanged."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.core import exp_factory
from official.modeling import hyperparams
from official.vision.modeling.decoders import fpn
from tests.conftest import tiny_params
from tests.test_configs import EXPERIMENTS
from tf_detcon.configs import optimization as optimization_config
from tf_detcon.modeling import registry
from tf_detcon import registry_imports  # pylint: disable=unused-import  (registers the methods)
from tf_detcon.training import trainer


def _closed_form(params, step):
  """The papers' schedule: linear warmup from 0, then cosine to 0 (or ÷10 at 96% and 98%)."""
  config = params.trainer.optimizer_config
  total = params.trainer.train_steps
  warmup = config.warmup.linear.warmup_steps if config.warmup.type else 0
  peak = optimization_config.peak_learning_rate(config)
  if step < warmup:
    return peak * step / warmup
  if config.learning_rate.type == 'stepwise':
    return peak * (1.0 if step <= 0.96 * total else 0.1 if step <= 0.98 * total else 0.01)
  return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_every_experiments_learning_rate_follows_its_closed_form(name):
  params = exp_factory.get_exp_config(name)
  schedule = trainer.build_optimizer(params.trainer.optimizer_config).learning_rate
  total = params.trainer.train_steps
  config = params.trainer.optimizer_config
  warmup = config.warmup.linear.warmup_steps if config.warmup.type else 0
  for step in sorted({0, warmup, total // 2, total}):
    np.testing.assert_allclose(float(schedule(step)), _closed_form(params, step), rtol=1e-4,
                               atol=1e-7, err_msg=f'{name} at step {step}')


def test_the_peak_is_the_base_rate_times_batch_over_256():
  detcon_b = exp_factory.get_exp_config('detcon_b_imagenet_1000ep')
  assert optimization_config.peak_learning_rate(detcon_b.trainer.optimizer_config) == (
      0.2 * 4096 / 256)
  detco = exp_factory.get_exp_config('detco_imagenet_200ep')
  assert optimization_config.peak_learning_rate(detco.trainer.optimizer_config) == (
      pytest.approx(0.06))
  assert detco.task.losses.l2_weight_decay == 1e-4


def test_lars_excludes_every_norm_parameter_and_bias_by_name():
  params = tiny_params('detcon_b_tiny')
  model = registry.build_model(params.task, 10)
  # An FPN built as Model Garden's Mask R-CNN builds it: its BN layers are named norm_*.
  decoder = fpn.FPN(input_specs=model.encoder.output_specs, min_level=2, max_level=6,
                    use_sync_bn=True)
  optimizer = trainer.build_optimizer(params.trainer.optimizer_config)
  variables = model.variables + decoder.variables
  norm_names = [v.name for v in decoder.variables if 'norm' in v.name]
  assert norm_names and all(not n.startswith('batch_normalization') for n in norm_names)
  checked = 0
  for variable in variables:
    name = variable.name
    excluded = name.split('/')[-1].split(':')[0] in ('gamma', 'beta', 'bias')
    # Under MirroredStrategy (and TPUStrategy) LARS sees each replica's component variable.
    for copy in (name, name.replace(':0', '/replica_1:0'), name.replace(':0', '/replica_13:0')):
      assert optimizer._use_weight_decay(copy) != excluded, copy  # pylint: disable=protected-access
      assert optimizer._do_layer_adaptation(copy) != excluded, copy  # pylint: disable=protected-access
    checked += excluded
  assert checked > 20  # ResNet BN, head BN, head/FPN biases were all seen


def test_lars_weight_decay_is_applied_to_kernels_only():
  config = optimization_config.lars(1.0, total_steps=10**6, warmup_steps=0, weight_decay=0.5,
                                    momentum=0.0, eeta=1.0)
  optimizer = trainer.build_optimizer(config)
  dense = tf_keras.layers.Dense(2, bias_initializer='ones')
  dense.build((None, 2))
  before = [v.numpy().copy() for v in dense.variables]
  optimizer.apply_gradients(zip([tf.zeros_like(v) for v in dense.variables], dense.variables))
  kernel, bias = (v.numpy() for v in dense.variables)
  assert not np.allclose(kernel, before[0])  # decayed
  np.testing.assert_array_equal(bias, before[1])  # zero gradient, no decay


def test_a_model_garden_optimizer_yaml_works_unchanged(tmp_path, embedded_files):
  """Mask R-CNN's own optimizer config (SGD, stepwise, linear warmup), as a YAML a Model Garden
  user has, drives pretraining: the learning rates applied are its schedule's."""
  del embedded_files
  optimizer_config = exp_factory.get_exp_config('maskrcnn_resnetfpn_coco').trainer.optimizer_config
  optimizer_config.override({'learning_rate': {'stepwise': {'boundaries': [2, 3],
                                                            'values': [0.04, 0.02, 0.01]}},
                             'warmup': {'linear': {'warmup_steps': 1}}})
  path = str(tmp_path / 'optimizer.yaml')
  hyperparams.save_params_dict_to_yaml(
      hyperparams.ParamsDict({'trainer': {'optimizer_config': optimizer_config.as_dict()}}), path)
  params = hyperparams.override_params_dict(tiny_params('detcon_s_tiny', train_steps=4,
                                                        steps_per_loop=1), path, is_strict=True)
  run = trainer.Run(params, str(tmp_path / 'run'))
  assert isinstance(run.optimizer, tf_keras.optimizers.legacy.SGD)
  rates = []

  class Record(tf_keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      rates.append(logs['learning_rate'])

  run.model.fit(run.dataset(), epochs=1, steps_per_epoch=4, verbose=0, callbacks=[Record()])
  np.testing.assert_allclose(rates, [0.0067, 0.04, 0.04, 0.02], rtol=1e-3)
  assert os.path.exists(str(tmp_path / 'optimizer.yaml'))


def test_every_cosine_schedule_ends_at_train_steps():
  """The factories tie the schedule to train_steps; an override of one without the other is
  warned about by the trainer (tests/test_bad_inputs.py)."""
  checked = 0
  for name in EXPERIMENTS:
    params = exp_factory.get_exp_config(name)
    if params.trainer.optimizer_config.learning_rate.type == 'cosine':
      assert optimization_config.schedule_end(params.trainer.optimizer_config) == (
          params.trainer.train_steps), name
      checked += 1
  assert checked >= 30
