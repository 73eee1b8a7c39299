"""The transfer table's rule against a learning-rate confound: every export fine-tunes from its
kernels at their random-initialisation norms, by a function-preserving rescale.

The miniature pretrains every method at its paper's batch-256 learning rate with batch 32, 8× the
linear rule (mini_table.py). LARS methods (SimCLR, BYOL, DetCon, DeCon) step in proportion to each
weight's norm and keep their kernels at their initial scale; SGD methods (MoCo v2, DetCo) do not,
and their early kernels grow (DetCo's stem 2.6×, MoCo v2's 1.25×, seed 0 of the previous table).
Every convolution of Model Garden's ResNet feeds a batch norm, so a kernel times c, with its BN's
moving mean × c and variance × c², computes the same function (to BN's epsilon), while SGD's
effective step on it shrinks as 1/c². Rescaling every export's kernels to Model Garden's random
initialisation norms therefore removes the confound for every row alike and changes no feature:
no row's kernels are larger than a fresh network's, whatever its full-scale run would give.

DeCon's FPN is carried over unscaled: its lateral convolutions feed no batch norm (a rescale would
change its function), and LARS kept its kernels at their initial norms (0.94–1.09).
"""

import os
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from tf_detcon.evaluation import frozen
from tf_detcon.exports import manifest
from tf_detcon.training import export as export_lib
from tf_detcon.weights import resnet

# Largest relative change of the features a rescale may make: BN's epsilon (1e-5) against
# variances scaled by c² moves them by about 1e-6.
MAX_FEATURE_CHANGE = 1e-3


def _norm_of(name: str) -> Optional[str]:
  """The BN (layout name) that a kernel's output feeds; None for what is not a kernel."""
  last = name.split('/')[-1]
  if last == 'shortcut':
    return f'{name}_bn'
  if last.startswith('conv'):
    return name[:-len(last)] + last.replace('conv', 'bn')
  return None


def restored(export: str) -> Tuple[manifest.Manifest, tf_keras.Model, Optional[tf_keras.Model]]:
  """(its manifest, the export's backbone, its decoder or None), restored by value."""
  metadata = manifest.read(export)
  backbone = frozen.backbone_from_metadata(metadata)
  decoder = frozen.decoder_from_metadata(metadata, backbone)
  modules = {'backbone': backbone, **({'decoder': decoder} if decoder is not None else {})}
  tf.train.Checkpoint(**modules).read(tf.train.latest_checkpoint(
      os.path.join(export, 'checkpoint'))).expect_partial().assert_existing_objects_matched()
  return metadata, backbone, decoder


def fresh_backbone(metadata: manifest.Manifest) -> tf_keras.Model:
  """Model Garden's random initialisation of the export's backbone (seed 0)."""
  tf_keras.utils.set_random_seed(0)
  return frozen.backbone_from_metadata(metadata)


def norm_ratios(backbone: tf_keras.Model, fresh: tf_keras.Model) -> Dict[str, float]:
  """Each kernel's norm over its random-initialisation norm, by layout name."""
  initial = dict(resnet.targets(fresh))
  return {name: float(tf.norm(v) / tf.norm(initial[name]))
          for name, v in resnet.targets(backbone) if _norm_of(name)}


def summary(ratios: Dict[str, float]) -> Dict[str, float]:
  """The stem's ratio and the mean over every kernel: what the table prints."""
  return {'stem': ratios['stem/conv'], 'all': float(np.mean(list(ratios.values())))}


def decoder_norm_ratios(export: str) -> Dict[str, float]:
  """Each kernel of the export's FPN over Model Garden's random initialisation of it (seed 0);
  empty for an export without a decoder."""
  metadata, backbone, decoder = restored(export)
  if decoder is None:
    return {}
  tf_keras.utils.set_random_seed(0)
  fresh = frozen.decoder_from_metadata(metadata, backbone)
  return {mine.name.split('/')[0]: float(tf.norm(mine) / tf.norm(theirs))
          for mine, theirs in zip(decoder.weights, fresh.weights) if 'kernel' in mine.name}


def rescale(export: str, out: str) -> Dict:
  """Writes `out`: the export with every backbone kernel at its random-init norm (BN statistics
  scaled to match) and its decoder, if any, as it is. Returns the record kept in its metadata
  (`extra['rescaled']`): the ratios before (`norms`, by kernel) and the features' largest change."""
  metadata, backbone, decoder = restored(export)
  variables = dict(resnet.targets(backbone))
  ratios = norm_ratios(backbone, fresh_backbone(metadata))
  images = tf.random.stateless_uniform([4, 96, 96, 3], seed=[1, 2])
  before = backbone(images, training=False)
  for name, ratio in ratios.items():
    c = 1.0 / ratio
    bn = _norm_of(name)
    variables[name].assign(variables[name] * c)
    variables[f'{bn}/mean'].assign(variables[f'{bn}/mean'] * c)
    variables[f'{bn}/var'].assign(variables[f'{bn}/var'] * c * c)
  after = backbone(images, training=False)
  change = max(float(tf.reduce_max(tf.abs(after[k] - before[k])) /
                     tf.reduce_max(tf.abs(before[k]))) for k in before)
  if change > MAX_FEATURE_CHANGE:
    raise RuntimeError(f'rescaling {export} changed its features by {change:.2g}')
  metadata.extra['rescaled'] = {'from': export, 'norms': ratios, 'feature_change': change}
  modules = {'backbone': backbone, **({'decoder': decoder} if decoder is not None else {})}
  export_lib.write(out, modules, metadata)
  return metadata.extra['rescaled']
