"""A KerasHub preset from an export or an import (launch/export_keras.py).

The preset is what `keras_hub.models.Backbone.from_preset(path)` loads on the JAX, TensorFlow or
PyTorch backend: config.json, the weights, metadata.json, and an image converter that normalises
[0, 255] pixels as our pretraining does. Which backbone class holds the network:
  - KerasHub's own `ResNetBackbone`, for a bottleneck ResNet imported with PyTorch's padding, at
    ReLU and ε = 1e-5 (a torchvision or detectron2 import): its layout is exactly that network;
  - otherwise our registered `DenseResNetBackbone` (backbone.py says why KerasHub's cannot hold
    Model Garden's ResNet), with DeCon's FPN decoder when the export has one. Loading it needs
    `import tf_detcon.keras3` first.
The preset is written beside `output_dir`, checked on each asked-for backend in a process of its
own (check.py: its features must equal the export's, level by level), and only then renamed into
place: `output_dir` holds a checked preset or nothing.
"""

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from official.vision.modeling.backbones import resnet
from official.vision.modeling.layers import nn_blocks
from tf_detcon.evaluation import frozen
from tf_detcon.exports import manifest
from tf_detcon.primitives import color

# Keras 3 backends, and the module each needs.
BACKENDS = {'tensorflow': 'tensorflow', 'jax': 'jax', 'torch': 'torch'}
# Model Garden's activation names (tf_utils.get_activation) → Keras 3's, where both compute the
# same function.
ACTIVATIONS = {'relu': 'relu', 'swish': 'silu', 'relu6': 'relu6'}
# The ResNet settings a preset holds: Model Garden's defaults.
PLAIN_RESNET = {'stem_type': 'v0', 'resnetd_shortcut': False, 'replace_stem_max_pool': False,
                'se_ratio': 0.0}
# The largest relative difference (max |preset − export| / max |export|, per level) accepted.
TOLERANCE = 1e-4
# The check's images: uint8, sides multiples of 32 (an FPN's top-down path needs them).
CHECK_IMAGES = (2, 64, 96, 3)
SOURCE_MANIFEST = 'tf_detcon_manifest.json'


@dataclasses.dataclass
class Plan:
  """The backbone class and config that hold an export's network."""
  class_name: str  # 'ResNetBackbone' (KerasHub's) or 'DenseResNetBackbone' (ours)
  config: Dict[str, Any]
  reason: str


def plan(metadata: manifest.Manifest, export: str) -> Plan:
  """The preset's class and config for an export; ValueError in one line naming the field an
  export of another architecture has."""
  network = metadata.function
  backbone = network['backbone']
  if backbone.get('type') != 'resnet':
    raise ValueError(f'{export}: its backbone is {backbone.get("type")!r}; only Model Garden\'s '
                     'ResNet becomes a KerasHub preset')
  for field, plain in PLAIN_RESNET.items():
    if backbone.get(field, plain) != plain:
      raise ValueError(f'{export}: backbone.resnet.{field} is {backbone[field]!r}; a preset holds '
                       f'{field}={plain!r} only')
  model_id = int(backbone['model_id'])
  if model_id not in resnet.RESNET_SPECS:
    raise ValueError(f'{export}: backbone.resnet.model_id {model_id} is not one of Model '
                     f'Garden\'s ResNets ({sorted(resnet.RESNET_SPECS)})')
  activation = network['norm_activation']['activation']
  if activation not in ACTIVATIONS:
    raise ValueError(f'{export}: norm_activation.activation {activation!r} has no equal in '
                     f'Keras 3 here; one of {", ".join(ACTIVATIONS)}')
  epsilon = float(network['norm_activation']['norm_epsilon'])
  specs = resnet.RESNET_SPECS[model_id]
  multiplier = float(backbone.get('depth_multiplier', 1.0))
  block_type = 'bottleneck' if specs[0][0] == 'bottleneck' else 'basic'
  filters = [int(f * multiplier) for _, f, _ in specs]
  blocks = [repeats for _, _, repeats in specs]
  stem = int(64 * multiplier) if backbone.get('scale_stem', True) else 64
  fpn = None
  if metadata.has_decoder:
    decoder = network['decoder']
    if decoder['type'] != 'fpn':
      raise ValueError(f'{export}: its decoder is {decoder["type"]!r}; a preset holds an FPN')
    fpn = {'min_level': int(metadata.decoder['min_level']),
           'max_level': int(metadata.decoder['max_level']),
           'num_filters': int(decoder['num_filters']), 'fusion_type': decoder['fusion_type'],
           'use_separable_conv': bool(decoder['use_separable_conv'])}
  native = (metadata.padding == 'symmetric' and block_type == 'bottleneck' and fpn is None
            and activation == 'relu' and epsilon == 1e-5 and stem == 64 and multiplier == 1.0)
  if native:
    return Plan('ResNetBackbone', dict(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=filters,
        stackwise_num_blocks=blocks, stackwise_num_strides=[1, 2, 2, 2],
        block_type='bottleneck_block', use_pre_activation=False, image_shape=(None, None, 3)),
        'a PyTorch-padded bottleneck ResNet at ReLU and ε 1e-5: KerasHub\'s own layout')
  return Plan('DenseResNetBackbone', dict(
      block_type=block_type, stackwise_num_filters=filters, stackwise_num_blocks=blocks,
      stem_filters=stem, activation=ACTIVATIONS[activation], norm_epsilon=epsilon,
      padding=metadata.padding, fpn=fpn, image_shape=(None, None, 3)),
      'KerasHub\'s ResNetBackbone pads as PyTorch does and has no FPN; Model Garden\'s ResNet '
      f'({metadata.padding} padding, {activation}, ε '
      f'{epsilon:g}{", its FPN" if fpn else ""}) needs ours')


