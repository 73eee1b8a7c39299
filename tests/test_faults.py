"""The fault matrix: every file a pretraining run writes, deleted, truncated and replaced by junk
in turn, then the run is rerun. Each cell must end in an exact recovery or a one-line refusal:
no checkpoint lost or overwritten, no step count restarted, no traceback.

One finished tiny run (4 steps, checkpoints at 2 and 4, exported) is trained once and copied per
cell. A rerun restores, records params.yaml and exports as `launch/pretrain.py` does
(`trainer.train_and_export`); its train_steps is 2, so no cell trains and each shows the step it
resumed from. A cell that resumes at step 2 keeps the step-4 export aside. A few cells also run
the real launcher, for its output.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT, tiny_params
from tf_detcon.support import cli
from tf_detcon.configs import validation
from tf_detcon.training import checkpoints
from tf_detcon.training import trainer

FAULTS = ('delete', 'truncate', 'junk')
OVERRIDES = {'task': {'train_data': {'seed': 3, 'deterministic': True}}}


def _params(train_steps: int):
  params = tiny_params('detcon_b_tiny', train_steps=train_steps, checkpoint_interval=2,
                       max_to_keep=5)
  params.override(OVERRIDES, is_strict=True)
  params.task.allow_image_summary = False
  return params


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, embedded_files):
  """A tiny run trained to step 4 with checkpoints at 2 and 4, params.yaml and its export."""
  del embedded_files
  model_dir = str(tmp_path_factory.mktemp('finished'))
  trainer.train_and_export(_params(4), model_dir)
  return model_dir


def _files(root: str):
  out = []
  for folder, _, names in os.walk(root):
    out += [os.path.relpath(os.path.join(folder, n), root) for n in names]
  return sorted(out)


def _digest(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def _apply(path: str, fault: str) -> None:
  if fault == 'delete':
    os.remove(path)
  elif fault == 'truncate':
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
      f.truncate(size // 2)
  else:
    with open(path, 'wb') as f:
      f.write(b'\x00junk\xff' * 7)


def _checkpoint_of(relative: str):
  """'ckpt-4' for checkpoints/ckpt-4.index or .data-…; None for other files."""
  folder, name = os.path.split(relative)
  if folder == 'checkpoints' and name.startswith('ckpt-'):
    return name.split('.')[0]
  return None


def test_every_file_of_a_run_deleted_truncated_or_junk_ends_in_recovery_or_one_line(
    finished_run, tmp_path, capsys):
  files = [f for f in _files(finished_run) if not f.startswith('.')]
  assert {'checkpoints/checkpoint', 'checkpoints/ckpt-2.index', 'checkpoints/ckpt-4.index',
          'params.yaml', 'export/metadata.json', 'export/saved_model/saved_model.pb',
          'export/checkpoint/checkpoint'} <= set(files), files
  reference = {f: _digest(os.path.join(finished_run, f)) for f in files}
  params = _params(2)
  outcomes = {}
  for relative in files:
    for fault in FAULTS:
      cell = str(tmp_path / f'{relative.replace("/", "_")}-{fault}')
      shutil.copytree(finished_run, cell)
      _apply(os.path.join(cell, relative), fault)
      capsys.readouterr()
      try:
        run = trainer.train_and_export(params, cell)
      except cli.USER_ERRORS as e:
        message = cli.one_line(e)
        outcomes[(relative, fault)] = f'refused: {message}'
        assert '\n' not in message and len(message) < 600, message
        continue
      said = capsys.readouterr().out
      broken = _checkpoint_of(relative)
      # The newest readable checkpoint: step 4 unless this cell broke ckpt-4.
      expected = 2 if broken == 'ckpt-4' else 4
      assert run.step == expected, (relative, fault, run.step)
      outcomes[(relative, fault)] = f'resumed at {run.step}'
      # No checkpoint lost or overwritten: every checkpoint file this cell did not break is
      # byte for byte what it was; a broken checkpoint's remaining files are set aside.
      for other, digest in reference.items():
        if not other.startswith('checkpoints/ckpt-') or other == relative:
          continue
        # In place, or set aside (the newest broken checkpoint, an index's orphaned data).
        aside = os.path.join(cell, other + checkpoints.UNREADABLE)
        kept = aside if os.path.exists(aside) else os.path.join(cell, other)
        assert _digest(kept) == digest, (relative, fault, other)
        if kept == aside:
          assert 'set aside' in said, said
      if broken == 'ckpt-4':
        assert not os.path.exists(os.path.join(cell, 'checkpoints', 'ckpt-4.index')) or (
            run.step == 2), (relative, fault)
        # The step-4 export, now the only whole copy of step 4, is set aside byte for byte.
        assert 'export held step 4, later than this run\'s step 2' in said, said
        for other, digest in reference.items():
          if other.startswith('export/'):
            kept = os.path.join(cell, 'export-step4', other[len('export/'):])
            assert _digest(kept) == digest, (relative, fault, other)
      # The state file lists exactly the readable checkpoints on disk.
      directory = os.path.join(cell, 'checkpoints')
      assert checkpoints.listed(directory) == [
          os.path.basename(p) for p in checkpoints.on_disk(directory)]
      if relative == 'checkpoints/checkpoint':
        assert 'rewritten from the checkpoints on disk' in said, said
      # The export is whole again and holds the restored step's weights.
      if expected == 4:
        for part in ('export/checkpoint/ckpt-1.index', 'export/metadata.json',
                     'export/saved_model/variables/variables.index'):
          assert os.path.getsize(os.path.join(cell, part)) > 0
        mine = tf.train.load_checkpoint(os.path.join(cell, 'export', 'checkpoint', 'ckpt-1'))
        theirs = tf.train.load_checkpoint(
            os.path.join(finished_run, 'export', 'checkpoint', 'ckpt-1'))
        for name in theirs.get_variable_to_shape_map():
          if name.startswith('backbone/'):
            np.testing.assert_array_equal(mine.get_tensor(name), theirs.get_tensor(name))
      shutil.rmtree(cell)
  refusals = {k: v for k, v in outcomes.items() if v.startswith('refused')}
  assert not refusals, refusals  # every cell has a readable checkpoint left to recover from


def test_no_readable_checkpoint_is_a_one_line_refusal_and_nothing_is_moved(finished_run,
                                                                           tmp_path):
  cell = str(tmp_path / 'all-broken')
  shutil.copytree(finished_run, cell)
  for step in (2, 4):
    _apply(os.path.join(cell, 'checkpoints', f'ckpt-{step}.data-00000-of-00001'), 'junk')
  before = _files(cell)
  with pytest.raises(ValueError, match=r'^no readable checkpoint in .*ckpt-4 \(.*ckpt-2 .*move '
                                       r'them away to start afresh$'):
    trainer.train_and_export(_params(6), cell)
  assert _files(cell) == before


def _pretrain(*args):
  return subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'launch', 'pretrain.py'),
       '--experiment=detcon_b_tiny', *args], capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))


@pytest.mark.parametrize('relative,fault', [('checkpoints/checkpoint', 'delete'),
                                            ('checkpoints/ckpt-4.index', 'truncate')])
def test_the_launcher_resumes_from_the_files_and_says_so_in_a_line(finished_run, tmp_path,
                                                                    relative, fault):
  cell = str(tmp_path / 'cell')
  shutil.copytree(finished_run, cell)
  _apply(os.path.join(cell, relative), fault)
  overrides = ('task.train_data.seed=3,task.train_data.deterministic=true,'
               'trainer.train_steps=2,trainer.checkpoint_interval=2,trainer.max_to_keep=5,'
               'task.allow_image_summary=false')
  result = _pretrain(f'--model_dir={cell}', f'--params_override={overrides}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  step = 2 if 'ckpt-4' in relative else 4
  assert f'at step {step}' in result.stdout, result.stdout
  warnings = [l for l in result.stdout.splitlines() if l.startswith('warning:')]
  assert warnings and all(('rewritten' in l) or ('set aside' in l) or ('config differs' in l)
                          or ('later than this run' in l) for l in warnings), warnings


def test_resuming_a_run_with_another_method_is_refused_before_anything_is_written(
    finished_run, tmp_path):
  cell = str(tmp_path / 'cell')
  shutil.copytree(finished_run, cell)
  before = {f: _digest(os.path.join(cell, f)) for f in _files(cell)}
  params = tiny_params('detcon_s_tiny', train_steps=6)
  with pytest.raises(ValueError, match=r'holds a run of method detcon/b/contrastive \(its '
                                       r'params.yaml\) and this experiment trains '
                                       r'detcon/s/contrastive: use a new --model_dir'):
    trainer.train_and_export(params, cell)
  assert {f: _digest(os.path.join(cell, f)) for f in _files(cell)} == before


def test_a_rerun_below_the_checkpoints_step_says_nothing_was_trained(finished_run, tmp_path,
                                                                      capsys):
  cell = str(tmp_path / 'cell')
  shutil.copytree(finished_run, cell)
  trainer.train_and_export(_params(2), cell)
  out = capsys.readouterr().out
  assert 'nothing to train: the checkpoint is at step 4 and trainer.train_steps is 2' in out
  assert f'exported step 4 to {cell}/export' in out


@pytest.fixture(scope='module')
def finished_masks(tmp_path_factory):
  """A finished make_masks job: 6 images in 3 shards, with job.json and manifest.json."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tests.conftest import blocky_ids, palette  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('masks')
  os.makedirs(root / 'images')
  for i in range(6):
    Image.fromarray(palette(6)[blocky_ids(48, 64, 6, 8, seed=i)]).save(root / 'images' / f'{i}.png')
  out = str(root / 'out')
  _masks_job(str(root / 'images'), out).run()
  return str(root / 'images'), out


