"""Tests for tf_detcon.evaluation (encoders, datasets, report) and launch/evaluate.py."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from official.vision.data import tf_example_builder
from tests.conftest import REPO_ROOT
from tf_detcon.primitives import color
from tf_detcon.data.offline import scenes
from tf_detcon.evaluation import labelled_sets
from tf_detcon.evaluation import frozen
from tf_detcon.evaluation import probes
from tf_detcon.evaluation import report


def test_an_export_is_probed_with_the_trained_weights(tiny_run):
  encoder = frozen.load(os.path.join(tiny_run.model_dir, 'export'))
  assert encoder.levels == ['2', '3', '4', '5']
  assert encoder.model_dir == tiny_run.model_dir
  images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
  got = encoder(tf.constant(images))
  live = tiny_run.model.encoder(color.normalize(images.astype(np.float32) / 255.0),
                                training=False)
  for level in encoder.levels:
    np.testing.assert_allclose(got[level].numpy(), live[level].numpy(), rtol=1e-4, atol=1e-4)
  served = frozen.load(os.path.join(tiny_run.model_dir, 'export', 'saved_model'))
  np.testing.assert_allclose(served(tf.constant(images))['4'].numpy(), got['4'].numpy(),
                             rtol=1e-4, atol=1e-4)


def test_a_decon_export_has_its_fpn_levels(tiny_decon_run):
  encoder = frozen.load(os.path.join(tiny_decon_run.model_dir, 'export'))
  assert encoder.levels == ['2', '3', '4', '5', 'p2', 'p3', 'p4', 'p5']
  out = encoder(tf.zeros([1, 64, 64, 3], tf.uint8))
  assert out['p2'].shape == (1, 16, 16, 32)


def test_random_init_is_seeded_and_differs_from_training():
  images = tf.constant(np.full((1, 32, 32, 3), 128, np.uint8))
  a = frozen.load('random:detcon_b_tiny', seed=1)(images)['5'].numpy()
  b = frozen.load('random:detcon_b_tiny', seed=1)(images)['5'].numpy()
  c = frozen.load('random:detcon_b_tiny', seed=2)(images)['5'].numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  with pytest.raises(ValueError, match='random:nope: no such registered experiment'):
    frozen.load('random:nope')


def _folders(root, count=3, size=48, mismatch=None):
  images, labels = root / 'images', root / 'labels'
  images.mkdir(parents=True)
  labels.mkdir(parents=True)
  for seed, s in scenes.scenes('eval', count, size):
    Image.fromarray(s.image).save(images / f'{seed}.jpg')
    label = s.semantic.astype(np.uint8)
    if mismatch == seed:
      label = label[:-2]
    Image.fromarray(label).save(labels / f'{seed}.png')
  return str(images), str(labels)


def test_folder_and_tfrecord_sets_hold_the_same_resized_labels(tmp_path):
  image_dir, label_dir = _folders(tmp_path)
  folder = labelled_sets.from_folders(image_dir, label_dir, 32)
  assert folder.images.shape == (3, 32, 32, 3) and folder.labels.shape == (3, 32, 32)
  path = str(tmp_path / 'seg.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for _, s in scenes.scenes('eval', 3, 48):  # Model Garden's own example builder
      builder = tf_example_builder.TfExampleBuilder()
      builder.add_image_matrix_feature(s.image).add_semantic_mask_matrix_feature(
          s.semantic.astype(np.uint8))
      writer.write(builder.example.SerializeToString())
  records = labelled_sets.from_tfrecords(path, 32)
  np.testing.assert_array_equal(records.labels, folder.labels)
  synthetic = labelled_sets.synthetic('eval', 3, 48)  # the scenes the folders were written from
  np.testing.assert_array_equal(synthetic.labels,
                                labelled_sets.from_folders(image_dir, label_dir, 48).labels)


def test_folder_errors_name_the_file(tmp_path):
  image_dir, label_dir = _folders(tmp_path / 'a', mismatch=20_000_001)
  with pytest.raises(ValueError, match='20000001.png.* is 48x46 but its image is 48x48'):
    labelled_sets.from_folders(image_dir, label_dir, 32)
  os.remove(os.path.join(label_dir, '20000000.png'))
  with pytest.raises(ValueError, match="image '20000000.jpg' has no label 20000000.png"):
    labelled_sets.from_folders(image_dir, label_dir, 32)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='no images'):
    labelled_sets.from_folders(str(tmp_path / 'empty'), label_dir, 32)


def test_report_writes_json_and_tensorboard_scalars(tmp_path):
  results = {'linear/level4': {'miou': 0.5, 'acc': 0.75, 'iou': [0.5]}}
  path = report.save(str(tmp_path), 'demo', results, {'encoder': 'x'}, step=3)
  with open(path) as f:
    saved = json.load(f)
  assert saved['results'] == results and saved['encoder'] == 'x'
  events = tf.io.gfile.glob(os.path.join(tmp_path, 'eval', 'demo', 'events.*'))
  tags = {v.tag for e in tf.compat.v1.train.summary_iterator(events[0]) for v in e.summary.value}
  assert {'linear_level4/miou', 'linear_level4/acc'} <= tags
  assert report.final_lines(results) == 'linear level=4 mIoU=0.5000 acc=0.7500'


def _evaluate(*args):
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'launch', 'evaluate.py'),
                         *args], capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))


def test_evaluate_launcher_runs_both_probes_and_writes_its_results(tiny_run, tmp_path):
  export = os.path.join(tiny_run.model_dir, 'export')
  done = _evaluate(f'--export={export}', '--synthetic', '--synthetic_train=6',
                   '--synthetic_eval=4', '--image_size=64', '--level=3,4', '--probe_steps=30',
                   '--name=smoke')
  assert done.returncode == 0, done.stderr[-3000:]
  last = done.stdout.strip().splitlines()[-4:]
  assert [line.split()[:2] for line in last] == [['linear', 'level=3'], ['knn', 'level=3'],
                                                 ['linear', 'level=4'], ['knn', 'level=4']]
  assert all(line.split()[2].startswith('mIoU=') and line.split()[3].startswith('acc=')
             for line in last)
  with open(os.path.join(tiny_run.model_dir, 'eval', 'smoke.json')) as f:
    assert set(json.load(f)['results']) == {'linear/level3', 'knn/level3', 'linear/level4',
                                            'knn/level4'}


@pytest.mark.parametrize('args,message', [
    (['--export=/no/such/export', '--synthetic'], "--export '/no/such/export' does not exist"),
    (['--export=random:detcon_b_tiny', '--synthetic', '--level=7', '--output_dir=/tmp/x'],
     '--level 7: random-detcon_b_tiny has levels 2,3,4,5'),
    (['--export=random:detcon_b_tiny', '--synthetic'], '--output_dir is required'),
    (['--export=random:detcon_b_tiny', '--output_dir=/tmp/x'], 'give one dataset'),
])
def test_evaluate_launcher_bad_input_is_one_line(args, message):
  done = _evaluate(*args)
  assert done.returncode == 1
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('evaluate.py: error: ') and message in last, done.stderr[-2000:]


def test_probes_on_random_features_are_a_floor_not_zero():
  """The random-init encoder the mini table compares against gives a finite, non-trivial score
  (acc above always-background would need features; mIoU above zero)."""
  train, evaluation = labelled_sets.synthetic('train', 6, 64), labelled_sets.synthetic('eval', 4, 64)
  encoder = frozen.load('random:detcon_b_tiny')
  results = probes.evaluate(encoder, train.images, train.labels, evaluation.images,
                            evaluation.labels, scenes.NUM_CLASSES, ['3'], ('linear',), steps=30)
  assert 0.0 < results['linear/level3']['miou'] <= 1.0
