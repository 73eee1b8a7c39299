"""KerasHub presets (tf_detcon/keras3, launch/export_keras.py): a preset loaded as a user loads
it, on the JAX and the TensorFlow backend, each in a process of its own, computes the features
of the network it came from. Two references, neither our Keras 3 code: Model Garden's ResNet and
FPN restored from a DeCon export (random weights and BN statistics, swish, ε 1e-3), and
torchvision's own ResNet-50 for an import that becomes KerasHub's ResNetBackbone."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.test_weights import images, relative_error, torchvision_file
from tf_detcon.evaluation import frozen
from tf_detcon.exports import manifest
from tf_detcon.keras3 import preset
from tf_detcon.training import export
from tf_detcon.weights import importer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What README's Keras 3 snippet does: load the preset and its image converter, run the pyramid.
LOAD_SCRIPT = r'''
import json, sys
import numpy as np
import keras, keras_hub
import tf_detcon.keras3
images = np.load(sys.argv[1])
out = {}
for name, path in json.loads(sys.argv[2]).items():
  backbone = keras_hub.models.Backbone.from_preset(path)
  convert = keras_hub.layers.ImageConverter.from_preset(path)
  levels = dict(backbone.pyramid_outputs)
  levels.update({'p' + k[1:]: v for k, v in getattr(backbone, 'decoder_outputs', {}).items()})
  model = keras.Model(backbone.inputs, levels)
  for level, value in model(convert(images.astype('float32')), training=False).items():
    out[f'{name}/{level.removeprefix("P")}'] = keras.ops.convert_to_numpy(value)
  out[f'{name}/class'] = np.array(type(backbone).__name__)
np.savez(sys.argv[3], **out)
'''


def _randomized(modules, rng):
  """Every weight of the Model Garden modules at random, BN statistics included, so that a
  misplaced tensor changes the features."""
  for module in modules:
    for variable in module.weights:
      name, shape = variable.name, variable.shape
      if 'moving_variance' in name:
        value = rng.uniform(0.5, 1.5, shape)
      elif 'gamma' in name:
        value = rng.uniform(0.5, 1.0, shape)
      elif len(shape) == 4:
        value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
      else:
        value = rng.normal(0.0, 0.1, shape)
      variable.assign(value.astype(np.float32))


@pytest.fixture(scope='module')
def exports(tiny_decon_run, tmp_path_factory):
  """{'decon': a DeCon export with random weights, swish and ε 1e-3; 'r50': a torchvision
  ResNet-50 imported with PyTorch's padding} and torchvision's own features of the latter."""
  root = tmp_path_factory.mktemp('keras3')
  metadata, backbone, decoder = frozen.modules_from_export(
      os.path.join(tiny_decon_run.model_dir, 'export'))
  _randomized([backbone, decoder], np.random.default_rng(0))
  config = json.loads(json.dumps(metadata.config))
  config['task']['encoder']['norm_activation'].update(activation='swish', norm_epsilon=1e-3)
  decon = export.write(str(root / 'decon'), {'backbone': backbone, 'decoder': decoder},
                       dataclasses.replace(metadata, config=config, network={}))
  path, own, _ = torchvision_file(root, 'resnet50', 'plain')
  r50 = importer.run('torchvision', path, str(root / 'r50'), padding='symmetric')
  return {'decon': decon, 'r50': r50}, own


def test_presets_compute_the_source_networks_features_on_jax_and_tensorflow(exports, tmp_path):
  """Both presets, loaded on each backend in a process of its own (one module-scoped fixture
  for both backends, so that the exports are built once)."""
  paths, own = exports
  presets = {}
  for name, path in paths.items():
    presets[name] = str(tmp_path / name)
    chosen, errors = preset.write(path, presets[name], ())  # checked here, on two backends
    assert errors == {}
    assert chosen.class_name == {'decon': 'DenseResNetBackbone', 'r50': 'ResNetBackbone'}[name]
  batch = images()
  np.save(tmp_path / 'images.npy', batch)
  want = {k: v.numpy() for k, v in frozen.from_export(paths['decon'])(batch).items()}
  for backend in ('jax', 'tensorflow'):
    result = subprocess.run(
        [sys.executable, '-c', LOAD_SCRIPT, str(tmp_path / 'images.npy'), json.dumps(presets),
         str(tmp_path / f'{backend}.npz')], capture_output=True, text=True, timeout=600,
        env=dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL='3',
                 JAX_PLATFORMS='cpu'))
    assert result.returncode == 0, result.stderr[-3000:]
    got = dict(np.load(tmp_path / f'{backend}.npz'))
    assert str(got['r50/class']) == 'ResNetBackbone'  # KerasHub's own class, no code of ours
    assert str(got['decon/class']) == 'DenseResNetBackbone'
    # DeCon: Model Garden's ResNet and FPN, restored from the export, level by level.
    assert sorted(want) == sorted(k.split('/')[1] for k in got if k.startswith('decon/')
                                  and not k.endswith('class'))
    errors = {level: relative_error(got[f'decon/{level}'], want[level]) for level in want}
    print(f'{backend}: DeCon export (Model Garden ResNet-10 + FPN) -> DenseResNetBackbone:',
          {k: f'{v:.1e}' for k, v in errors.items()})
    assert max(errors.values()) < 1e-4, errors
    # The import: torchvision's own network, with its own padding.
    errors = {level: relative_error(got[f'r50/{level}'], own[level]) for level in own}
    print(f'{backend}: torchvision resnet50 -> import -> ResNetBackbone:',
          {k: f'{v:.1e}' for k, v in errors.items()})
    assert max(errors.values()) < 1e-4, errors


def decon_export(run) -> str:
  return os.path.join(run.model_dir, 'export')


def test_a_preset_that_differs_from_its_export_is_not_written(tiny_decon_run, tmp_path,
                                                              monkeypatch):
  weights = preset.model_garden_weights

  def misplaced(backbone, decoder):  # one kernel of the wrong scale
    out = weights(backbone, decoder)
    out['res3_block0_conv1'] = [out['res3_block0_conv1'][0] * 2.0]
    return out

  monkeypatch.setattr(preset, 'model_garden_weights', misplaced)
  target = tmp_path / 'preset'
  with pytest.raises(ValueError, match=r'differ from the export.s on the tensorflow backend'):
    preset.write(decon_export(tiny_decon_run), str(target))
  assert not target.exists() and not [p for p in os.listdir(tmp_path) if '.tmp-' in p]


def _manifest(run, **network):
  record = manifest.read(decon_export(run))
  function = json.loads(json.dumps(record.function))
  for part, fields in network.items():
    function[part].update(fields)
  return dataclasses.replace(record, network=function)


@pytest.mark.parametrize('part, fields, named', [
    ('backbone', {'type': 'mobilenet'}, "'mobilenet'"),
    ('backbone', {'stem_type': 'v1'}, 'stem_type'),
    ('backbone', {'resnetd_shortcut': True}, 'resnetd_shortcut'),
    ('backbone', {'se_ratio': 0.25}, 'se_ratio'),
    ('backbone', {'replace_stem_max_pool': True}, 'replace_stem_max_pool'),
    ('backbone', {'model_id': 11}, 'model_id'),
    ('norm_activation', {'activation': 'gelu'}, 'activation'),
    ('decoder', {'type': 'aspp'}, "'aspp'"),
])
def test_another_architecture_is_one_line_naming_the_field(tiny_decon_run, part, fields, named):
  with pytest.raises(ValueError, match=named) as raised:
    preset.plan(_manifest(tiny_decon_run, **{part: fields}), 'EXPORT')
  assert '\n' not in str(raised.value) and str(raised.value).startswith('EXPORT: ')


def test_the_plan_keeps_the_exports_function(tiny_decon_run):
  chosen = preset.plan(_manifest(tiny_decon_run, norm_activation={
      'activation': 'swish', 'norm_epsilon': 1e-3}), 'x')
  assert chosen.config['activation'] == 'silu' and chosen.config['norm_epsilon'] == 1e-3
  assert chosen.config['fpn']['min_level'] == 2 and chosen.config['padding'] == 'same'
  # A PyTorch-padded ResNet-50 at ReLU and ε 1e-5 is KerasHub's layout; at another ε it is not.
  r50 = {'model_id': 50, 'depth_multiplier': 1.0, 'scale_stem': True}
  for epsilon, kind in ((1e-5, 'ResNetBackbone'), (1e-3, 'DenseResNetBackbone')):
    other = _manifest(tiny_decon_run, backbone=r50, norm_activation={'norm_epsilon': epsilon})
    other = dataclasses.replace(other, padding='symmetric', init_checkpoint_modules=['backbone'])
    assert preset.plan(other, 'x').class_name == kind


def test_backends_and_output_dir_are_checked_before_any_work(tiny_decon_run, tmp_path,
                                                            monkeypatch):
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'keep.txt').write_text('mine')
  with pytest.raises(ValueError, match='already holds files'):
    preset.write(decon_export(tiny_decon_run), str(tmp_path / 'full'))
  assert (tmp_path / 'full' / 'keep.txt').read_text() == 'mine'
  real = preset.importlib.util.find_spec
  monkeypatch.setattr(preset.importlib.util, 'find_spec',
                      lambda name: None if name == 'jax' else real(name))
  with pytest.raises(ValueError, match=r'--check_backends: the jax backend is not installed'):
    preset.write(decon_export(tiny_decon_run), str(tmp_path / 'new'), ('tensorflow', 'jax'))
  with pytest.raises(ValueError, match=r'--export .* has no checkpoint'):
    preset.write(str(tmp_path / 'full'), str(tmp_path / 'new'))
  monkeypatch.setattr(preset.importlib.util, 'find_spec',
                      lambda name: None if name == 'keras_hub' else real(name))
  with pytest.raises(ValueError, match=r"KerasHub is not installed here: pip install -e '.\[keras\]'"):
    preset.write(decon_export(tiny_decon_run), str(tmp_path / 'new'), ())
  assert not (tmp_path / 'new').exists()


def readme_snippet() -> str:
  """README's Keras 3 snippet (the python block of its 'Keras 3 and KerasHub' section)."""
  with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    section = f.read().split('## Keras 3 and KerasHub', 1)[1].split('\n## ', 1)[0]
  return section.split('```python\n', 1)[1].split('```', 1)[0]


def test_readmes_snippet_fine_tunes_a_tiny_export_on_jax(tiny_run, tmp_path):
  os.makedirs(tmp_path / 'presets')
  _, errors = preset.write(os.path.join(tiny_run.model_dir, 'export'),
                           str(tmp_path / 'presets' / 'photos'))  # the writer's own check
  assert sorted(errors['tensorflow']) == ['2', '3', '4', '5']
  assert max(errors['tensorflow'].values()) < preset.TOLERANCE
  data = ('import numpy as np\n'
          'images = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), np.uint8)\n'
          'labels = np.arange(8) % 10\n')
  check = ('\nimport keras\n'
           'fresh = keras_hub.models.Backbone.from_preset("presets/photos")\n'
           'pairs = list(zip(classifier.backbone.trainable_weights, fresh.trainable_weights))\n'
           'moved = sum(not np.allclose(keras.ops.convert_to_numpy(a), '
           'keras.ops.convert_to_numpy(b)) for a, b in pairs)\n'
           'print(type(classifier).__name__, moved, len(pairs))\n')
  result = subprocess.run([sys.executable, '-c', data + readme_snippet() + check],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=dict(os.environ, KERAS_BACKEND='jax', TF_CPP_MIN_LOG_LEVEL='3',
                                   JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-3000:]
  name, moved, total = result.stdout.strip().splitlines()[-1].split()
  assert name == 'DenseResNetImageClassifier' and int(moved) == int(total) > 0  # fit trained it