def _masks_job(images: str, out: str):
  from tf_detcon.data.offline import precompute  # pylint: disable=g-import-not-at-top
  from tf_detcon.data.offline import sources  # pylint: disable=g-import-not-at-top
  return precompute.Job(sources.ImageFolderSource(images), out, num_shards=3,
                        spec=precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=((100.0, 0.5, 20),))))


def test_every_file_of_a_mask_job_deleted_truncated_or_junk_is_rewritten_or_refused(
    finished_masks, tmp_path):
  """A rerun of make_masks ends with shards byte for byte the finished job's and the same
  manifest, or stops in one line (job.json unreadable: the folder's settings are unknown)."""
  images, finished = finished_masks
  files = _files(finished)
  assert {'job.json', 'manifest.json', 'pretrain-00000-of-00003.tfrecord',
          'pretrain-00000-of-00003.tfrecord.json'} <= set(files), files
  reference = {f: _digest(os.path.join(finished, f)) for f in files}
  with open(os.path.join(finished, 'manifest.json')) as f:
    totals = __import__('json').load(f)['totals']
  for relative in files:
    for fault in FAULTS:
      cell = str(tmp_path / f'{relative}-{fault}')
      shutil.copytree(finished, cell)
      _apply(os.path.join(cell, relative), fault)
      try:
        manifest = _masks_job(images, cell).run()
      except ValueError as e:
        message = cli.one_line(e)
        assert relative == 'job.json' and fault != 'delete', (relative, fault, message)
        assert message.startswith(f'{cell}/job.json is unreadable') and (
            'delete it to resume with these settings' in message), message
        continue
      assert manifest['totals'] == totals, (relative, fault)
      for other, digest in reference.items():
        if other.endswith('.tfrecord'):
          assert _digest(os.path.join(cell, other)) == digest, (relative, fault, other)
      shutil.rmtree(cell)


