"""Property-based fuzz of what the evaluation launchers accept (hypothesis): for an export with
and without an FPN, any image size, probe stride and levels either stop in one line naming the
flag (`probes.check_settings`, which evaluate.py runs before any work) or give finite probe
results; never an exception of TF's or NumPy's."""

import functools
import os

import numpy as np
import hypothesis
from hypothesis import strategies as st

from tf_detcon.evaluation import frozen
from tf_detcon.evaluation import labelled_sets
from tf_detcon.evaluation import probes

LEVELS = ['2', '3', '4', '5', 'p2', 'p3', 'p4', 'p5', 'p6']


@functools.lru_cache(maxsize=None)
def _encoder(path: str) -> frozen.FrozenEncoder:
  return frozen.from_export(path)


@functools.lru_cache(maxsize=None)
def _scenes(size: int):
  return labelled_sets.synthetic('train', 3, size), labelled_sets.synthetic('eval', 2, size)


def _check_or_run(export, size, stride, levels):
  encoder = _encoder(export)
  try:
    probes.check_settings(encoder, size, stride, levels)
  except ValueError as e:
    message = str(e)
    assert '\n' not in message and message.startswith(('--level ', '--image_size ',
                                                        '--probe_stride ')), message
    return message
  train, evaluation = _scenes(size)
  results = probes.evaluate(encoder, train.images, train.labels, evaluation.images,
                            evaluation.labels, labelled_sets.SYNTHETIC_NUM_CLASSES, levels,
                            ('linear', 'knn'), stride=stride, steps=3, k=3)
  assert sorted(results) == sorted(f'{p}/level{l}' for p in ('linear', 'knn') for l in levels)
  assert all(np.isfinite(v['miou']) and 0 <= v['miou'] <= 1 for v in results.values())
  return 'ran'


@hypothesis.settings(max_examples=24, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(size=st.integers(8, 144), stride=st.integers(1, 24),
                  levels=st.lists(st.sampled_from(LEVELS), min_size=1, max_size=2, unique=True),
                  decon=st.booleans())
def test_evaluation_settings_run_or_stop_in_one_line_naming_the_flag(
    tiny_run, tiny_decon_run, size, stride, levels, decon):
  run = tiny_decon_run if decon else tiny_run
  _check_or_run(os.path.join(run.model_dir, 'export'), size, stride, levels)


def test_the_settings_users_reported_are_now_one_line_or_work(tiny_decon_run, tiny_run):
  decon = os.path.join(tiny_decon_run.model_dir, 'export')
  assert _check_or_run(decon, 100, 4, ['4']).startswith(
      '--image_size 100: ') and 'multiple of 32' in _check_or_run(decon, 100, 4, ['4'])
  assert _check_or_run(os.path.join(tiny_run.model_dir, 'export'), 96, 7, ['4']) == 'ran'


PRETRAIN_METHODS = ['simclr_tiny', 'detcon_b_tiny', 'detco_tiny', 'decon_sl_detcon_s_tiny']


@hypothesis.settings(max_examples=8, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(method=st.sampled_from(PRETRAIN_METHODS), size=st.integers(16, 112),
                  batch=st.integers(1, 6))
def test_pretraining_view_sizes_and_batches_train_or_stop_in_one_line_naming_the_setting(
    embedded_files, tmp_path_factory, method, size, batch):
  """Whatever view size and global batch a user gives a method, validation names the setting
  in one line, or one step (eager, no tracing cost) trains to a finite loss."""
  del embedded_files
  from tests.conftest import tiny_params  # pylint: disable=g-import-not-at-top
  from tf_detcon.configs import validation  # pylint: disable=g-import-not-at-top
  from tf_detcon.training import trainer  # pylint: disable=g-import-not-at-top
  params = tiny_params(method, train_steps=1, steps_per_loop=1, checkpoint_interval=1)
  params.task.train_data.override({'global_batch_size': batch, 'view1': {'output_size': size},
                                   'view2': {'output_size': size}})
  params.runtime.run_eagerly = True
  params.task.allow_image_summary = False
  try:
    validation.validate(params)
  except ValueError as e:
    message = str(e)
    assert '\n' not in message and 'task.' in message, message
    return
  run = trainer.Run(params, str(tmp_path_factory.mktemp('fuzz')))
  history = []
  fit = run.model.fit
  run.model.fit = lambda *a, **k: history.append(fit(*a, **k).history) or history[-1]
  run.train()
  assert run.step == 1 and np.isfinite(history[-1]['loss'][-1]), (method, size, batch)
