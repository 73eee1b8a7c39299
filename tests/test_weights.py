"""Released weights in (tf_detcon/weights, launch/import_weights.py): each format is written by
the source framework's own network with random weights, in the released file layout, imported,
and its features compared with the source network's on the same images at res2-res5."""

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from tf_detcon.primitives import color
from tf_detcon.evaluation import frozen
from tf_detcon.weights import importer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = 64
GROUPS = ('block_group_0', 'block_group_1', 'block_group_2', 'block_group_3')


def images(count: int = 2) -> np.ndarray:
  return np.random.default_rng(0).integers(0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)


def normalized(batch: np.ndarray) -> np.ndarray:
  return color.normalize(batch.astype(np.float32) / 255.0).numpy()


def imported_features(export_dir: str, batch: np.ndarray) -> dict:
  encoder = frozen.from_export(export_dir)
  return {level: value.numpy() for level, value in encoder(batch).items()}


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
  return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


# ---------------------------------------------------------------------------------- haiku


def _randomized(tree: dict, rng: np.random.Generator) -> dict:
  """Random values of the right scale for every leaf: He-scaled kernels, BN state away from its
  initial zeros, so that a misplaced tensor changes the features."""
  out = {}
  for module, leaves in tree.items():
    out[module] = {}
    for name, value in leaves.items():
      shape = np.shape(value)
      if name == 'w' and len(shape) == 4:
        fan_in = shape[0] * shape[1] * shape[2]
        new = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
      elif name in ('scale',):
        new = rng.uniform(0.5, 1.0, shape)
      elif name in ('offset',):
        new = rng.normal(0.0, 0.1, shape)
      elif name == 'average' and 'var_ema' in module:
        new = rng.uniform(0.5, 1.5, shape)
      elif name == 'average':
        new = rng.normal(0.0, 0.1, shape)
      else:
        new = np.asarray(value)
      out[module][name] = np.asarray(new, np.asarray(value).dtype)
  return out


@pytest.fixture(scope='module')
def haiku_release(tmp_path_factory):
  """DeepMind's ResNet-50 torso (haiku's own `hk.nets.ResNet50`, as DetCon's networks.py builds
  its blocks) with random weights, saved as a pickled dict of parameters and state in a .npy,
  and its res2-res5 features on `images()` (taken from its block groups by interception)."""
  haiku = pytest.importorskip('haiku')
  jax = pytest.importorskip('jax')

  def forward(x, is_training):
    net = haiku.nets.ResNet50(num_classes=10, bn_config={'decay_rate': 0.9, 'eps': 1e-5})
    return net(x, is_training=is_training)

  model = haiku.transform_with_state(forward)
  x = normalized(images())
  params, state = model.init(jax.random.PRNGKey(0), x, True)
  rng = np.random.default_rng(1)
  params = _randomized(jax.device_get(params), rng)
  state = _randomized(jax.device_get(state), rng)
  pyramid = {}

  def keep_groups(next_fn, args, kwargs, context):
    out = next_fn(*args, **kwargs)
    name = context.module.module_name.split('/')[-1]
    if context.method_name == '__call__' and name in GROUPS:
      pyramid[str(GROUPS.index(name) + 2)] = np.asarray(out)
    return out

  with haiku.intercept_methods(keep_groups):
    model.apply(params, state, None, x, False)
  path = tmp_path_factory.mktemp('haiku') / 'resnet50_detcon_b.npy'
  np.save(path, {**params, **state}, allow_pickle=True)  # one dict: module -> {name: array}
  return str(path), params, state, pyramid


