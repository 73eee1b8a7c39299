"""The transfer table's rescale (benchmarks/rescale.py): every backbone kernel at its random-init
norm, with its BN statistics, keeps the network's function; a DeCon export keeps its FPN."""

import os

import numpy as np
import pytest
import tensorflow as tf

import rescale
from tf_detcon.evaluation import frozen
from tf_detcon.weights import resnet


def test_rescaling_keeps_the_function_and_sets_random_init_norms(tiny_decon_run, tmp_path):
  export = os.path.join(tiny_decon_run.model_dir, 'export')
  out = str(tmp_path / 'rescaled')
  # Grow the kernels first, as SGD pretraining does (a function-preserving scale by hand).
  metadata, backbone, decoder = rescale.restored(export)
  before_growth = rescale.norm_ratios(backbone, rescale.fresh_backbone(metadata))
  grown = str(tmp_path / 'grown')
  variables = dict(resnet.targets(backbone))
  for name, kernel in resnet.targets(backbone):
    if name.endswith(('conv1', 'conv2', 'shortcut', 'stem/conv')):
      kernel.assign(kernel * 3.0)
      bn = rescale._norm_of(name)  # pylint: disable=protected-access
      variables[f'{bn}/mean'].assign(variables[f'{bn}/mean'] * 3.0)
      variables[f'{bn}/var'].assign(variables[f'{bn}/var'] * 9.0)
  from tf_detcon.training import export as export_lib  # pylint: disable=g-import-not-at-top
  export_lib.write(grown, {'backbone': backbone, 'decoder': decoder}, metadata)

  record = rescale.rescale(grown, out)
  assert record['norms'] == pytest.approx({k: 3 * v for k, v in before_growth.items()},
                                          rel=1e-5)
  before, after = frozen.from_export(export), frozen.from_export(out)
  images = tf.cast(tf.random.stateless_uniform([2, 64, 64, 3], seed=[3, 4]) * 255, tf.uint8)
  old, new = before(images), after(images)
  assert sorted(new) == sorted(old) == ['2', '3', '4', '5', 'p2', 'p3', 'p4', 'p5']
  for level in old:  # the encoder's levels and the FPN's: one function
    np.testing.assert_allclose(new[level].numpy(), old[level].numpy(), rtol=1e-3, atol=1e-4,
                               err_msg=level)
  _, rescaled_backbone, rescaled_decoder = rescale.restored(out)
  fresh = dict(resnet.targets(rescale.fresh_backbone(metadata)))
  kernels = {name: v for name, v in resnet.targets(rescaled_backbone) if v.shape.rank == 4}
  assert set(record['norms']) == set(kernels)
  for name, kernel in kernels.items():
    np.testing.assert_allclose(float(tf.norm(kernel)), float(tf.norm(fresh[name])), rtol=1e-5)
  for mine, theirs in zip(rescaled_decoder.weights, decoder.weights):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
  ratios = rescale.norm_ratios(rescaled_backbone, rescale.fresh_backbone(metadata))
  assert rescale.summary(ratios) == {'stem': 1.0, 'all': 1.0} or all(
      abs(v - 1) < 1e-5 for v in rescale.summary(ratios).values())
