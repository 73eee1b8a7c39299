"""Shared fixtures: two logical CPU devices (for MirroredStrategy), a per-run cache, tiny data."""

import atexit
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# As every launcher sets it (console.start_launcher): `tf.keras` is tf_keras, Keras 3 not imported.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
# The embedded dataset is built once per test run, in a fresh directory (no stale caches),
# removed when the process ends.
os.environ['TF_DETCON_CACHE'] = tempfile.mkdtemp(prefix='tf_detcon_test_cache_')
atexit.register(shutil.rmtree, os.environ['TF_DETCON_CACHE'], ignore_errors=True)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_LOGICAL_CPUS = 2
_cpus = tf.config.list_physical_devices('CPU')
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_pretrain(*args: str, **popen) -> subprocess.Popen:
  """launch/pretrain.py in a fresh process, its stdout and stderr piped as text."""
  popen.setdefault('env', dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  popen.setdefault('stdout', subprocess.PIPE)
  popen.setdefault('stderr', subprocess.PIPE)
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO_ROOT, 'launch', 'pretrain.py'), *args], text=True,
      **popen)


def run_pretrain(*args: str, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
  """launch/pretrain.py run to its end."""
  process = start_pretrain(*args, **popen)
  try:
    out, err = process.communicate(timeout=timeout)
  finally:
    process.kill()
  return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# Overrides for a run that only a signal ends: one step per loop, a line per step, no saves.
ENDLESS_RUN = ('trainer.train_steps=100000,trainer.steps_per_loop=1,'
               'trainer.checkpoint_interval=100000,trainer.summary_interval=0,'
               'task.log_every_steps=1')


def sigterm_at_line(process: subprocess.Popen, prefix: str = 'step 3/'):
  """Sends SIGTERM once stdout reaches a line starting with `prefix`; returns the rest of
  stdout and stderr after the process ends."""
  try:
    until_line(process, prefix)
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=120)
  finally:
    process.kill()


def until_line(process: subprocess.Popen, prefix: str) -> None:
  """Reads the process's stdout up to a line starting with `prefix`."""
  for line in process.stdout:
    if line.startswith(prefix):
      return
  raise AssertionError(f'no line {prefix!r}: {process.stderr.read()[-2000:]}')


def batch_origin(batch_size: int, first: int = 0) -> dict:
  """The position and pipeline keys of a hand-made batch, as the input pipeline adds them."""
  return {'position': np.arange(first, first + batch_size, dtype=np.int64),
          'pipeline': np.zeros([batch_size], np.int32)}


def palette(num: int) -> np.ndarray:
  """`num` well-separated uint8 RGB colours (a coarse lattice of the RGB cube)."""
  levels = np.array([20, 85, 150, 215])
  grid = np.stack(np.meshgrid(levels, levels, levels, indexing='ij'), -1).reshape(-1, 3)
  if num > len(grid):
    raise ValueError('too many colours')
  rng = np.random.default_rng(0)
  return grid[rng.permutation(len(grid))[:num]].astype(np.uint8)


def blocky_ids(height: int, width: int, num_ids: int, block: int, seed: int = 0) -> np.ndarray:
  """A random id map made of block×block squares (ids 0..num_ids-1)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, num_ids, size=(-(-height // block), -(-width // block)))
  return np.kron(coarse, np.ones((block, block), np.int64))[:height, :width]


@pytest.fixture(scope='session')
def embedded_files():
  from tf_detcon.data.offline import build_embedded  # pylint: disable=g-import-not-at-top
  return build_embedded.ensure()


def tiny_params(name: str = 'detcon_b_tiny', **trainer):
  """A registered tiny experiment with trainer overrides (few steps), one step per loop as the
  tiny experiments run (test_execution_settings_compile_as_configured runs loops of more)."""
  from official.core import exp_factory  # pylint: disable=g-import-not-at-top
  from tf_detcon.configs import experiments  # pylint: disable=g-import-not-at-top,unused-import
  params = exp_factory.get_exp_config(name)
  params.override({'trainer': dict(dict(train_steps=4, steps_per_loop=1,
                                        checkpoint_interval=2), **trainer)}, is_strict=True)
  return params


def method_types() -> list:
  """The package's methods: the blocks of the `task.method` one-of."""
  from tf_detcon.configs import methods  # pylint: disable=g-import-not-at-top
  return sorted(field.name for field in dataclasses.fields(methods.MethodConfig)
                if field.name != 'type')


def method_kinds(experiment: str) -> list:
  """The method types a registered experiment trains: its own, then its base's, if any
  (`trainer.method_blocks`)."""
  from official.core import exp_factory  # pylint: disable=g-import-not-at-top
  from tf_detcon.training import trainer  # pylint: disable=g-import-not-at-top
  return [kind for kind, _ in trainer.method_blocks(
      exp_factory.get_exp_config(experiment).task.method.as_dict())]