def test_haiku_release_imports_and_agrees_to_float_tolerance(haiku_release, tmp_path):
  path, _, _, theirs = haiku_release
  out = importer.run('haiku', path, str(tmp_path / 'detcon_b'), allow_pickle=True)
  metadata = json.loads((tmp_path / 'detcon_b' / 'metadata.json').read_text())
  assert metadata['source']['model_id'] == 50
  assert metadata['source']['format'] == 'haiku'
  assert metadata['source']['not_imported'] == []  # logits are the torso's own classifier
  ours = imported_features(out, images())
  errors = {level: relative_error(ours[level], theirs[level]) for level in theirs}
  print('haiku -> Model Garden, max |difference| / max |feature|:', errors)
  assert set(errors) == {'2', '3', '4', '5'}
  assert max(errors.values()) < 1e-4, errors


def test_haiku_params_and_state_under_separate_keys_import_the_same(haiku_release, tmp_path):
  path, params, state, theirs = haiku_release
  split = tmp_path / 'split.npy'
  np.save(split, {'params': params, 'state': state}, allow_pickle=True)
  out = importer.run('haiku', str(split), str(tmp_path / 'split'), allow_pickle=True)
  ours = imported_features(out, images())
  assert relative_error(ours['5'], theirs['5']) < 1e-4