def model_garden_weights(backbone: tf_keras.Model, decoder: Optional[tf_keras.Model]
                         ) -> Dict[str, List[np.ndarray]]:
  """{DenseResNetBackbone layer name: weights} from Model Garden's ResNet (stem 'v0') and FPN,
  walked by structure: the stem's convolution and norm, then each block's shortcut and
  convolutions in the order Model Garden creates them (its `_shortcut`, `_norm0`, `_convK`,
  `_normK`), level by level; the FPN's layers by their names."""
  out = {}
  stem = [layer for layer in backbone.layers
          if isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.BatchNormalization))]
  if len(stem) != 2:
    raise ValueError(f'the ResNet has {len(stem)} stem layers with weights; expected stem v0\'s 2')
  out['stem_conv'], out['stem_bn'] = (layer.get_weights() for layer in stem)
  blocks = [layer for layer in backbone.layers
            if isinstance(layer, (nn_blocks.ResidualBlock, nn_blocks.BottleneckBlock))]
  index, level = 0, 1
  for block in blocks:
    projects = block.get_config()['use_projection']  # every group's first block, only
    if projects:
      index, level = 0, level + 1
    name = f'res{level}_block{index}'
    if projects:
      out[f'{name}_shortcut_conv'] = block._shortcut.get_weights()  # pylint: disable=protected-access
      out[f'{name}_shortcut_bn'] = block._norm0.get_weights()  # pylint: disable=protected-access
    convs = 3 if isinstance(block, nn_blocks.BottleneckBlock) else 2
    for k in range(1, convs + 1):
      out[f'{name}_conv{k}'] = getattr(block, f'_conv{k}').get_weights()
      out[f'{name}_bn{k}'] = getattr(block, f'_norm{k}').get_weights()
    index += 1
  if decoder is not None:
    for layer in decoder.layers:
      if layer.weights:
        out[f'fpn_{layer.name}'] = layer.get_weights()
  return out


def keras_hub_names(weights: Dict[str, List[np.ndarray]]) -> Dict[str, List[np.ndarray]]:
  """The same weights under KerasHub ResNetBackbone's layer names (`conv1_conv`,
  `stack{S}_block{B}_{0 shortcut | K}_{conv | bn}`)."""
  out = {}
  for name, value in weights.items():
    if name.startswith('stem_'):
      out[{'stem_conv': 'conv1_conv', 'stem_bn': 'conv1_bn'}[name]] = value
      continue
    group, block, part = name.split('_', 2)
    stack = f'stack{int(group[len("res"):]) - 2}_{block}'
    if part.startswith('shortcut_'):
      out[f'{stack}_0_{part[len("shortcut_"):]}'] = value
    else:
      kind, k = part[:-1], part[-1]
      out[f'{stack}_{k}_{kind}'] = value
  return out