def test_an_evaluation_result_deleted_truncated_or_junk_is_written_again(tmp_path):
  from tf_detcon.evaluation import report  # pylint: disable=g-import-not-at-top
  results = {'linear/level4': {'miou': 0.5, 'acc': 0.9}}
  info = {'eval': 'scenes', 'image_size': 96}
  path = report.save(str(tmp_path), 'scenes', results, info)
  expected = _digest(path)
  for fault in FAULTS:
    _apply(path, fault)
    assert report.save(str(tmp_path), 'scenes', results, info) == path
    assert _digest(path) == expected, fault


def test_a_contrastive_batch_of_one_image_is_warned_about():
  lone = tiny_params('detcon_s_tiny')
  lone.task.train_data.global_batch_size = 1
  assert 'global batch 1: the contrastive loss has no other image' in (
      validation.lone_batch_problem(lone))
  assert validation.lone_batch_problem(tiny_params('detcon_s_tiny')) is None
  queue = tiny_params('mocov2_tiny')  # MoCo's negatives are its queue's
  queue.task.train_data.global_batch_size = 1
  assert validation.lone_batch_problem(queue) is None


def test_ctrl_c_during_the_imports_is_one_line(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  process = subprocess.Popen(
      [sys.executable, os.path.join(REPO_ROOT, 'launch', 'pretrain.py'),
       '--experiment=detcon_b_tiny', f'--model_dir={tmp_path}/run'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  time.sleep(1.5)  # TensorFlow is being imported
  process.send_signal(signal.SIGINT)
  out, err = process.communicate(timeout=120)
  assert process.returncode == 130, err[-2000:]
  assert err.strip() == 'interrupted while starting; nothing was written' and not out
  assert not os.path.exists(tmp_path / 'run')


def test_sigterm_before_the_first_step_says_no_checkpoint_was_written(tmp_path, embedded_files):
  del embedded_files
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from tests.conftest import ENDLESS_RUN, start_pretrain, until_line  # pylint: disable=g-import-not-at-top
  process = start_pretrain('--experiment=detcon_b_tiny', f'--model_dir={tmp_path}/run',
                           f'--params_override={ENDLESS_RUN}')
  try:
    until_line(process, 'training DetConModel')
    time.sleep(2)  # in the first step's tracing
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
  finally:
    process.kill()
  assert process.returncode == 143, err[-2000:]
  # Said by the train loop, or by the watcher if the first step's tracing holds the main thread;
  # a checkpoint it names exists (the initial state, if the signal came before fit began).
  line, = [l for l in out.splitlines() if 'rerun the same command to resume' in l]
  assert 'at step 0; ' in line and 'already saved' not in line and 'Traceback' not in err
  named = re.search(r'checkpoint (\S+ckpt-\d+)', line)
  if named:
    assert os.path.exists(named.group(1) + '.index'), line
  else:
    assert 'no step trained, no checkpoint written' in line, line
    assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
