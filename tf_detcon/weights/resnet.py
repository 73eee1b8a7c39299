"""One layout for a ResNet's tensors, between a source file and Model Garden's ResNet.

Each reader (haiku, PyTorch) renames the source's tensors into this layout, in TF's axis order:
  stem/conv                              [7, 7, 3, 64] kernel
  stem/bn/{gamma,beta,mean,var}          [64]
  g<G>/b<B>/conv<I>                      I = 1..3 (bottleneck) or 1..2 (basic block)
  g<G>/b<B>/bn<I>/{gamma,beta,mean,var}
  g<G>/b<B>/shortcut, g<G>/b<B>/shortcut_bn/{gamma,beta,mean,var}
where G = 0..3 is the group whose output is level G+2 (res2..res5) and B the block in it. All the
sources here are ResNet v1.5 (He et al. 2016, with the stride on the 3x3 convolution): so is
Model Garden's ResNet, and the same tensor means the same thing in both.

Model Garden projects the shortcut of the first block of every group. torchvision's ResNet-18/34
have no projection where the first group keeps its width; that shortcut is imported as the
identity (a 1x1 kernel of ones on the diagonal and a BN that passes its input unchanged).
"""

import re
from typing import List, Tuple

from absl import logging
import numpy as np
import tf_keras

from official.vision.modeling.backbones import resnet as mg_resnet
from official.vision.modeling.layers import nn_blocks
from tf_detcon.weights import source_files

BN_FIELDS = ('gamma', 'beta', 'mean', 'var')
Tensors = source_files.Tensors
# Model Garden's ResNets that a released file can hold, by (block kind, blocks per group).
DEPTHS = {(specs[0][0], tuple(spec[2] for spec in specs)): model_id
          for model_id, specs in mg_resnet.RESNET_SPECS.items()}
_BLOCK = re.compile(r'g(\d)/b(\d+)/')


def blocks_per_group(tensors: Tensors) -> Tuple[int, ...]:
  counts = [0, 0, 0, 0]
  for name in tensors:
    match = _BLOCK.match(name)
    if match and int(match.group(1)) < 4:
      group, block = int(match.group(1)), int(match.group(2))
      counts[group] = max(counts[group], block + 1)
  return tuple(counts)


def block_kind(tensors: Tensors) -> str:
  return 'bottleneck' if any(name.endswith('/conv3') for name in tensors) else 'residual'


def infer_model_id(tensors: Tensors) -> int:
  """The Model Garden `model_id` whose blocks the tensors hold; ValueError if none."""
  kind, counts = block_kind(tensors), blocks_per_group(tensors)
  model_id = DEPTHS.get((kind, counts))
  if model_id is None:
    raise ValueError(f'the file holds a ResNet of {kind} blocks {list(counts)} per group, which '
                     'is no Model Garden ResNet (known: ' + ', '.join(
                         f'{m}: {list(c)}' for (k, c), m in sorted(DEPTHS.items(),
                                                                    key=lambda x: x[1])) + ')')
  return model_id


def _bn(prefix: str, layer: tf_keras.layers.Layer) -> List[Tuple[str, object]]:
  # Keras BN weights: gamma, beta, moving_mean, moving_variance.
  return [(f'{prefix}/{field}', weight) for field, weight in zip(BN_FIELDS, layer.weights)]


def targets(backbone: tf_keras.Model) -> List[Tuple[str, object]]:
  """(layout name, variable) for every variable of a Model Garden ResNet, in model order."""
  convs = [layer for layer in backbone.layers if isinstance(layer, tf_keras.layers.Conv2D)]
  norms = [layer for layer in backbone.layers
           if isinstance(layer, tf_keras.layers.BatchNormalization)]
  blocks = [layer for layer in backbone.layers
            if isinstance(layer, (nn_blocks.BottleneckBlock, nn_blocks.ResidualBlock))]
  if len(convs) != 1 or len(norms) != 1:
    raise ValueError('only the stem of Model Garden\'s ResNet (stem_type v0) is supported')
  out = [('stem/conv', convs[0].kernel), *_bn('stem/bn', norms[0])]
  group, block = -1, 0
  for layer in blocks:
    if layer.get_config()['use_projection']:
      group, block = group + 1, 0
    prefix = f'g{group}/b{block}'
    count = 3 if isinstance(layer, nn_blocks.BottleneckBlock) else 2
    for i in range(1, count + 1):
      out.append((f'{prefix}/conv{i}', getattr(layer, f'_conv{i}').kernel))
      out += _bn(f'{prefix}/bn{i}', getattr(layer, f'_norm{i}'))
    if layer.get_config()['use_projection']:
      out.append((f'{prefix}/shortcut', layer._shortcut.kernel))  # pylint: disable=protected-access
      out += _bn(f'{prefix}/shortcut_bn', layer._norm0)  # pylint: disable=protected-access
    block += 1
  return out


def identity_shortcut(tensors: Tensors, model_id: int, epsilon: float) -> List[str]:
  """Adds an identity projection where Model Garden has one and the source has none (a basic
  block keeping its width); returns the blocks given one. BN(x) = x needs var = 1 - epsilon."""
  added = []
  if mg_resnet.RESNET_SPECS[model_id][0][0] != 'residual':
    return added
  for group in range(4):
    prefix = f'g{group}/b0'
    if f'{prefix}/shortcut' in tensors or f'{prefix}/conv1' not in tensors:
      continue
    kernel = tensors[f'{prefix}/conv1']
    channels_in, channels_out = kernel.shape[2], kernel.shape[3]
    if channels_in != channels_out:
      continue  # a missing projection that changes width is reported as missing
    tensors[f'{prefix}/shortcut'] = np.eye(channels_in, dtype=np.float32)[None, None]
    tensors[f'{prefix}/shortcut_bn/gamma'] = np.ones(channels_in, np.float32)
    tensors[f'{prefix}/shortcut_bn/beta'] = np.zeros(channels_in, np.float32)
    tensors[f'{prefix}/shortcut_bn/mean'] = np.zeros(channels_in, np.float32)
    tensors[f'{prefix}/shortcut_bn/var'] = np.full(channels_in, 1.0 - epsilon, np.float32)
    added.append(prefix)
  return added


def assign(backbone: tf_keras.Model, source: 'source_files.Source') -> int:
  """Assigns every variable of `backbone` its tensor; ValueError, naming the first few in the
  file's own names, for missing or unexpected tensors or a shape that does not fit. Returns the
  number of tensors assigned."""
  tensors = source.tensors
  wanted = targets(backbone)
  names = {name for name, _ in wanted}
  file_name = lambda name: source.names.get(name) or source.expected(name)
  for name, variable in wanted:  # shapes first: they tell a wrong model_id most plainly
    if name in tensors and tuple(np.shape(tensors[name])) != tuple(variable.shape):
      raise ValueError(f'{file_name(name)} has shape {list(np.shape(tensors[name]))} but the '
                       f'ResNet\'s {name} needs {list(variable.shape)}')
  missing = names - set(tensors)
  if missing:
    raise ValueError(f'the file lacks {len(missing)} tensors of the backbone: '
                     f'{source_files.first(file_name(n) for n in missing)}')
  unexpected = set(tensors) - names
  if unexpected:
    raise ValueError(f'the file holds {len(unexpected)} backbone tensors that this ResNet does '
                     f'not have: {source_files.first(file_name(n) for n in unexpected)}')
  for name, variable in wanted:
    variable.assign(np.asarray(tensors[name], np.float32))
  logging.info('assigned %d tensors', len(wanted))
  return len(wanted)