def assign(model: Any, weights: Dict[str, List[np.ndarray]]) -> None:
  """Sets every weighted layer of the Keras 3 `model` from `weights` by name, checking shapes;
  a layer or weight left over on either side is a mapping error."""
  unused = set(weights)
  for layer in model.layers:
    if not layer.weights:
      continue
    if layer.name not in weights:
      raise RuntimeError(f'no weights for the preset\'s layer {layer.name}')
    values = weights[layer.name]
    shapes = [tuple(w.shape) for w in layer.weights]
    if shapes != [tuple(v.shape) for v in values]:
      raise RuntimeError(f'{layer.name}: shapes {shapes} vs {[v.shape for v in values]}')
    layer.set_weights(values)
    unused.discard(layer.name)
  if unused:
    raise RuntimeError(f'weights not placed in the preset: {sorted(unused)}')


def check_keras_hub() -> None:
  if importlib.util.find_spec('keras_hub') is None:
    raise ValueError("KerasHub is not installed here: pip install -e '.[keras]' (keras-hub "
                     "0.32) to write Keras 3 presets")


def check_backends(backends: Sequence[str]) -> List[str]:
  """The asked-for backends, each installed, and KerasHub; ValueError in one line otherwise."""
  check_keras_hub()
  if not backends:
    raise ValueError('--check_backends is empty: name at least one of '
                     f'{", ".join(BACKENDS)}')
  for backend in backends:
    if backend not in BACKENDS:
      raise ValueError(f'--check_backends: unknown Keras backend {backend!r}; one of '
                       f'{", ".join(BACKENDS)}')
    if importlib.util.find_spec(BACKENDS[backend]) is None:
      raise ValueError(f'--check_backends: the {backend} backend is not installed here '
                       f'(pip install {BACKENDS[backend]}), or leave it out')
  return list(dict.fromkeys(backends))


def _refuse_existing(output_dir: str) -> None:
  if '://' in output_dir:
    raise ValueError(f'--output_dir {output_dir}: a preset is written to a local folder (then '
                     'copy it, e.g. with gcloud storage cp -r); --export may be remote')
  if os.path.isdir(output_dir) and os.listdir(output_dir):
    raise ValueError(f'--output_dir {output_dir} already holds files; choose a new folder, or '
                     'remove it to write the preset again')
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f'--output_dir {output_dir} is a file')


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def check_images(seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, CHECK_IMAGES, dtype=np.uint8)


def relative_errors(got: Dict[str, np.ndarray], want: Dict[str, np.ndarray]
                    ) -> Dict[str, float]:
  """{level: max |got − want| / max |want|}; a level missing or misshapen on one side is inf."""
  out = {}
  for level, value in want.items():
    other = got.get(level)
    if other is None or other.shape != value.shape:
      out[level] = float('inf')
    else:
      out[level] = float(np.max(np.abs(other - value)) / max(np.max(np.abs(value)), 1e-12))
  for level in set(got) - set(want):
    out[level] = float('inf')
  return out


def features_on(backend: str, preset_dir: str, images: np.ndarray) -> Dict[str, np.ndarray]:
  """check.py's features of the preset, in a process of its own on `backend`."""
  with tempfile.TemporaryDirectory() as scratch:
    images_path = os.path.join(scratch, 'images.npy')
    out_path = os.path.join(scratch, 'features.npz')
    np.save(images_path, images)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL='3',
               JAX_PLATFORMS='cpu')
    result = subprocess.run(
        [sys.executable, '-m', 'tf_detcon.keras3.check', preset_dir, images_path, out_path],
        capture_output=True, text=True, env=env, check=False)
    if result.returncode:
      lines = result.stderr.strip().splitlines() or [f'exit status {result.returncode}']
      raise ValueError(f'the preset does not load on the {backend} backend: {lines[-1]}')
    with np.load(out_path) as data:
      return {k: data[k] for k in data.files}