def tinies_covering_every_method(required: Sequence[str] = ()) -> list:
  """The `_tiny` experiments a compile-heavy per-method check runs: `required` first, then, while
  a method of the registry is not yet trained by one of them, the one that trains most of the
  untrained methods (then fewest trained ones again, one named after its method, the shortest
  name).

  A composed method's step runs its base's step whole (DeCon on DetCo computes DetCo's objective
  and updates its queues), so decon_ml_detco_tiny covers DeCon and DetCo, and detcon_b_tiny the
  rest: every method's step is compiled once per check, not once per method and composition."""
  from official.core import exp_factory  # pylint: disable=g-import-not-at-top
  from tf_detcon import registry_imports  # pylint: disable=g-import-not-at-top,unused-import
  kinds = {n: method_kinds(n)
           for n in exp_factory._REGISTERED_CONFIGS if n.endswith('_tiny')}  # pylint: disable=protected-access
  chosen = list(required)
  untrained = set(method_types()).difference(*(kinds[name] for name in chosen))
  while untrained:
    best = max(sorted(kinds), key=lambda n: (len(untrained.intersection(kinds[n])),
                                             -len(set(kinds[n]) - untrained),
                                             n.startswith(kinds[n][0]), -len(n)))
    if not untrained.intersection(kinds[best]):
      raise AssertionError(f'no _tiny experiment trains {sorted(untrained)}')
    chosen.append(best)
    untrained -= set(kinds[best])
  return chosen


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory, embedded_files):
  """DetCon_B tiny, trained 4 steps on the embedded data and exported: built once per run."""
  del embedded_files
  from tf_detcon.training import trainer  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path_factory.mktemp('tiny_run'))
  run = trainer.Run(tiny_params(), model_dir)
  run.train()
  run.export()
  return run


@pytest.fixture(scope='session')
def two_replicas():
  """One MirroredStrategy over the two logical CPUs for the whole run: separate instances in
  one process can collide on collective-op instance keys."""
  return tf.distribute.MirroredStrategy(
      [d.name for d in tf.config.list_logical_devices('CPU')[:NUM_LOGICAL_CPUS]])


def write_tiny_coco(root: str, num_images: int = 4, size: int = 128, seed: int = 0) -> str:
  """Synthetic COCO-format images (rectangles of 3 categories, polygon masks); returns the
  annotation JSON path."""
  import json  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, 'images'), exist_ok=True)
  images, annotations = [], []
  colours = palette(4)
  for image_id in range(1, num_images + 1):
    pixels = np.tile(colours[0], (size, size, 1))
    for _ in range(2):
      x0, y0 = rng.integers(0, size // 2, 2)
      w, h = rng.integers(size // 8, size // 2, 2)
      category = int(rng.integers(1, 4))
      pixels[y0:y0 + h, x0:x0 + w] = colours[category]
      annotations.append({
          'id': len(annotations) + 1, 'image_id': image_id, 'category_id': category,
          'iscrowd': 0, 'area': float(w * h), 'bbox': [float(x0), float(y0), float(w), float(h)],
          'segmentation': [[float(x0), float(y0), float(x0 + w), float(y0), float(x0 + w),
                            float(y0 + h), float(x0), float(y0 + h)]]})
    name = f'{image_id:04d}.jpg'
    Image.fromarray(pixels).save(os.path.join(root, 'images', name), quality=95)
    images.append({'id': image_id, 'file_name': name, 'height': size, 'width': size})
  path = os.path.join(root, 'instances.json')
  with open(path, 'w') as f:
    json.dump({'images': images, 'annotations': annotations,
               'categories': [{'id': i, 'name': f'c{i}'} for i in (1, 2, 3)]}, f)
  return path


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
  """Model Garden detection TFRecords of a synthetic COCO set, made with Model Garden's own
  converter (official/vision/data/create_coco_tf_record.py)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp('tiny_coco'))
  annotations = write_tiny_coco(root)
  result = subprocess.run(
      [sys.executable, '-m', 'official.vision.data.create_coco_tf_record',
       f'--image_dir={root}/images', f'--object_annotations_file={annotations}',
       f'--output_file_prefix={root}/records/coco', '--num_shards=1', '--include_masks'],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr[-3000:]
  return os.path.join(root, 'records', 'coco*')


@pytest.fixture(scope='session')
def tiny_decon_run(tmp_path_factory, embedded_files):
  """DeCon-SL on DetCon_B tiny, 2 steps on the embedded data, exported: built once per run."""
  del embedded_files
  from tf_detcon.training import trainer  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path_factory.mktemp('tiny_decon_run'))
  run = trainer.Run(tiny_params('decon_sl_detcon_b_tiny', train_steps=2), model_dir)
  run.train()
  run.export()
  return run
