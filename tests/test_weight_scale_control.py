"""The weight-scale control (benchmarks/weight_scale_control.py): rescaling every kernel to its
random-init norm, with its BN statistics, keeps the network's function and sets the norms."""

import json
import os
import sys

import numpy as np
import tensorflow as tf
import tf_keras

from tests.conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, 'benchmarks'))
import weight_scale_control  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_detcon.evaluation import frozen  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_detcon.weights import resnet  # pylint: disable=g-import-not-at-top,wrong-import-position


def _loaded(export: str):
  with open(os.path.join(export, 'metadata.json')) as f:
    backbone = frozen.backbone_from_metadata(json.load(f))
  tf.train.Checkpoint(backbone=backbone).read(tf.train.latest_checkpoint(
      os.path.join(export, 'checkpoint'))).expect_partial().assert_existing_objects_matched()
  return backbone


def test_rescaling_keeps_the_features_and_sets_random_init_norms(tiny_run, tmp_path):
  export = os.path.join(tiny_run.model_dir, 'export')
  out = str(tmp_path / 'rescaled')
  info = weight_scale_control.rescale(export, out)
  before, after = _loaded(export), _loaded(out)
  images = tf.random.stateless_uniform([2, 64, 64, 3], seed=[3, 4])
  old, new = before(images, training=False), after(images, training=False)
  for level in old:
    np.testing.assert_allclose(new[level].numpy(), old[level].numpy(), rtol=1e-3, atol=1e-4)
  # Every kernel (stem, block convolutions, projections) was set to its random-init norm.
  kernels = {name: v for name, v in resnet.targets(after) if v.shape.rank == 4}
  assert set(info['norms']) == set(kernels)
  for name, (_, target) in info['norms'].items():
    assert abs(float(tf.norm(kernels[name])) - target) < 1e-3 * target, name
  # ... and that norm is not the pretrained one (the check is not vacuous).
  assert any(abs(a - b) > 0.01 * b for a, b in info['norms'].values())


def test_decoder_norm_ratios_compare_the_trained_fpn_with_a_fresh_one(tiny_decon_run, tiny_run):
  export = os.path.join(tiny_decon_run.model_dir, 'export')
  ratios = weight_scale_control.decoder_norm_ratios(export)
  trained = {v.name.split('/')[0]: v for v in tiny_decon_run.model.decoder.weights
             if 'kernel' in v.name}
  assert set(ratios) == set(trained) and any(n.startswith('lateral_') for n in ratios)
  with open(os.path.join(export, 'metadata.json')) as f:
    metadata = json.load(f)
  backbone = frozen.backbone_from_metadata(metadata)
  tf_keras.utils.set_random_seed(0)  # after the backbone is built, as the control does
  fresh = frozen.decoder_from_metadata(metadata, backbone)
  fresh = {v.name.split('/')[0]: v for v in fresh.weights if 'kernel' in v.name}
  for name, ratio in ratios.items():
    np.testing.assert_allclose(ratio, float(tf.norm(trained[name]) / tf.norm(fresh[name])),
                               rtol=1e-5, err_msg=name)
  # An export without a decoder has no FPN norms.
  assert weight_scale_control.decoder_norm_ratios(
      os.path.join(tiny_run.model_dir, 'export')) == {}