def _write_files(staging: str, chosen: Plan, weights: Dict[str, List[np.ndarray]],
                 metadata: manifest.Manifest) -> None:
  """The preset's files, written by Keras 3 in this process (its backend is irrelevant)."""
  import keras_hub  # pylint: disable=g-import-not-at-top
  from tf_detcon import keras3  # pylint: disable=g-import-not-at-top
  if chosen.class_name == 'ResNetBackbone':
    model = keras_hub.models.ResNetBackbone(**chosen.config)
    converter_cls = keras_hub.layers.ResNetImageConverter
    weights = keras_hub_names(weights)
  else:
    model = keras3.DenseResNetBackbone(**chosen.config)
    converter_cls = keras3.DenseResNetImageConverter
  with warnings.catch_warnings():  # Keras 3's TF backend on numpy 2's `copy` keyword
    warnings.simplefilter('ignore', DeprecationWarning)
    assign(model, weights)
    model.save_to_preset(staging)
  std = np.asarray(color.IMAGENET_STD)
  converter = converter_cls(scale=list(1.0 / (255.0 * std)),
                            offset=list(-np.asarray(color.IMAGENET_MEAN) / std))
  converter.save_to_preset(staging)
  with open(os.path.join(staging, SOURCE_MANIFEST), 'w') as f:
    json.dump(metadata.as_dict(), f, indent=2, sort_keys=True, default=str)


def write(export: str, output_dir: str, backends: Sequence[str] = ('tensorflow',)
          ) -> Tuple[Plan, Dict[str, Dict[str, float]]]:
  """Writes the KerasHub preset of `export` to `output_dir`, checked on `backends`.

  Returns the plan and {backend: {level: relative error}}. Refuses in one line: an export that is
  not whole, another architecture, an `output_dir` that holds files, a backend not installed, and
  a preset whose features differ from the export's by more than TOLERANCE on any backend.
  No `backends` writes it unchecked (for a caller that checks it itself; the launcher asks for
  at least one)."""
  check_keras_hub()
  backends = check_backends(backends) if backends else []
  output_dir = output_dir.rstrip('/')
  _refuse_existing(output_dir)
  parent = os.path.dirname(os.path.abspath(output_dir))
  try:
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(output_dir)}.tmp-', dir=parent)
  except OSError as e:
    raise ValueError(f'--output_dir {output_dir} is not writable ({e.strerror})') from e
  os.chmod(staging, 0o777 & ~_umask())
  errors = {}
  try:
    metadata, backbone, decoder = frozen.modules_from_export(export)
    chosen = plan(metadata, export)
    logging.info('preset class %s: %s', chosen.class_name, chosen.reason)
    _write_files(staging, chosen, model_garden_weights(backbone, decoder), metadata)
    if backends:  # the export's own features, the reference every backend must reproduce
      images = check_images()
      reference = frozen.from_keras('export', backbone, decoder)
      want = {k: v.numpy() for k, v in reference(tf.constant(images)).items()}
    for backend in backends:
      print(f'checking the preset on the {backend} backend ...', flush=True)
      errors[backend] = relative_errors(features_on(backend, staging, images), want)
      worst = max(errors[backend].values())
      if not worst <= TOLERANCE:
        level = max(errors[backend], key=errors[backend].get)
        raise ValueError(f'the preset\'s features differ from the export\'s on the {backend} '
                         f'backend: level {level} by {worst:.2e} (relative; at most '
                         f'{TOLERANCE:g} is accepted)')
    _refuse_existing(output_dir)  # another process may have written it meanwhile
    try:
      if os.path.isdir(output_dir):
        os.rmdir(output_dir)
      os.rename(staging, output_dir)
    except OSError as e:
      raise ValueError(f'--output_dir {output_dir}: another process wrote it meanwhile '
                       f'({e.strerror}); choose a new folder') from e
  finally:
    if os.path.isdir(staging):
      shutil.rmtree(staging, ignore_errors=True)
  return chosen, errors
