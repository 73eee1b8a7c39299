"""Tests for tf_detcon.data.datasets and the make_masks launcher (end to end on records)."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from tests.conftest import REPO_ROOT, blocky_ids, palette, tiny_params
from tf_detcon.configs import data as data_config
from tf_detcon.data import datasets
from tf_detcon.data import records
from tf_detcon.primitives import seeds
from tf_detcon.data.offline import shards
from tf_detcon.training import trainer


def _config(**overrides) -> data_config.DataConfig:
  cfg = data_config.DataConfig(global_batch_size=4, shuffle_buffer_size=4,
                               **data_config.byol_views(32))
  cfg.override(overrides, is_strict=False)
  return cfg


def test_embedded_batches_have_views_masks_and_patches(embedded_files):
  cfg = _config(color_on_device=False)
  batch = next(iter(datasets.build_dataset(cfg, local_views=data_config.LocalViewConfig())))
  assert batch['view1'].shape == (4, 32, 32, 3) and batch['mask2'].shape == (4, 32, 32)
  assert batch['patches1'].shape == (4, 9, 64, 64, 3)
  assert not {'local1', 'offsets1', 'local2', 'offsets2'} & set(batch)  # became the patches
  assert batch['box1'].shape == (4, 4) and batch['flip2'].dtype == tf.bool
  assert batch['mask1'].dtype == tf.int32 and int(tf.reduce_min(batch['mask1'])) >= 0
  assert float(tf.reduce_min(batch['view1'])) < 0  # normalised


def test_the_pipelines_functions_are_traced_as_written():
  """No autograph rewrite (docs/architecture.md): the same function, handed to tf.data as
  the pipeline hands its own, fails on a tensor used as a Python bool instead of becoming a
  tf.cond, and computes what it says on tensor ops."""
  def sign(x):
    return 1 if x > 0 else -1
  ds = tf.data.Dataset.from_tensor_slices([-2, 3])
  assert [int(v) for v in ds.map(sign)] == [-1, 1]  # autograph's rewrite, for contrast
  plain = datasets._plain  # pylint: disable=protected-access
  with pytest.raises(TypeError, match='as a Python .bool. is not allowed'):
    ds.map(plain(sign))
  assert [int(v) for v in ds.map(plain(lambda x: tf.where(x > 0, 2 * x, x)))] == [-2, 6]


def test_color_on_device_leaves_views_in_unit_range(embedded_files):
  batch = next(iter(datasets.build_dataset(_config(color_on_device=True))))
  assert set(batch) == {'view1', 'mask1', 'box1', 'flip1', 'view2', 'mask2', 'box2', 'flip2',
                        'position', 'pipeline'}
  assert 0 <= float(tf.reduce_min(batch['view1'])) and float(tf.reduce_max(batch['view1'])) <= 1


def test_grid_masks_have_n_squared_ids(embedded_files):
  batch = next(iter(datasets.build_dataset(_config(masks={'type': 'grid', 'grid': {'grid_size': 2}}))))
  assert int(tf.reduce_max(batch['mask1'])) <= 3
  global_batch = next(iter(datasets.build_dataset(_config(masks={'type': 'grid'}))))
  assert int(tf.reduce_max(global_batch['mask1'])) == 0


def test_input_context_shards_files_and_splits_the_batch(embedded_files):
  context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                       num_replicas_in_sync=2)
  batch = next(iter(datasets.build_dataset(_config(), context)))
  assert batch['view1'].shape[0] == 2


def _write_records(path, entries):
  with tf.io.TFRecordWriter(path) as writer:
    for key, image, mask_list in entries:
      def feature(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

      example = {records.IMAGE_KEY: feature([key.encode()]),
                 records.IMAGE_ENCODED: feature([shards.encode_png(image)]),
                 records.MASK_ENCODED: feature([shards.encode_png(m) for m in mask_list])}
      writer.write(tf.train.Example(
          features=tf.train.Features(feature=example)).SerializeToString())


@pytest.fixture
def bad_records(tmp_path):
  image = palette(4)[blocky_ids(40, 40, 4, 10)]
  good_mask = blocky_ids(40, 40, 4, 10).astype(np.uint8)
  path = str(tmp_path / 'mixed.tfrecord')
  _write_records(path, [('good-1', image, [good_mask]),
                        ('mismatched', image, [good_mask[:30]]),
                        ('nomask', image, []),
                        ('good-2', image, [good_mask])])
  return path


@pytest.mark.parametrize('bad_key,message', [('mismatched', 'mask \\[30 40\\] does not match'),
                                             ('nomask', 'record has no mask')])
def test_bad_records_stop_training_naming_the_example(tmp_path, bad_key, message):
  image = palette(4)[blocky_ids(40, 40, 4, 10)]
  mask = blocky_ids(40, 40, 4, 10).astype(np.uint8)
  path = str(tmp_path / f'{bad_key}.tfrecord')
  bad = [mask[:30]] if bad_key == 'mismatched' else []
  _write_records(path, [('ok', image, [mask]), (bad_key, image, bad)])
  cfg = _config(input_path=path, global_batch_size=1, is_training=False)
  with pytest.raises(tf.errors.InvalidArgumentError, match=f'example \\W*{bad_key}\\W*: {message}'):
    list(datasets.build_dataset(cfg))


def test_bad_records_are_skipped_when_configured(bad_records):
  cfg = _config(input_path=bad_records, global_batch_size=1, is_training=False,
                on_bad_example='skip')
  assert len(list(datasets.build_dataset(cfg))) == 2


def test_config_errors_are_clear():
  with pytest.raises(ValueError, match='matches no file'):
    datasets.build_dataset(_config(input_path='/nonexistent/*.tfrecord'))
  with pytest.raises(ValueError, match='on_bad_example'):
    datasets.build_dataset(_config(on_bad_example='ignore'))
  with pytest.raises(ValueError, match='crop_area'):
    datasets.build_dataset(_config(view1={'crop_area_min': 0.0}))
  with pytest.raises(ValueError, match="masks.type must be one of 'stored', 'grid'"):
    datasets.build_dataset(_config(masks={'type': 'superpixels'}))
  with pytest.raises(ValueError, match=r"^task.train_data.masks.grid is set but "
                                       r"task.train_data.masks.type is 'stored': remove it$"):
    datasets.build_dataset(_config(masks={'grid': {'grid_size': 5}}))  # accepted and ignored
  with pytest.raises(ValueError, match=r'^task.train_data.masks.grid.grid_size must be >= 1, '
                                       r'got 0$'):
    datasets.build_dataset(_config(masks={'type': 'grid', 'grid': {'grid_size': 0}}))


def _launch(*args):
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'launch', 'make_masks.py'),
                         *args], capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))


def test_make_masks_launcher_writes_shards_the_pipeline_reads(tmp_path):
  image_dir = tmp_path / 'images'
  image_dir.mkdir()
  for i in range(4):
    Image.fromarray(palette(6)[blocky_ids(48, 64, 6, 8, seed=i)]).save(image_dir / f'{i}.jpg')
  (image_dir / 'broken.jpg').write_bytes(b'\xff\xd8\xff garbage')
  out = tmp_path / 'shards'
  failed = _launch(f'--image_dir={image_dir}', f'--output_dir={out}', '--num_shards=2',
                   '--fh_setting=100:0.5:50')
  assert failed.returncode == 1
  last_line = failed.stderr.strip().splitlines()[-1]
  assert last_line.startswith("make_masks.py: error: example 'broken.jpg': corrupt"), last_line
  done = _launch(f'--image_dir={image_dir}', f'--output_dir={out}', '--num_shards=2',
                 '--fh_setting=100:0.5:50', '--on_bad_example=skip')
  assert done.returncode == 0, done.stderr
  assert 'wrote 4 examples in 2 shards' in done.stdout
  manifest = records.read_manifest(str(out))
  assert manifest['totals']['skipped/corrupt or truncated image'] == 1
  cfg = _config(input_path=str(out / '*.tfrecord'), is_training=False, global_batch_size=2)
  batches = list(datasets.build_dataset(cfg))
  assert len(batches) == 2 and batches[0]['view1'].shape == (2, 32, 32, 3)


def test_make_masks_launcher_rejects_bad_flags_in_one_line(tmp_path):
  result = _launch(f'--output_dir={tmp_path}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'make_masks.py: error: give exactly one input: --image_dir, --tfds_name or '
      '--coco_annotations')


@pytest.mark.parametrize('args,message', [
    (('--fh_downscale=0',), '--fh_downscale must be in (0, 1], got 0.0'),
    (('--mask_kind=file', '--mask_dir=x', '--fh_downscale=0.5'),
     '--fh_downscale applies only with --mask_kind=fh'),
    (('--fh_min_working_side=0',), '--fh_min_working_side must be >= 1, got 0'),
    (('--mask_kind=file', '--mask_dir=x', '--fh_min_working_side=100'),
     '--fh_min_working_side applies only with --mask_kind=fh'),
])
def test_make_masks_checks_the_fh_downscale(tmp_path, args, message):
  (tmp_path / 'images').mkdir()
  Image.fromarray(palette(6)[blocky_ids(48, 64, 6, 8)]).save(tmp_path / 'images' / 'a.jpg')
  result = _launch(f'--image_dir={tmp_path / "images"}', f'--output_dir={tmp_path / "out"}',
                   *args)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == f'make_masks.py: error: {message}'


def test_an_unbuilt_embedded_set_is_a_clear_error_not_a_silent_build(tmp_path, monkeypatch):
  monkeypatch.setenv('TF_DETCON_CACHE', str(tmp_path / 'empty'))
  with pytest.raises(ValueError, match='embedded sample dataset is not built in .*build_embedded'):
    datasets.resolve_files('')



def _identifiable_records(tmp_path, files=2, per_file=4):
  """Record files whose records are their own names: 'f<file>r<record>'."""
  paths = []
  for f in range(files):
    path = str(tmp_path / f'part-{f}.tfrecord')
    with tf.io.TFRecordWriter(path) as writer:
      for r in range(per_file):
        writer.write(f'f{f}r{r}'.encode())
    paths.append(path)
  return paths


def _records(cfg, count=8, context=None, start=0):
  ds = datasets.record_stream(cfg, context, start)
  return [r.decode() for _, r in ds.take(count).as_numpy_iterator()]


def test_record_order_settings(tmp_path):
  """Model Garden's cycle_length / block_length / deterministic interleave, sharding between
  input pipelines, shuffle_buffer_size and seed, on records that name themselves."""
  _identifiable_records(tmp_path)
  base = dict(input_path=str(tmp_path / '*.tfrecord'), deterministic=True, seed=3,
              shuffle_buffer_size=1, cycle_length=2)
  blocks = _records(_config(block_length=2, **base))
  files = [r[:2] for r in blocks]
  assert files[0] == files[1] != files[2] == files[3] != files[4]
  alternating = [r[:2] for r in _records(_config(block_length=1, **base))]
  assert all(a != b for a, b in zip(alternating, alternating[1:]))
  context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                       num_replicas_in_sync=2)
  assert {r[:2] for r in _records(_config(**base), 8, context)} == {'f1'}
  assert {r[:2] for r in _records(_config(sharding=False, **base), 8, context)} == {'f0', 'f1'}
  shuffled = dict(base, shuffle_buffer_size=8)
  first = _records(_config(**shuffled), 16)
  assert first == _records(_config(**shuffled), 16)
  assert first != _records(_config(**dict(shuffled, seed=4)), 16)
  assert sorted(first[:8]) != first[:8] or sorted(first[8:]) != first[8:]


def test_record_stream_restarts_at_any_position(tmp_path):
  """Positions are (epoch, index); the stream started at a position is the uninterrupted
  stream's suffix, across epoch boundaries, with shuffled files and records. Each epoch reads
  every record once, in an order of its own."""
  _identifiable_records(tmp_path, files=3, per_file=3)
  cfg = _config(input_path=str(tmp_path / '*.tfrecord'), deterministic=True, seed=5,
                shuffle_buffer_size=4, cycle_length=2)
  whole = list(datasets.record_stream(cfg).take(30).as_numpy_iterator())
  positions = [int(p) for p, _ in whole]
  assert [seeds.split_position(p) for p in positions[8:11]] == [(0, 8), (1, 0), (1, 1)]
  epochs = [sorted(r for p, r in whole if seeds.split_position(int(p))[0] == e) for e in range(3)]
  assert epochs[0] == epochs[1] == epochs[2] and len(set(epochs[0])) == 9
  orders = [[r for p, r in whole if seeds.split_position(int(p))[0] == e] for e in range(3)]
  assert orders[0] != orders[1] != orders[2]
  for cut in (1, 9, 13, 26):
    resumed = list(datasets.record_stream(cfg, start=positions[cut]).take(30 - cut)
                   .as_numpy_iterator())
    assert resumed == whole[cut:]
  tf.random.set_seed(0)  # the order is keyed by cfg.seed alone, not by TF's global seed
  try:
    assert list(datasets.record_stream(cfg).take(30).as_numpy_iterator()) == whole
  finally:
    tf.random.set_seed(None)


def test_cache_serves_later_epochs_from_memory(tmp_path):
  """With cache, the records stay in memory after the first pass: later epochs still read
  after the files are deleted. Without it, they are read again (and fail)."""
  for cache in (True, False):
    directory = tmp_path / str(cache)
    directory.mkdir()
    paths = _identifiable_records(directory, files=2, per_file=2)
    iterator = iter(datasets.record_stream(_config(input_path=str(directory / '*'),
                                                   cache=cache, shuffle_buffer_size=1)))
    assert sorted(next(iterator)[1].numpy().decode() for _ in range(4)) == [
        'f0r0', 'f0r1', 'f1r0', 'f1r1']
    for path in paths:
      os.remove(path)
    if cache:
      assert len([next(iterator) for _ in range(12)]) == 12
    else:
      with pytest.raises(tf.errors.NotFoundError):
        for _ in range(12):
          next(iterator)


def test_model_garden_dataset_options(embedded_files):
  """deterministic, autotune_algorithm, ram_budget (GiB), prefetch_buffer_size and the runtime's
  dataset_num_private_threads end up in the dataset, as Model Garden's InputReader sets them."""
  del embedded_files
  cfg = _config(deterministic=True, autotune_algorithm='HILL_CLIMB', ram_budget=2,
                prefetch_buffer_size=3)
  ds = datasets.build_dataset(cfg, private_threads=2)
  options = ds.options()
  assert options.deterministic is True
  assert options.autotune.autotune_algorithm == tf.data.experimental.AutotuneAlgorithm.HILL_CLIMB
  assert options.autotune.ram_budget == 2 * 1024**3
  assert options.threading.private_threadpool_size == 2
  assert ds._buffer_size.numpy() == 3  # pylint: disable=protected-access
  assert datasets.build_dataset(_config())._buffer_size.numpy() == tf.data.AUTOTUNE  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="autotune_algorithm must be one of 'DEFAULT'"):
    datasets.build_dataset(_config(autotune_algorithm='FASTEST'))


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  """A prepared TFDS dataset 'grid_scene_images' (8 PNG scenes) in a temporary data_dir."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class GridSceneImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(encoding_format='png')}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      for i in range(8):
        yield i, {'image': palette(5)[blocky_ids(40 + 8 * (i % 2), 48, 5, 8, seed=i)]}

  data_dir = str(tmp_path_factory.mktemp('tfds'))
  GridSceneImages(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_tfds_images_train_grid_mask_methods(tfds_dir, tmp_path, capsys):
  """tfds_name / tfds_split / tfds_data_dir read a TFDS dataset directly, no precompute: grid
  masks for DetCon, the global mask for SimCLR; a 2-step SimCLR run trains on it. Stored masks
  and unprepared datasets are one-line errors saying what to do."""
  source = dict(tfds_name='grid_scene_images', tfds_split='train', tfds_data_dir=tfds_dir)
  # Also under op determinism, which a seeded run earlier in the process leaves on: TFDS's file
  # shuffle is seeded too.
  was_on = tf_config.is_op_determinism_enabled()
  tf.config.experimental.enable_op_determinism()
  try:
    batch = next(iter(datasets.build_dataset(_config(
        masks={'type': 'grid', 'grid': {'grid_size': 2}}, **source))))
  finally:
    if not was_on:
      tf_config.disable_op_determinism()
  assert batch['view1'].shape == (4, 32, 32, 3)
  assert set(np.unique(batch['mask1'].numpy())) <= {0, 1, 2, 3}
  params = tiny_params('simclr_tiny', train_steps=2, steps_per_loop=1)
  params.task.train_data.override(source)
  run = trainer.Run(params, str(tmp_path / 'tfds_run'))
  run.train()
  assert run.step == 2
  assert 'no view summaries' in capsys.readouterr().out  # not the embedded records' views
  with pytest.raises(ValueError, match=r"tfds_name reads images only; masks.type 'stored'.*"
                     'run launch/make_masks.py'):
    datasets.build_dataset(_config(**source))
  with pytest.raises(ValueError, match="'grid_scene_images' is not prepared in .*tfds build"):
    datasets.build_dataset(_config(masks={'type': 'grid'}, **dict(
        source, tfds_data_dir=str(tmp_path / 'empty'))))
  with pytest.raises(ValueError, match='tfds_split is required'):
    datasets.build_dataset(_config(masks={'type': 'grid'}, **dict(source, tfds_split='')))
