"""Tests for tf_detcon.training.monitors: the periodic probe and view pictures in TensorBoard."""

import os

import numpy as np
import tensorflow as tf

from tests.conftest import tiny_params
from tf_detcon.configs import data as data_config
from tf_detcon.evaluation import probes
from tf_detcon.training import monitors
from tf_detcon.training import trainer


def _tags(directory):
  """{tag: [(step, kind)]} of the event files under `directory`."""
  out = {}
  for path in tf.io.gfile.glob(os.path.join(directory, 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        kind = 'image' if value.metadata.plugin_data.plugin_name == 'images' else 'scalar'
        out.setdefault(value.tag, []).append((event.step, kind))
  return out


def test_pretraining_probes_every_validation_interval_and_draws_views(tmp_path, embedded_files,
                                                                      monkeypatch):
  """Model Garden's validation_interval / validation_steps and a labelled validation_data
  (the synthetic scenes) give a linear-probe mIoU in TensorBoard at steps 2 and 4, under
  validation_summary_subdir; summary_interval (not log_every_steps) sets when scalars and
  pictures of the views are written."""
  del embedded_files
  params = tiny_params('detcon_b_tiny', train_steps=4, steps_per_loop=1, validation_interval=2,
                       validation_steps=1, summary_interval=2,
                       validation_summary_subdir='probe_eval')
  params.task.log_every_steps = 3
  params.task.validation_data = data_config.ProbeDataConfig(
      source='synthetic', image_size=64, level='3', num_train=4, num_eval=8,
      global_batch_size=2, fit_steps=7)
  fits = []
  real_evaluate = probes.evaluate

  def evaluate(*args, **kwargs):  # the real probe, its fit length recorded
    fits.append(kwargs['steps'])
    return real_evaluate(*args, **kwargs)

  monkeypatch.setattr(probes, 'evaluate', evaluate)
  run = trainer.Run(params, str(tmp_path / 'run'))
  run.train()
  assert fits == [7, 7]  # validation_data.fit_steps, at steps 2 and 4
  scalars = _tags(os.path.join(run.model_dir, 'probe_eval'))
  assert sorted(step for step, _ in scalars['probe/linear_level3_miou']) == [2, 4]
  train = _tags(os.path.join(run.model_dir, 'train'))
  assert sorted(step for step, _ in train['loss']) == [2, 4]
  # The first loop's rate is mostly tracing: it is not written.
  assert sorted(step for step, _ in train['images_per_second']) == [4]
  views = train['views']
  assert sorted(step for step, kind in views if kind == 'image') == [0, 2, 4]


def test_probe_sets_honour_validation_steps():
  cfg = data_config.ProbeDataConfig(source='synthetic', image_size=32, num_train=3, num_eval=10,
                                    global_batch_size=2)
  train, evaluation, num_classes = monitors.probe_sets(cfg, validation_steps=2)
  assert (len(train.images), len(evaluation.images), num_classes) == (3, 4, 6)
  assert len(monitors.probe_sets(cfg, validation_steps=-1)[1].images) == 10
  assert np.all(train.labels < num_classes)