def test_a_pickled_npy_is_refused_without_allow_pickle(haiku_release, tmp_path):
  path = haiku_release[0]
  with pytest.raises(ValueError, match='pickled Python objects.*can run code.*--allow_pickle'):
    importer.run('haiku', path, str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('damage, message', [
    ('truncate', 'truncated or corrupt'),
    ('plain_array', 'holds one float32 array of shape \\[3, 4\\]'),
    ('not_npy', 'not a .npy file'),
    ('no_resnet', 'holds no haiku ResNet'),
    ('missing', 'lacks 5 tensors of the backbone: res_net50/~/block_group_3/~/block_2/~/batchnorm_0/'),
    ('unexpected', 'holds 1 backbone tensors that this ResNet does not have: '
                   'res_net50/~/block_group_1/~/block_0/~/conv_3/w'),
])
def test_bad_haiku_files_are_one_line(haiku_release, tmp_path, damage, message):
  path, params, state, _ = haiku_release
  bad = tmp_path / 'bad.npy'
  if damage == 'truncate':
    data = open(path, 'rb').read()
    bad.write_bytes(data[:len(data) // 2])
  elif damage == 'plain_array':
    np.save(bad, np.zeros((3, 4), np.float32))
  elif damage == 'not_npy':
    bad.write_text('hello')
  elif damage == 'no_resnet':
    np.save(bad, {'mlp/~/linear': {'w': np.zeros((2, 2))}}, allow_pickle=True)
  elif damage == 'unexpected':
    extra = {'res_net50/~/block_group_1/~/block_0/~/conv_3': {'w': np.zeros((1, 1, 8, 8))}}
    np.save(bad, {**params, **state, **extra}, allow_pickle=True)
  else:
    merged = {**params, **state}
    block = 'res_net50/~/block_group_3/~/block_2/~/'
    for key in [k for k in merged if k.startswith(block + 'conv_0')]:
      del merged[key]
    merged[block + 'batchnorm_0'] = {}
    for key in [k for k in merged if k.startswith(block + 'batchnorm_0')]:
      del merged[key]
    np.save(bad, merged, allow_pickle=True)
  with pytest.raises(ValueError, match=message):
    importer.run('haiku', str(bad), str(tmp_path / 'out'), allow_pickle=True)


def test_a_model_id_the_file_does_not_fit_names_the_tensor_and_both_shapes(haiku_release,
                                                                           tmp_path):
  with pytest.raises(ValueError, match=r'block_group_0/~/block_0/~/conv_0/w has shape '
                     r'\[1, 1, 64, 64\] but the ResNet\'s g0/b0/conv1 needs \[3, 3, 64, 64\]'):
    importer.run('haiku', haiku_release[0], str(tmp_path / 'out'), model_id=18,
                 allow_pickle=True)


# ---------------------------------------------------------------------------------- torchvision


# torchvision's network runs in a process of its own: importing torchvision (and its triton)
# into a process that holds TensorFlow crashes it. Reading a state dict with torch does not.
# torchvision's ResNet's res2-res5 outputs (NCHW torch tensors), shared by the scripts that run
# a source network.
RESNET_LEVELS = r'''
def resnet_levels(network, x):
  out = {}
  for level, layer in zip('2345', (network.layer1, network.layer2, network.layer3,
                                   network.layer4)):
    layer.register_forward_hook(lambda m, a, o, level=level: out.__setitem__(level, o))
  with torch.no_grad():
    network(x)
  return out
'''

TORCHVISION_SCRIPT = RESNET_LEVELS + r'''
import sys
import numpy as np
import torch
import torchvision

arch, wrap, images_path, file_path, features_path = sys.argv[1:6]
nn = torch.nn


class Padded(nn.Module):
  """TF's SAME padding for a stride-2 layer of kernel k on an even input: k-2 in all,
  (k-2)//2 before and the rest after."""

  def __init__(self, layer, kernel, value=0.0):
    super().__init__()
    total = kernel - 2
    self.pad = nn.ConstantPad2d((total // 2, total - total // 2) * 2, value)
    self.layer = layer

  def forward(self, x):
    return self.layer(self.pad(x))


def tf_same_padding(module):
  for name, child in module.named_children():
    if isinstance(child, nn.Conv2d) and child.stride == (2, 2) and child.kernel_size[0] > 1:
      child.padding = (0, 0)
      setattr(module, name, Padded(child, child.kernel_size[0]))
    elif isinstance(child, nn.MaxPool2d):
      child.padding = 0
      setattr(module, name, Padded(child, 3, float('-inf')))
    else:
      tf_same_padding(child)


def features(network, x):
  return {k: v.permute(0, 2, 3, 1).numpy() for k, v in resnet_levels(network, x).items()}


torch.manual_seed(0)
network = getattr(torchvision.models, arch)(weights=None).eval()
with torch.no_grad():  # BN away from its initial values, so a misplaced tensor shows
  for module in network.modules():
    if isinstance(module, nn.BatchNorm2d):
      module.weight.uniform_(0.5, 1.0)
      module.bias.normal_(0.0, 0.1)
      module.running_mean.normal_(0.0, 0.1)
      module.running_var.uniform_(0.5, 1.5)
state = network.state_dict()
if wrap == 'moco':  # as MoCo (and DetCo, built on it) save: query and key encoders, a queue
  key_encoder = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
  state = {'epoch': 200, 'arch': arch, 'state_dict': {
      **{f'module.encoder_q.{k}': v for k, v in state.items()},
      **{f'module.encoder_k.{k}': v for k, v in key_encoder.items()},
      'module.queue': torch.zeros(128, 16)}}
torch.save(state, file_path)
x = torch.from_numpy(np.load(images_path)).permute(0, 3, 1, 2)
own = features(network, x)
tf_same_padding(network)
same = features(network, x)
np.savez(features_path, **{f'own_{k}': v for k, v in own.items()},
         **{f'same_{k}': v for k, v in same.items()})
'''


def torchvision_file(directory, arch: str, wrap: str):
  """torchvision's own `arch` with random weights and BN statistics, saved (as MoCo saves it, or
  a plain state dict), and its res2-res5 features on `images()` with its own padding and with
  TF's."""
  if importlib.util.find_spec('torchvision') is None:  # not imported here: see above
    pytest.skip('torchvision is not installed')
  np.save(directory / 'images.npy', normalized(images()))
  path, feature_path = directory / f'{arch}.pth.tar', directory / 'features.npz'
  result = subprocess.run([sys.executable, '-c', TORCHVISION_SCRIPT, arch, wrap,
                           str(directory / 'images.npy'), str(path), str(feature_path)],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  saved = np.load(feature_path)
  own = {k[len('own_'):]: saved[k] for k in saved.files if k.startswith('own_')}
  same = {k[len('same_'):]: saved[k] for k in saved.files if k.startswith('same_')}
  return str(path), own, same


@pytest.fixture(scope='module')
def torchvision_release(tmp_path_factory):
  return torchvision_file(tmp_path_factory.mktemp('torch'), 'resnet50', 'moco')


def test_torchvision_state_dict_imports_exactly_up_to_padding(torchvision_release, tmp_path):
  path, own, same = torchvision_release
  out = importer.run('torchvision', path, str(tmp_path / 'mocov2'))
  metadata = json.loads((tmp_path / 'mocov2' / 'metadata.json').read_text())
  assert metadata['source']['scope'] == 'state_dict.module.encoder_q.'
  assert 'state_dict.module.encoder_k' in metadata['source']['not_imported']
  ours = imported_features(out, images())
  # With TF's padding, torchvision's network computes what ours does: the mapping is exact.
  exact = {level: relative_error(ours[level], same[level]) for level in same}
  assert max(exact.values()) < 1e-4, exact
  # With its own (symmetric) padding it does not; the figure docs/reference.md reports.
  shifted = {level: relative_error(ours[level], own[level]) for level in own}
  cosine = {level: float(np.sum(ours[level] * own[level]) / (
      np.linalg.norm(ours[level]) * np.linalg.norm(own[level]))) for level in own}
  print('torchvision -> Model Garden, max |difference| / max |feature|:', shifted,
        'cosine:', cosine)
  assert min(shifted.values()) > 1e-3  # the padding difference is real, not hidden


def test_symmetric_padding_gives_the_pytorch_networks_own_features(torchvision_release,
                                                                   tmp_path, caplog):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests.test_transfer import maskrcnn_params  # pylint: disable=g-import-not-at-top
  from tf_detcon.finetuning import transfer  # pylint: disable=g-import-not-at-top
  path, own, _ = torchvision_release
  out = importer.run('torchvision', path, str(tmp_path / 'sym'), padding='symmetric')
  ours = imported_features(out, images())  # evaluate.py's and visualize.py's path
  errors = {level: relative_error(ours[level], own[level]) for level in own}
  print('torchvision -> Model Garden with --padding=symmetric:', errors)
  assert max(errors.values()) < 1e-4, errors
  served = tf.saved_model.load(os.path.join(out, 'saved_model')).signatures['serving_default']
  level_3 = served(images=tf.constant(images()))['level_3'].numpy()
  assert relative_error(level_3, own['3']) < 1e-4
  # Model Garden's ResNet pads as TF does: fine-tuning says so.
  params = maskrcnn_params(backbone={'type': 'resnet', 'resnet': {'model_id': 50,
                                                                  'depth_multiplier': 1.0}})
  with caplog.at_level('WARNING'):
    transfer.resolve_init_checkpoint(params, out)
  assert "imported with PyTorch's symmetric padding" in caplog.text


def detectron2_names(state: dict, prefix: str = 'module.encoder_q.') -> dict:
  """The encoder under `prefix` of a torchvision-layout state dict, renamed as MoCo's
  convert-pretrain-to-detectron2.py renames it (fc dropped)."""
  renamed = {}
  for key, value in state.items():
    if not key.startswith(prefix) or key.startswith(prefix + 'fc'):
      continue
    key = key[len(prefix):]
    if key.startswith('conv1.'):
      key = 'stem.conv1.' + key[len('conv1.'):]
    elif key.startswith('bn1.'):
      key = 'stem.conv1.norm.' + key[len('bn1.'):]
    else:
      layer, block, rest = key.split('.', 2)
      stage = f'res{int(layer[len("layer"):]) + 1}'
      rest = rest.replace('downsample.0', 'shortcut').replace('downsample.1', 'shortcut.norm')
      for i in '123':
        rest = rest.replace(f'bn{i}.', f'conv{i}.norm.')
      key = f'{stage}.{block}.{rest}'
    renamed[key] = value
  return renamed


def test_torchvision_detectron2_layout_and_backbone_prefix(torchvision_release, tmp_path):
  torch = pytest.importorskip('torch')
  path, _, same = torchvision_release
  state = torch.load(path, weights_only=True)['state_dict']
  renamed = {f'backbone.bottom_up.{k}': v for k, v in detectron2_names(state).items()}
  converted = tmp_path / 'detectron2.pth'
  torch.save({'model': renamed}, converted)
  out = importer.run('torchvision', str(converted), str(tmp_path / 'd2'))
  ours = imported_features(out, images())
  assert relative_error(ours['4'], same['4']) < 1e-4


def test_a_training_file_with_its_argparse_settings_imports(torchvision_release, tmp_path):
  """PixPro's layout: {'opt': argparse Namespace, 'model': {'module.encoder.*',
  'module.encoder_k.*', heads}, 'epoch'}. The Namespace is admitted (nothing else is), and the
  trained encoder is told from its momentum twin 'encoder_k' without --source_scope."""
  torch = pytest.importorskip('torch')
  path, _, same = torchvision_release
  state = torch.load(path, weights_only=True)['state_dict']
  model = {key.replace('module.encoder_q.', 'module.encoder.'): value
           for key, value in state.items() if key != 'module.queue'}
  model['module.projector.linear1.weight'] = torch.zeros(8, 2048, 1, 1)
  pixpro = tmp_path / 'pixpro_base_r50_100ep.pth'
  torch.save({'opt': argparse.Namespace(arch='resnet50', pixpro_p=2.0, pixpro_pos_ratio=0.7),
              'model': model, 'optimizer': {'state': {}}, 'epoch': 100}, pixpro)
  out = importer.run('torchvision', str(pixpro), str(tmp_path / 'pixpro'))
  metadata = json.loads((tmp_path / 'pixpro' / 'metadata.json').read_text())
  assert metadata['source']['scope'] == 'model.module.encoder.'
  assert 'model.module.encoder_k' in metadata['source']['not_imported']
  ours = imported_features(out, images())
  assert relative_error(ours['5'], same['5']) < 1e-4


@pytest.fixture(scope='module')
def detco_release(torchvision_release, tmp_path_factory):
  """A file in the layout of DetCo's release: a pickle of {'model': {detectron2 name: numpy
  array}, '__author__', 'matching_heuristics': True}, of torchvision's network."""
  torch = pytest.importorskip('torch')
  path, own, same = torchvision_release
  state = torch.load(path, weights_only=True)['state_dict']
  model = {k: v.numpy() for k, v in detectron2_names(state).items()}
  out = tmp_path_factory.mktemp('detco') / 'detco_200ep.pkl'
  with open(out, 'wb') as f:
    pickle.dump({'model': model, '__author__': 'MOCO', 'matching_heuristics': True}, f)
  return str(out), own, same


def test_a_detectron2_pickle_imports_exactly_up_to_padding(detco_release, tmp_path):
  """DetCo's release format: read only with --allow_pickle, numpy arrays only, and the network
  computes torchvision's (given TF's padding; with --padding=symmetric, its own)."""
  path, own, same = detco_release
  with pytest.raises(ValueError, match=r'is a pickle \(--format=detectron2\), and reading a '
                     r'pickle can run code'):
    importer.run('detectron2', path, str(tmp_path / 'refused'))
  assert not (tmp_path / 'refused').exists()
  out = importer.run('detectron2', path, str(tmp_path / 'detco'), allow_pickle=True)
  ours = imported_features(out, images())
  errors = {level: relative_error(ours[level], same[level]) for level in same}
  assert max(errors.values()) < 1e-4, errors
  symmetric = importer.run('detectron2', path, str(tmp_path / 'sym'), allow_pickle=True,
                           padding='symmetric')
  ours = imported_features(symmetric, images())
  errors = {level: relative_error(ours[level], own[level]) for level in own}
  assert max(errors.values()) < 1e-4, errors


class _Shell:
  def __reduce__(self):
    return (os.system, ('touch pwned',))


@pytest.mark.parametrize('damage,message', [
    ('code', r'holds Python objects besides numpy arrays and plain containers \(it names '
             r'(posix|os)\.system\); it is not read'),
    ('truncate', 'truncated or corrupt'),
    ('npy', r'is a \.npy file, not a detectron2 \.pkl: use --format=haiku'),
    ('list', 'holds a list, not a dict of weights'),
    ('no_resnet', 'holds no ResNet in torchvision or detectron2 layout'),
])
def test_bad_detectron2_pickles_are_one_line_and_run_nothing(damage, message, tmp_path,
                                                            monkeypatch):
  monkeypatch.chdir(tmp_path)
  bad = tmp_path / 'bad.pkl'
  content = {'code': {'model': {'stem.conv1.weight': _Shell()}},
             'list': [np.zeros(3)], 'no_resnet': {'model': {'head.weight': np.zeros((2, 2))}},
             'truncate': {'model': {'stem.conv1.weight': np.zeros((64, 3, 7, 7), np.float32)}},
             'npy': None}[damage]
  if damage == 'npy':
    bad = tmp_path / 'bad.npy'
    np.save(bad, np.zeros(3))
  else:
    data = pickle.dumps(content)
    bad.write_bytes(data[:len(data) // 2] if damage == 'truncate' else data)
  with pytest.raises(ValueError, match=message):
    importer.run('detectron2', str(bad), str(tmp_path / 'out'), allow_pickle=True)
  assert not (tmp_path / 'pwned').exists() and not (tmp_path / 'out').exists()


def _densecl_file(encoder, torch):
  """OpenSelfSup's DenseCL training file: encoder_q = (backbone, neck), its momentum copy, and
  `backbone` the same module as encoder_q.0, so its tensors appear twice."""
  key = {k: v + 1.0 if v.is_floating_point() else v for k, v in encoder.items()}
  return {'meta': {'epoch': 200}, 'state_dict': {
      **{f'encoder_q.0.{k}': v for k, v in encoder.items()},
      **{f'encoder_k.0.{k}': v for k, v in key.items()},
      **{f'backbone.{k}': v for k, v in encoder.items()},
      'encoder_q.1.mlp.0.weight': torch.zeros(8, 2048), 'queue': torch.zeros(128, 8)}}


def _soco_file(encoder, torch):
  """SoCo's training file: the online `encoder` and its momentum twin `encoder_k`, the FPN
  `neck` (mmdetection's layout) and box `head`, and an EMA copy under `model_ema`."""
  key = {k: v + 1.0 if v.is_floating_point() else v for k, v in encoder.items()}
  return {'model': {**{f'module.encoder.{k}': v for k, v in encoder.items()},
                    **{f'module.encoder_k.{k}': v for k, v in key.items()},
                    'module.neck.lateral_convs.0.conv.weight': torch.zeros(256, 256, 1, 1),
                    'module.head.fc1.weight': torch.zeros(8, 8)},
          'model_ema': {f'encoder.{k}': v + 2.0 if v.is_floating_point() else v
                        for k, v in encoder.items()}, 'epoch': 100}


def _slotcon_file(encoder, torch):
  """SlotCon's training file: student `encoder_q`, teacher `encoder_k` (the one transferred),
  the teacher's grouping slots and projector, and its argparse settings."""
  student = {k: v + 1.0 if v.is_floating_point() else v for k, v in encoder.items()}
  return {'model': {**{f'module.encoder_q.{k}': v for k, v in student.items()},
                    **{f'module.encoder_k.{k}': v for k, v in encoder.items()},
                    'module.grouping_k.slot_embed.weight': torch.zeros(256, 8),
                    'module.projector_k.mlp.0.weight': torch.zeros(8, 2048, 1, 1)},
          'args': argparse.Namespace(arch='resnet50', teacher_momentum=0.99), 'epoch': 800}


@pytest.mark.parametrize('wrap, scope', [(_densecl_file, 'state_dict.encoder_q.0.'),
                                         (_soco_file, 'model.module.encoder.'),
                                         (_slotcon_file, 'model.module.encoder_k.')])
def test_dense_ssl_training_files_give_the_encoder_their_authors_transfer(
    wrap, scope, torchvision_release, tmp_path):
  torch = pytest.importorskip('torch')
  path, _, same = torchvision_release
  state = torch.load(path, weights_only=True)['state_dict']
  encoder = {k[len('module.encoder_q.'):]: v for k, v in state.items()
             if k.startswith('module.encoder_q.') and not k.startswith('module.encoder_q.fc')}
  release = tmp_path / 'release.pth'
  torch.save(wrap(encoder, torch), release)
  out = importer.run('torchvision', str(release), str(tmp_path / 'import'))
  metadata = json.loads((tmp_path / 'import' / 'metadata.json').read_text())
  assert metadata['source']['scope'] == scope
  ours = imported_features(out, images())
  assert max(relative_error(ours[k], same[k]) for k in same) < 1e-4


def test_torchvision_resnet18_gets_an_identity_shortcut_where_it_has_none(tmp_path):
  path, _, same = torchvision_file(tmp_path, 'resnet18', 'plain')
  out = importer.run('torchvision', path, str(tmp_path / 'r18'))
  metadata = json.loads((tmp_path / 'r18' / 'metadata.json').read_text())
  assert metadata['source']['model_id'] == 18
  assert metadata['source']['identity_shortcuts'] == ['g0/b0']
  assert metadata['source']['not_imported'] == ['fc']
  ours = imported_features(out, images())
  assert max(relative_error(ours[k], same[k]) for k in same) < 1e-4


@pytest.mark.parametrize('damage, message', [
    ('truncate', 'truncated or corrupt'),
    ('code', 'besides tensors and plain containers; it is not read'),
    ('no_resnet', 'holds no ResNet in torchvision or detectron2 layout'),
    ('two', "holds 2 ResNets \\('a.', 'b.'\\): choose one with --source_scope"),
    ('npy', 'is a .npy file, not a PyTorch file'),
])
def test_bad_pytorch_files_are_one_line(torchvision_release, tmp_path, damage, message):
  torch = pytest.importorskip('torch')
  bad = tmp_path / 'bad.pth'
  if damage == 'truncate':
    data = open(torchvision_release[0], 'rb').read()
    bad.write_bytes(data[:len(data) // 3])
  elif damage == 'code':
    torch.save({'model': torch.nn.Linear(2, 2)}, bad)  # a pickled module, not a state dict
  elif damage == 'no_resnet':
    torch.save({'linear.weight': torch.zeros(2, 2)}, bad)
  elif damage == 'two':
    stem = torch.zeros(64, 3, 7, 7)
    torch.save({'a.conv1.weight': stem, 'b.conv1.weight': stem}, bad)
  else:
    with open(bad, 'wb') as f:
      np.save(f, np.zeros(3))
  with pytest.raises(ValueError, match=message):
    importer.run('torchvision', str(bad), str(tmp_path / 'out'))


@pytest.mark.parametrize('blocked', ['jax', 'haiku'])
def test_a_release_whose_objects_need_a_missing_framework_names_the_extra(blocked, tmp_path):
  """A .npy whose pickled objects are jax arrays or haiku mappings, read where that framework is
  not installed (blocked in a fresh process), is named as such, not "truncated or corrupt"."""
  jax = pytest.importorskip('jax')
  haiku = pytest.importorskip('haiku')
  value = ({'w': jax.numpy.zeros(2)} if blocked == 'jax' else
           haiku.data_structures.to_immutable_dict({'conv': {'w': np.zeros(2)}}))
  path = tmp_path / f'{blocked}.npy'
  array = np.empty((), dtype=object)
  array[()] = {'params': value}
  np.save(path, array, allow_pickle=True)
  code = ('import sys; sys.modules.update({m: None for m in sys.argv[2].split(",")});'
          'from tf_detcon.weights import haiku_npy\n'
          'try: haiku_npy.load_pickled_dict(sys.argv[1], True)\n'
          'except ValueError as e: print(e)')
  blocked_modules = 'jax,jaxlib' if blocked == 'jax' else 'haiku'
  result = subprocess.run([sys.executable, '-c', code, str(path), blocked_modules],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.stdout.strip() == (
      f"--input {str(path)!r} holds {blocked} objects, and {blocked} is not installed: "
      "pip install -e '.[import]' (jax and haiku)"), result.stderr[-2000:]


# ---------------------------------------------------------------------------------- the launcher


def launch(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'import_weights.py'), *args],
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


def test_launcher_imports_then_reruns_quietly_and_keeps_another_import_out(haiku_release,
                                                                           torchvision_release,
                                                                           tmp_path):
  out = str(tmp_path / 'weights')
  first = launch('--format=haiku', f'--input={haiku_release[0]}', f'--output_dir={out}',
                 '--allow_pickle', '--model_id=50')
  assert first.returncode == 0, first.stderr[-2000:]
  assert 'imported the ResNet-50' in first.stdout
  stamp = os.path.getmtime(os.path.join(out, 'metadata.json'))
  again = launch('--format=haiku', f'--input={haiku_release[0]}', f'--output_dir={out}',
                 '--allow_pickle')
  assert again.returncode == 0 and 'nothing to do' in again.stdout
  assert os.path.getmtime(os.path.join(out, 'metadata.json')) == stamp
  other = launch('--format=torchvision', f'--input={torchvision_release[0]}',
                 f'--output_dir={out}')
  assert other.returncode == 1
  lines = other.stderr.strip().splitlines()
  assert 'Traceback' not in other.stderr
  assert lines[-1].startswith('import_weights.py: error: --output_dir') and (
      'already holds an import of' in lines[-1])


def test_model_gardens_mask_rcnn_loads_every_imported_tensor_by_value(haiku_release, tmp_path):
  """The same check as for our own exports (test_transfer.py): Model Garden's task, pointed at
  the import by launch/finetune.py's resolution, restores every backbone variable and, with the
  source's BN epsilon (haiku's 1e-5, not Mask R-CNN's 1e-4), computes the imported function."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from official.core import task_factory  # pylint: disable=g-import-not-at-top
  from tf_detcon.finetuning import transfer  # pylint: disable=g-import-not-at-top
  from tf_detcon.modeling.blocks import encoders  # pylint: disable=g-import-not-at-top
  path, params_tree, _, _ = haiku_release
  out = importer.run('haiku', path, str(tmp_path / 'detcon_b'), allow_pickle=True)
  from tests.test_transfer import _function_params  # pylint: disable=g-import-not-at-top
  params = _function_params('maskrcnn_resnetfpn_coco')  # Model Garden's ResNet-50, epsilon 1e-4
  transfer.resolve_init_checkpoint(params, out)
  assert params.task.init_checkpoint_modules == 'backbone'
  assert params.task.model.norm_activation.norm_epsilon == 1e-5
  task = task_factory.get_task(params.task)
  model = task.build_model()
  task.initialize(model)
  imported = encoders.build_backbone(importer.encoder_config(50, 1e-5))
  tf.train.Checkpoint(backbone=imported).read(
      tf.train.latest_checkpoint(os.path.join(out, 'checkpoint'))).assert_existing_objects_matched()
  assert len(model.backbone.weights) == len(imported.weights) == 265  # 53 convolutions, 53 BNs of 4
  for loaded, saved in zip(model.backbone.weights, imported.weights):
    np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=loaded.name)
  stem = params_tree['res_net50/~/initial_conv']['w']
  np.testing.assert_array_equal(model.backbone.weights[0].numpy(), stem)
  images = tf.random.stateless_uniform([1, 64, 64, 3], seed=[1, 2])
  mine, theirs = model.backbone(images, training=False), imported(images, training=False)
  errors = {level: relative_error(mine[level].numpy(), theirs[level].numpy())
            for level in theirs}
  assert max(errors.values()) < 1e-5, errors  # float32 rounding of a ResNet-50
