"""Tests for tf_detcon.training (trainer, export, callbacks): files, reload, resume."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import (ENDLESS_RUN, method_kinds, run_pretrain, sigterm_at_line,
                            start_pretrain, tinies_covering_every_method, tiny_params,
                            until_line)
from tf_detcon.configs import validation
from tf_detcon.primitives import color
from tf_detcon.modeling.blocks import encoders
from tf_detcon.training import callbacks
from tf_detcon.training import trainer


def test_training_writes_checkpoints_summaries_and_export(tiny_run):
  model_dir = tiny_run.model_dir
  assert tiny_run.step == 4
  assert tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints')).endswith('ckpt-4')
  assert tf.io.gfile.glob(os.path.join(model_dir, 'train', 'events.out.tfevents.*'))
  export = os.path.join(model_dir, 'export')
  with open(os.path.join(export, 'metadata.json')) as f:
    metadata = json.load(f)
  assert metadata['method'] == 'detcon' and metadata['step'] == 4
  assert metadata['init_checkpoint_modules'] == ['backbone']
  assert metadata['levels'] == {'2': 16, '3': 32, '4': 64, '5': 128}
  assert metadata['config']['task']['method']['detcon']['variant'] == 'b'


def test_exported_checkpoint_restores_every_backbone_weight(tiny_run):
  path = tf.train.latest_checkpoint(os.path.join(tiny_run.model_dir, 'export', 'checkpoint'))
  assert path is not None
  fresh = encoders.build_backbone(tiny_run.params.task.encoder)
  tf.train.Checkpoint(backbone=fresh).read(path).assert_existing_objects_matched()
  live = tiny_run.model.encoder.weights
  assert len(fresh.weights) == len(live)
  for restored, trained in zip(fresh.weights, live):
    np.testing.assert_array_equal(restored.numpy(), trained.numpy())


def test_saved_model_in_a_fresh_process_matches_the_live_encoder(tiny_run, tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
  np.save(tmp_path / 'images.npy', images)
  script = (
      'import sys, numpy as np, tensorflow as tf\n'
      'loaded = tf.saved_model.load(sys.argv[1])\n'
      'images = np.load(sys.argv[2])\n'
      "out = loaded.signatures['serving_default'](images=tf.constant(images))\n"
      "floats = loaded.signatures['serve_float'](images=tf.constant(images / 255.0, tf.float32))\n"
      'np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()},\n'
      "         **{'float_' + k: v.numpy() for k, v in floats.items()})\n")
  result = subprocess.run(
      [sys.executable, '-c', script, os.path.join(tiny_run.model_dir, 'export', 'saved_model'),
       str(tmp_path / 'images.npy'), str(tmp_path / 'features.npz')],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr[-2000:]
  served = np.load(tmp_path / 'features.npz')
  live = tiny_run.model.encoder(color.normalize(images.astype(np.float32) / 255.0),
                                training=False)
  for level in ('2', '3', '4', '5'):
    np.testing.assert_allclose(served[f'level_{level}'], live[level].numpy(), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(served[f'float_level_{level}'], live[level].numpy(), rtol=1e-4,
                               atol=1e-4)


def test_resume_restores_weights_ema_targets_optimizer_state_and_step(tiny_run, tmp_path):
  model_dir = str(tmp_path / 'resumed')
  shutil.copytree(tiny_run.model_dir, model_dir)
  resumed = trainer.Run(tiny_params(train_steps=6), model_dir)
  assert resumed.step == 4
  for restored, saved in zip(resumed.model.weights, tiny_run.model.weights):
    np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=saved.name)
  # Optimiser momentum slots (created in the same order on both sides).
  saved = [v for v in tiny_run.optimizer.variables() if 'momentum' in v.name]
  restored = [v for v in resumed.optimizer.variables() if 'momentum' in v.name]
  assert len(saved) == len(restored) == len(resumed.model.optimized_variables())
  for restored_slot, saved_slot in zip(restored, saved):
    assert restored_slot.shape == saved_slot.shape
    np.testing.assert_array_equal(restored_slot.numpy(), saved_slot.numpy())
  assert int(resumed.optimizer.iterations.numpy()) == 4
  resumed.train()
  assert resumed.step == 6
  assert tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints')).endswith('ckpt-6')


def test_interruption_saves_a_checkpoint_at_the_current_step(tmp_path, monkeypatch,
                                                             embedded_files):
  del embedded_files
  model_dir = str(tmp_path / 'interrupted')

  def interrupt(self, batch, logs=None):
    if int(self.model.optimizer.iterations.numpy()) >= 3:
      raise KeyboardInterrupt

  monkeypatch.setattr(callbacks.ProgressLogger, 'on_train_batch_end', interrupt)
  run = trainer.Run(tiny_params(train_steps=8, steps_per_loop=1, checkpoint_interval=100),
                    model_dir)
  with pytest.raises(KeyboardInterrupt):
    run.train()
  assert tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints')).endswith('ckpt-3')
  assert trainer.Run(tiny_params(train_steps=8), model_dir).step == 3


class _FakeModel:
  optimizer = type('O', (), {'iterations': tf.Variable(7)})


def test_recovery_off_still_stops_on_a_non_finite_loss():
  """recovery_max_trials < 0 turns recovery off, as in Model Garden: the bound is not checked,
  but a NaN still stops the run rather than being checkpointed."""
  recovery = callbacks.Recovery(lambda: pytest.fail('restored'), loss_upper_bound=1.0,
                                begin_steps=0, max_trials=-1)
  recovery.set_model(_FakeModel())
  recovery.on_train_batch_end(0, {'loss': 5.0})
  with pytest.raises(FloatingPointError, match='non-finite loss nan at step 7, after 0 '
                     'recoveries'):
    recovery.on_train_batch_end(0, {'loss': float('nan')})


class _PoisonWeights(tf_keras.callbacks.Callback):
  """Turns the first trained variable into NaN after `step`, once: the next loss is NaN."""

  def __init__(self, step: int):
    super().__init__()
    self.step = step

  def on_train_batch_end(self, batch, logs=None):
    if int(self.model.optimizer.iterations.numpy()) == self.step:
      self.step = -1
      variable = self.model.optimized_variables()[0]
      variable.assign(variable * float('nan'))


def test_loss_recovery_restores_the_last_good_checkpoint(tmp_path, monkeypatch, capsys,
                                                         embedded_files):
  """A NaN injected after step 3 makes step 4's loss NaN: the run restores ckpt-2 and trains on
  to train_steps (recovery_max_trials=1), keeping max_to_keep checkpoints; with
  allow_image_summary off, scalars but no pictures are written every summary_interval."""
  del embedded_files
  built = trainer.Run.callbacks
  monkeypatch.setattr(trainer.Run, 'callbacks', lambda self: built(self) + [_PoisonWeights(3)])
  params = tiny_params('simclr_tiny', train_steps=6, steps_per_loop=1, checkpoint_interval=2,
                       recovery_max_trials=1, max_to_keep=2, summary_interval=2)
  params.task.allow_image_summary = False
  run = trainer.Run(params, str(tmp_path / 'recovered'))
  run.train()
  out = capsys.readouterr().out
  assert 'non-finite loss nan at step 4: restored ' in out
  assert 'ckpt-2 at step 2 (recovery 1 of 1)' in out
  assert run.step == 6
  assert all(np.isfinite(v.numpy()).all() for v in run.model.weights)
  kept = [os.path.basename(p) for p in run.manager.checkpoints]
  assert kept == ['ckpt-4', 'ckpt-6']
  tags = set()
  for path in tf.io.gfile.glob(os.path.join(run.model_dir, 'train', 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  assert 'loss' in tags and 'views' not in tags


def test_a_loss_above_the_bound_stops_naming_the_step(tmp_path, embedded_files):
  """loss_upper_bound applies from recovery_begin_steps on; with no trials left the run stops
  naming the step, and the last checkpoint (before it) is intact."""
  del embedded_files
  params = tiny_params('simclr_tiny', train_steps=6, steps_per_loop=1, checkpoint_interval=2,
                       loss_upper_bound=-1.0, recovery_begin_steps=3, recovery_max_trials=0)
  run = trainer.Run(params, str(tmp_path / 'bounded'))
  with pytest.raises(FloatingPointError, match=r'above trainer.loss_upper_bound -1 at step 3, '
                     r'after 0 recoveries \(trainer.recovery_max_trials=0\)'):
    run.train()
  assert os.path.basename(run.manager.latest_checkpoint) == 'ckpt-2'


@pytest.mark.parametrize('setting', ['runtime.run_eagerly', 'trainer.train_tf_function'])
def test_execution_settings_compile_as_configured(setting, tmp_path, embedded_files):
  """run_eagerly or train_tf_function=false → eager steps; steps_per_loop → steps per compiled
  call (enable_xla: tests/test_xla.py). Each trains to a finite loss."""
  del embedded_files
  params = tiny_params('simclr_tiny', train_steps=2, steps_per_loop=2)
  section, name = setting.split('.')
  getattr(params, section).override({name: setting == 'runtime.run_eagerly'})
  run = trainer.Run(params, str(tmp_path / name))
  assert run.model.run_eagerly and not run.model.jit_compile
  assert int(run.model._steps_per_execution.numpy()) == 2  # pylint: disable=protected-access
  history = []
  run.model.fit = _recording(run.model.fit, history)
  run.train()
  assert run.step == 2 and np.isfinite(history[-1]['loss'][-1])


def test_an_experiment_is_validated_once_per_start(tmp_path, embedded_files, monkeypatch):
  """The data checks run once: in `validate` before the strategy is built; the replica checks
  after it; the trainer's pipelines take the validated config."""
  del embedded_files
  calls = []
  real = validation.validate_data
  monkeypatch.setattr(validation, 'validate_data',
                      lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
  run = trainer.Run(tiny_params('simclr_tiny', train_steps=1), str(tmp_path / 'run'))
  next(iter(run.dataset()))
  assert len(calls) == 1


def _recording(fit, history):
  def wrapped(*args, **kwargs):
    result = fit(*args, **kwargs)
    history.append(result.history)
    return result
  return wrapped



def test_pretrain_launcher_trains_and_exports_quietly(tmp_path, embedded_files):
  del embedded_files
  model_dir = str(tmp_path / 'cli')
  # As a user runs it: TF's native log level unset, so the launcher picks it.
  user_env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  done = run_pretrain('--experiment=simclr_tiny', f'--model_dir={model_dir}',
                      '--params_override=trainer.train_steps=2,trainer.steps_per_loop=1,'
                      'task.log_every_steps=1', env=user_env)
  assert done.returncode == 0, done.stderr[-3000:]
  # Quiet by default: the project's lines once each, no TF INFO lines, no CUDA probe on a
  # machine without a GPU, nothing on stderr.
  lines = done.stdout.strip().splitlines()
  assert [line.split()[0] for line in lines] == ['training', 'step', 'step', 'saved',
                                                  'exported'], lines
  assert lines[-1] == f'exported step 2 to {model_dir}/export'
  assert 'images_per_second' not in lines[1] and 'first loop, with tracing' in lines[1]
  assert 'images_per_second' in lines[2] and 'eta=' in lines[2]
  if not glob.glob('/dev/nvidia*'):
    assert done.stderr == '', done.stderr[-2000:]
  assert os.path.exists(os.path.join(model_dir, 'export', 'saved_model', 'saved_model.pb'))
  assert os.path.exists(os.path.join(model_dir, 'params.yaml'))
  exported = run_pretrain('--experiment=simclr_tiny', f'--model_dir={model_dir}', '--mode=export',
                          '--verbosity=0', env=user_env)
  assert exported.returncode == 0 and 'exported step 2' in exported.stdout, exported.stderr[-2000:]
  # --verbosity brings back the INFO logs (absl's and TF's own).
  assert 'export.py' in exported.stderr and 'saved_model' in exported.stderr
  # Bad flags and settings: tests/test_flag_sweep.py, one process per launcher.


def test_sigterm_without_preemption_checkpoints_just_ends_the_run(tmp_path, embedded_files):
  """A real SIGTERM to the launcher mid-run with trainer.preemption_on_demand_checkpoint off:
  the process dies and saves nothing. (On, the default: the test below.)"""
  del embedded_files
  model_dir = str(tmp_path / 'preempted')
  process = start_pretrain(
      '--experiment=simclr_tiny', f'--model_dir={model_dir}',
      f'--params_override={ENDLESS_RUN},trainer.preemption_on_demand_checkpoint=False')
  _, err = sigterm_at_line(process)
  assert process.returncode == -signal.SIGTERM, err[-2000:]
  assert not tf.io.gfile.glob(os.path.join(model_dir, 'checkpoints', 'ckpt-*'))


def test_a_second_run_on_a_model_dir_in_use_is_refused_in_one_line(tmp_path, embedded_files):
  """Two real launcher processes on one --model_dir: the second is refused before it writes
  anything, naming the first; the first trains on and, on SIGTERM (preemption_on_demand_checkpoint
  is on by default), saves a checkpoint at the step it reached, exits 143 and frees the folder."""
  del embedded_files
  model_dir = str(tmp_path / 'shared')
  first = start_pretrain('--experiment=simclr_tiny', f'--model_dir={model_dir}',
                         f'--params_override={ENDLESS_RUN}')
  try:
    until_line(first, 'step 3/')
    second = run_pretrain('--experiment=simclr_tiny', f'--model_dir={model_dir}',
                          '--params_override=trainer.train_steps=2')
  finally:
    first.send_signal(signal.SIGTERM)
    first_out, first_err = first.communicate(timeout=120)
  assert second.returncode == 1 and 'Traceback' not in second.stderr
  assert re.fullmatch(
      rf'pretrain\.py: error: --model_dir {re.escape(model_dir)} is in use by pid {first.pid} '
      r'on host \S+ since \S+ \(pretrain train\); wait for it to finish or use another '
      r'--model_dir', second.stderr.strip().splitlines()[-1]), second.stderr[-2000:]
  assert first.returncode == 143, first_err[-2000:]
  step = int(re.search(r'interrupted at step (\d+)', first_out).group(1))
  saved = tf.io.gfile.glob(os.path.join(model_dir, 'checkpoints', 'ckpt-*.index'))
  assert step >= 3 and [os.path.basename(p) for p in saved] == [f'ckpt-{step}.index']
  assert not os.path.exists(os.path.join(model_dir, '.lock'))


def test_shards_that_their_manifest_does_not_list_are_named_in_one_warning(
    tmp_path, capsys, embedded_files):
  """A stale shard of another make_masks run beside the listed ones, matched by the pattern."""
  folder = tmp_path / 'shards'
  folder.mkdir()
  for path in embedded_files + [os.path.join(os.path.dirname(embedded_files[0]),
                                             'manifest.json')]:
    shutil.copy(path, folder)
  stale = str(folder / 'pretrain-00009-of-00010.tfrecord')
  shutil.copy(embedded_files[0], stale)
  params = tiny_params()
  params.task.train_data.input_path = str(folder / 'pretrain-*.tfrecord')
  trainer.Run(params, str(tmp_path / 'run'))
  assert (f'warning: task.train_data.input_path matches 1 record files that the manifest beside '
          f'them does not list ({stale}): shards of another make_masks run are read too'
          ) in capsys.readouterr().out


def test_a_refused_config_leaves_params_yaml_and_a_changed_one_keeps_the_old(tiny_run, tmp_path,
                                                                          capsys):
  """Nothing is written into model_dir before the config is valid and fits the checkpoint; a
  config that resumes with other settings keeps the previous params.yaml beside the new one."""
  model_dir = str(tmp_path / 'resumed')
  shutil.copytree(tiny_run.model_dir, model_dir)
  trainer.record_config(tiny_params(), model_dir, 0)
  with open(os.path.join(model_dir, 'params.yaml')) as f:
    original = f.read()
  wider = tiny_params()
  wider.task.method.detcon.projector.hidden_dim = 48
  with pytest.raises(ValueError, match='holds a checkpoint of another model or config'):
    trainer.train_and_export(wider, model_dir)
  with pytest.raises(ValueError, match='holds a run of method detcon/b/contrastive'):
    trainer.train_and_export(tiny_params('detco_tiny'), model_dir)
  with open(os.path.join(model_dir, 'params.yaml')) as f:
    assert f.read() == original
  assert not os.path.exists(os.path.join(model_dir, '.lock'))
  capsys.readouterr()
  trainer.record_config(tiny_params(train_steps=8, summary_interval=3), model_dir, 4)
  assert ('differs from ' + os.path.join(model_dir, 'params.yaml') + ' in trainer.summary_interval,'
          ' trainer.train_steps; the previous one is kept as ' +
          os.path.join(model_dir, 'params-before-step4.yaml')) in capsys.readouterr().out
  with open(os.path.join(model_dir, 'params-before-step4.yaml')) as f:
    assert f.read() == original
  with open(os.path.join(model_dir, 'params.yaml')) as f:
    assert 'train_steps: 8' in f.read()


def test_bfloat16_precision_reaches_the_model_and_keeps_float32_variables(tmp_path,
                                                                         embedded_files):
  """TPU precision on CPU: bf16 compute in every network (DeCon's decoder too), float32
  variables. Training, exact resume and the float32 export under bf16 are the kill -9 test's."""
  del embedded_files
  params = tiny_params('decon_sl_detcon_b_tiny')
  params.runtime.mixed_precision_dtype = 'bfloat16'
  try:
    run = trainer.Run(params, str(tmp_path / 'bf16'))
    assert run.model.encoder.compute_dtype == 'bfloat16'
    assert run.model.decoder.compute_dtype == 'bfloat16'
    assert all(v.dtype == tf.float32 for v in run.model.variables if v.dtype.is_floating)
  finally:
    tf_keras.mixed_precision.set_global_policy('float32')


def test_a_model_dir_of_another_model_is_refused_in_one_sentence(tiny_run, tmp_path):
  model_dir = str(tmp_path / 'other')
  shutil.copytree(tiny_run.model_dir, model_dir)
  with pytest.raises(ValueError, match='holds a checkpoint of another model or config'):
    trainer.Run(tiny_params('detco_tiny'), model_dir)


def test_a_torn_latest_checkpoint_resumes_from_the_previous_one(tiny_run, tmp_path, capsys):
  """A truncated data file in the newest checkpoint (a torn write) is skipped with a warning
  naming it and the one resumed from; with none readable, one line says so."""
  model_dir = str(tmp_path / 'torn')
  shutil.copytree(tiny_run.model_dir, model_dir)

  def tear(number):
    data = tf.io.gfile.glob(os.path.join(model_dir, 'checkpoints', f'ckpt-{number}.data-*'))[0]
    with open(data, 'r+b') as f:
      f.truncate(os.path.getsize(data) // 2)

  tear(4)
  resumed = trainer.Run(tiny_params(train_steps=6), model_dir)
  assert resumed.step == 2
  out = capsys.readouterr().out
  assert ('checkpoint ckpt-4 cannot be read (' in out and 'set aside as ckpt-4.data-' in out
          and 'resumed from ' + os.path.join(model_dir, 'checkpoints', 'ckpt-2') in out), out
  assert tf.io.gfile.glob(os.path.join(model_dir, 'checkpoints', 'ckpt-4.*.unreadable'))
  tear(2)
  with pytest.raises(ValueError, match=r'no readable checkpoint in .*: ckpt-2 \('):
    trainer.Run(tiny_params(train_steps=6), model_dir)


def test_an_input_with_no_example_fails_naming_the_files(tmp_path, embedded_files):
  """An empty TFRecord as input_path used to hang training forever; now the run stops."""
  del embedded_files
  empty = tmp_path / 'empty.tfrecord'
  empty.write_bytes(b'')
  params = tiny_params('simclr_tiny', train_steps=2, steps_per_loop=1)
  params.task.train_data.input_path = str(empty)
  run = trainer.Run(params, str(tmp_path / 'starved'))
  with pytest.raises(ValueError, match=r'task.train_data yielded no example from 1 record file '
                     rf'\({empty}\)'):
    run.train()


def _mirrored_copies_differ(strategy, variables):
  """Names of mirrored variables whose per-replica copies are not bit-identical. Variables
  synchronised on read (per-replica BN moving statistics) are per-replica by design."""
  differ = []
  for variable in variables:
    if variable.synchronization == tf.VariableSynchronization.ON_READ:
      continue
    copies = [c.numpy() for c in strategy.experimental_local_results(variable)]
    assert len(copies) == strategy.num_replicas_in_sync, variable.name
    if not all(np.array_equal(copies[0], c) for c in copies[1:]):
      differ.append(variable.name)
  return differ


@pytest.mark.parametrize('name', tinies_covering_every_method(
    ['decon_sl_detcon_b_tiny', 'decon_ml_detco_tiny']))
def test_two_replicas_keep_every_mirrored_variable_bit_identical(name, two_replicas, tmp_path,
                                                                 embedded_files):
  """LARS sees each replica's component variable ('.../gamma/replica_1:0'): its exclusions must
  hold for every copy, or replicas >= 1 decay BN and biases and drift apart. DeCon-SL on DetCon_B
  and DeCon-ML on DetCo: every method's step, and both DeCon variants."""
  del embedded_files
  run = trainer.Run(tiny_params(name, train_steps=3, steps_per_loop=1), str(tmp_path / name),
                    strategy=two_replicas)
  before = [v.numpy().copy() for v in run.model.optimized_variables()]
  run.train()
  assert run.step == 3
  # The optimiser's state was whole before the first step (`create_optimizer_state`): a first
  # step that created a slot would have had its train step traced twice.
  assert run.model.train_tf_function.experimental_get_tracing_count() == 1
  assert any(not np.array_equal(b, v.numpy())
             for b, v in zip(before, run.model.optimized_variables()))
  assert _mirrored_copies_differ(two_replicas, run.model.variables) == []
  slots = run.optimizer.variables()
  assert len(slots) > 1  # iterations and momentum slots
  assert _mirrored_copies_differ(two_replicas, slots) == []


# A deterministic run (seed + deterministic) of 8 steps of 4 examples: a checkpoint at step 4,
# and the 18 embedded records make step 5 cross into the second epoch.
EXACT_RUN = ('trainer.train_steps=8,trainer.checkpoint_interval=4,trainer.steps_per_loop=1,'
             'trainer.summary_interval=0,task.log_every_steps=1,task.train_data.seed=7,'
             'task.train_data.deterministic=true')


def _checkpoint_differences(path_a: str, path_b: str) -> dict:
  """{tensor name: max |a − b|} over every numeric tensor of two checkpoints (same names)."""
  a, b = tf.train.load_checkpoint(path_a), tf.train.load_checkpoint(path_b)
  names = a.get_variable_to_shape_map()
  assert set(names) == set(b.get_variable_to_shape_map())
  out = {}
  for name in names:
    x, y = a.get_tensor(name), b.get_tensor(name)
    if isinstance(x, np.ndarray) and x.dtype.kind in 'fiu' and x.size:
      out[name] = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
  return out


@pytest.mark.parametrize('experiment', tinies_covering_every_method(['decon_ml_detcon_b_tiny']))
def test_kill_9_and_rerun_equals_the_uninterrupted_run(experiment, tmp_path, embedded_files):
  """Exact resume: a run killed with SIGKILL after its step-4 checkpoint and rerun with the same
  command ends where the uninterrupted run ends: every weight, EMA target, queue, optimiser slot
  and the export, to 1e-6. The two runs go side by side (one per core). DeCon-ML on DetCon_B
  (EMA target, masks, decoder), then what trains the other methods (DetCo: its queues); under
  bf16 (TPU precision), whose export is float32. Float32 resume: the in-process resume test
  above and benchmarks/fingerprint.py."""
  del embedded_files

  def args(name):
    return (f'--experiment={experiment}', f'--model_dir={tmp_path / name}',
            f'--params_override={EXACT_RUN},runtime.mixed_precision_dtype=bfloat16')

  with open(tmp_path / 'whole.log', 'w') as log:
    whole = start_pretrain(*args('whole'), stdout=log, stderr=subprocess.STDOUT)
    killed = start_pretrain(*args('killed'), stderr=subprocess.STDOUT)
    try:
      saved = False
      for line in killed.stdout:
        saved = saved or ('saved checkpoint' in line and line.rstrip().endswith('ckpt-4'))
        if saved and line.startswith('step 6/'):
          killed.send_signal(signal.SIGKILL)
          break
      assert killed.wait(timeout=60) == -signal.SIGKILL
      assert whole.wait(timeout=600) == 0, (tmp_path / 'whole.log').read_text()[-2000:]
    finally:
      whole.kill()
      killed.kill()
  rerun = run_pretrain(*args('killed'))
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert f'resumed from {tmp_path}/killed/checkpoints/ckpt-4 at step 4' in rerun.stdout
  assert 'input resumes at record 16 of epoch 0 (pipeline 0)' in rerun.stdout
  state = _checkpoint_differences(str(tmp_path / 'whole/checkpoints/ckpt-8'),
                                  str(tmp_path / 'killed/checkpoints/ckpt-8'))
  assert any('queue' in name for name in state) == ('detco' in method_kinds(experiment))
  assert any('target' in name for name in state)
  assert max(state.values()) <= 1e-6, {k: v for k, v in state.items() if v > 1e-6}
  export = _checkpoint_differences(str(tmp_path / 'whole/export/checkpoint/ckpt-1'),
                                   str(tmp_path / 'killed/export/checkpoint/ckpt-1'))
  assert len(export) > 10 and max(export.values()) <= 1e-6
  dtypes = tf.train.load_checkpoint(str(tmp_path / 'killed/export/checkpoint/ckpt-1')
                                    ).get_variable_to_dtype_map()
  assert {d for n, d in dtypes.items() if n.startswith(('backbone/', 'decoder/'))} == {
      tf.float32}
  loaded = tf.saved_model.load(str(tmp_path / 'killed/export/saved_model'))
  served = loaded.signatures['serving_default'](images=tf.zeros([1, 32, 32, 3], tf.uint8))
  assert {v.dtype for v in served.values()} == {tf.float32}


@pytest.mark.parametrize('kind', ['lars', 'sgd_experimental'])
def test_optimizer_state_made_beforehand_spares_the_second_trace(kind):
  """Model Garden's legacy (LARS) and Keras's newer optimisers: with their state made by
  `create_optimizer_state`, a compiled step is traced once (not twice, as when its first trace
  creates the slots) and computes what the lazily built optimiser computes."""
  from official.modeling.optimization.configs import optimization_config  # pylint: disable=g-import-not-at-top
  config = optimization_config.OptimizationConfig({
      'optimizer': {'type': kind, kind: {'momentum': 0.9}},
      'learning_rate': {'type': 'constant', 'constant': {'learning_rate': 0.1}}})

  def two_steps(beforehand: bool):
    optimizer = trainer.build_optimizer(config)
    variables = [tf.Variable([1.0, -2.0]), tf.Variable([[3.0]])]
    if beforehand:
      trainer.create_optimizer_state(optimizer, variables)
    made = len(optimizer.variables())
    traces = []

    @tf.function
    def step(scale):
      traces.append(None)
      optimizer.apply_gradients(zip([scale * tf.ones([2]), scale * tf.ones([1, 1])], variables))

    step(tf.constant(1.0))
    step(tf.constant(0.5))
    return len(traces), made, len(optimizer.variables()), [v.numpy() for v in variables]

  traces, made, after, values = two_steps(beforehand=True)
  lazy_traces, _, lazy_after, lazy_values = two_steps(beforehand=False)
  assert (traces, lazy_traces) == (1, 2)
  assert made == after == lazy_after > 2  # step counter and a momentum slot per variable
  for mine, lazy in zip(values, lazy_values):
    np.testing.assert_array_equal(mine, lazy)
