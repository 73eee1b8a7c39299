"""Tests for tf_detcon.training.optimization: LARS (exclusions by name, decay) and SGD."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.vision.modeling.decoders import fpn
from tests.conftest import tiny_params
from tf_detcon.configs import pretrain as pretrain_config
from tf_detcon.modeling.methods import detcon
from tf_detcon.training import optimization


def test_unknown_optimizer_is_a_clear_error():
  cfg = pretrain_config.OptimizationConfig(optimizer='adamw')
  with pytest.raises(ValueError, match="'lars' or 'sgd'"):
    optimization.build_optimizer(cfg, 10, 8)


def test_lars_excludes_every_norm_parameter_and_bias_by_name():
  task = tiny_params('detcon_b_tiny').task
  model = detcon.DetConModel(task, total_steps=10)
  # An FPN built as Model Garden's Mask R-CNN builds it: its BN layers are named norm_*.
  decoder = fpn.FPN(input_specs=model.encoder.output_specs, min_level=2, max_level=6,
                    use_sync_bn=True)
  optimizer = optimization.build_optimizer(task.optimization, 10, 4)
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
  cfg = pretrain_config.OptimizationConfig(weight_decay=0.5, momentum=0.0, lars_eeta=1.0,
                                           warmup_fraction=0.0)
  optimizer = optimization.build_optimizer(cfg, total_steps=10**6, global_batch=256)
  dense = tf_keras.layers.Dense(2, bias_initializer='ones')
  dense.build((None, 2))
  before = [v.numpy().copy() for v in dense.variables]
  optimizer.apply_gradients(zip([tf.zeros_like(v) for v in dense.variables], dense.variables))
  kernel, bias = (v.numpy() for v in dense.variables)
  assert not np.allclose(kernel, before[0])  # decayed
  np.testing.assert_array_equal(bias, before[1])  # zero gradient, no decay
