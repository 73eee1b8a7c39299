"""config → strategy, data, model, optimiser, callbacks → `model.fit` → export.

Resuming is the default: the latest checkpoint in `model_dir` (weights, EMA targets, optimiser
slots and step) is restored and training continues to `trainer.train_steps`. Model Garden's
trainer settings act as in its trainer: `steps_per_loop`, `summary_interval`,
`checkpoint_interval`, `validation_*`, the loss recovery (`loss_upper_bound`, `recovery_*`) and
`preemption_on_demand_checkpoint`: TF's PreemptionCheckpointHandler where the strategy has a
cluster resolver (TPU VMs, multi-worker), elsewhere SIGTERM (and Ctrl-C) save a checkpoint at
the current step before exiting.
"""

import contextlib
import json
import os
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

from official.core import train_utils
from official.modeling import optimization as mg_optimization
from orbit.actions import save_checkpoint_if_preempted
import tensorflow as tf
import tf_keras
import yaml

from tf_detcon import __version__
from tf_detcon.support import console
from tf_detcon.support import locks
from tf_detcon import registry_imports  # pylint: disable=unused-import  (methods, experiments)
from tf_detcon.configs import optimization as optimization_config
from tf_detcon.configs import pretrain as pretrain_config
from tf_detcon.configs import validation
from tf_detcon.data import datasets
from tf_detcon.data import records
from tf_detcon.primitives import seeds
from tf_detcon.modeling import registry
from tf_detcon.training import callbacks as callbacks_lib
from tf_detcon.training import checkpoints
from tf_detcon.training import distribute
from tf_detcon.exports import manifest
from tf_detcon.training import export as export_lib
from tf_detcon.training import monitors
from tf_detcon.training import preemption


def build_optimizer(config: mg_optimization.OptimizationConfig) -> tf_keras.optimizers.Optimizer:
  """The optimiser and learning-rate schedule of `trainer.optimizer_config`, built by Model
  Garden's own `OptimizerFactory` (LARS, SGD, or any optimiser and schedule it offers)."""
  factory = mg_optimization.OptimizerFactory(config)
  return factory.build_optimizer(factory.build_learning_rate())


def create_optimizer_state(optimizer: tf_keras.optimizers.Optimizer,
                           variables: List[tf.Variable]) -> None:
  """Creates the optimiser's step counter, hyper-parameters and slots for `variables` now, as
  its first `apply_gradients` would. A train step whose first trace creates variables is traced
  a second time by `tf.function`; made beforehand, one trace serves (a tiny run's compile time
  halves). Values and checkpoint are those of the lazy path."""
  if isinstance(optimizer, tf_keras.optimizers.legacy.Optimizer):
    with tf.name_scope(optimizer._name):  # pylint: disable=protected-access
      optimizer._create_all_weights(variables)  # pylint: disable=protected-access
  elif isinstance(optimizer, tf_keras.optimizers.Optimizer):
    optimizer.build(variables)


class Run:
  """A model, its optimiser and checkpoint manager, built under a strategy and restored."""

  def __init__(self, params: pretrain_config.PretrainExperiment, model_dir: str,
               strategy: Optional[tf.distribute.Strategy] = None):
    if not model_dir:
      raise ValueError('--model_dir is required')
    validation.validate(params)
    self.params = params
    self.model_dir = model_dir
    self.exact_resume = seeds.exact_resume(params.task.train_data)
    distribute.configure_precision(params.runtime)
    self.strategy = strategy or distribute.build_strategy(params.runtime)
    # With exact resume, initial weights, queues and every kernel's result follow from the seed.
    seeds.fix_randomness(
        params.task.train_data.seed if self.exact_resume else None,
        compiled=params.runtime.enable_xla or isinstance(self.strategy, tf.distribute.TPUStrategy))
    validation.validate_replicas(params, self.strategy.num_replicas_in_sync)
    if (params.runtime.enable_xla and self.strategy.num_replicas_in_sync > 1
        and isinstance(self.strategy, tf.distribute.MirroredStrategy)):
      raise ValueError(
          f'runtime.enable_xla is not supported with MirroredStrategy over '
          f'{self.strategy.num_replicas_in_sync} devices: Keras compiles each replica\'s step, '
          'whose updates of mirrored variables on other devices XLA cannot place (TPUStrategy '
          'compiles the whole step without it)')
    task = params.task
    if task.train_data.input_path and not task.train_data.tfds_name:
      try:
        files = datasets.resolve_files(task.train_data.input_path)
      except ValueError as e:  # matches no file
        raise ValueError(f'task.train_data.{e}') from e
      unlisted = records.unlisted_files(files)
      if unlisted:
        console.warn(
            f'task.train_data.input_path matches {len(unlisted)} record files that the '
            f'manifest beside them does not list ({", ".join(unlisted[:2])}'
            f'{" ..." if len(unlisted) > 2 else ""}): shards of another make_masks run are '
            'read too')
    self.total_steps = params.trainer.train_steps
    self.global_batch = task.train_data.global_batch_size
    with self.strategy.scope():
      self.model = registry.build_model(task, self.total_steps)
      self.optimizer = build_optimizer(params.trainer.optimizer_config)
      self.model.compile(optimizer=self.optimizer,
                         steps_per_execution=max(params.trainer.steps_per_loop, 1),
                         jit_compile=params.runtime.enable_xla,
                         run_eagerly=(params.runtime.run_eagerly
                                      or not params.trainer.train_tf_function))
      self.model.initialize_targets()
      self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
      # The files, not the state file; the newest readable checkpoint, read once.
      newest = checkpoints.prepare(os.path.join(model_dir, 'checkpoints'))
      self.manager = tf.train.CheckpointManager(
          self.checkpoint, os.path.join(model_dir, 'checkpoints'),
          max_to_keep=params.trainer.max_to_keep)
      restored = self.restore_latest(newest)
    if restored:
      console.say(f'resumed from {restored} at step {self.step}')

  def _restore(self, path: str) -> None:
    """Restores everything or explains that model_dir belongs to another model."""
    try:
      # Optimiser slots made at the first step restore then (deferred); no warning about them
      # when a run that is already done only exports.
      self.checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
      first_line = str(e).strip().splitlines()[0][:300]
      raise ValueError(f'{self.model_dir} holds a checkpoint of another model or config '
                       f'({first_line}); use a new --model_dir') from e

  def restore_latest(self, readable: Optional[str] = None) -> Optional[str]:
    """Restores the newest readable checkpoint (at start, and as the loss recovery's action);
    `readable`: the newest checkpoint when it is already known to read back
    (`checkpoints.prepare` checked it), which spares a second full read.

    A newer checkpoint that cannot be read (a torn write: a truncated or missing file) is
    skipped with a warning naming it and the one resumed from; only a readable checkpoint that
    does not fit the model is "another model".
    """
    path, problems = readable, []
    if path is None:
      path, problems = checkpoints.newest_readable(self.manager.directory)
    if path is None:
      return None
    self._restore(path)
    if problems:
      named = '; '.join(f'{os.path.basename(p)} ({why})' for p, why in problems)
      console.warn(f'unreadable checkpoint {named} in {self.manager.directory}: resumed from '
                   f'the previous one, {os.path.basename(path)}')
    return path

  @property
  def cluster_resolver(self) -> Optional[tf.distribute.cluster_resolver.ClusterResolver]:
    """The strategy's cluster resolver (TPU, multi-worker), where TF's preemption handler runs."""
    return getattr(self.strategy, 'cluster_resolver', None)

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def dataset(self) -> tf.distribute.DistributedDataset:
    """The training input; with an exact resume, each pipeline from where it stopped."""
    data_cfg = self.params.task.train_data
    resuming = self.exact_resume and self.step > 0
    positions = self.model.input_positions.numpy() if resuming else None
    if self.step and not self.exact_resume:
      console.say('input restarts in a fresh random order (set task.train_data.seed and '
                  'deterministic: true for an exact resume)')

    def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
      pipeline_id = context.input_pipeline_id
      start = 0
      if resuming:
        starts, problem = seeds.resume_positions(positions, context.num_input_pipelines)
        start = starts[pipeline_id]
        if pipeline_id == 0 and problem:
          console.warn(problem)
        elif pipeline_id == 0:
          epoch, index = seeds.split_position(start)
          console.say(f'input resumes at record {index} of epoch {epoch} (pipeline 0)')
      return datasets.batches(data_cfg, context, self.params.runtime.dataset_num_private_threads,
                              start, self.params.task.method.get().view_recipe())

    return self.strategy.distribute_datasets_from_function(pipeline)

  def callbacks(self) -> List[tf_keras.callbacks.Callback]:
    trainer = self.params.trainer
    task = self.params.task
    train_dir = os.path.join(self.model_dir, 'train')
    self.checkpointer = callbacks_lib.CheckpointEvery(self.manager, trainer.checkpoint_interval)
    self.recovery = callbacks_lib.Recovery(self.restore_latest, trainer.loss_upper_bound,
                                           trainer.recovery_begin_steps,
                                           trainer.recovery_max_trials)
    out = [
        self.recovery,
        callbacks_lib.ProgressLogger(task.log_every_steps, self.global_batch, self.total_steps),
        self.checkpointer,
    ]
    if trainer.summary_interval > 0:
      out.append(callbacks_lib.ScalarSummaries(trainer.summary_interval, self.global_batch,
                                               train_dir))
      if task.allow_image_summary and task.train_data.tfds_name:
        # The panels decode our records (stored masks beside the views); TFDS has none.
        console.say('no view summaries: they are drawn from records, and '
                    'task.train_data.tfds_name reads TFDS (set task.allow_image_summary: false '
                    'to silence this)')
      elif task.allow_image_summary:
        out.append(monitors.ViewSummaries(task.train_data, trainer.summary_interval, train_dir,
                                          local_views=task.method.get().view_recipe()))
    if task.validation_data.source:
      out.append(monitors.ProbeEvaluation(
          task.validation_data, trainer.validation_interval, trainer.validation_steps,
          os.path.join(self.model_dir, trainer.validation_summary_subdir)))
    if trainer.preemption_on_demand_checkpoint and self.cluster_resolver is not None:
      out.append(callbacks_lib.SaveIfPreempted(
          save_checkpoint_if_preempted.SaveCheckpointIfPreempted(
              self.cluster_resolver, self.manager, self.optimizer.iterations)))
    return out

  def train(self) -> None:
    if self.step >= self.total_steps:
      console.say(f'nothing to train: the checkpoint is at step {self.step} and '
                  f'trainer.train_steps is {self.total_steps}')
      return
    trainer = self.params.trainer
    if trainer.recovery_max_trials > 0 and self.manager.latest_checkpoint is None:
      self.manager.save(checkpoint_number=self.step)  # something to recover to
    callbacks = self.callbacks()
    end = optimization_config.schedule_end(trainer.optimizer_config)
    if 0 < end < self.total_steps:
      console.warn(f'the {trainer.optimizer_config.learning_rate.type} learning-rate schedule '
                   f'ends at step {end} but trainer.train_steps is {self.total_steps}; from '
                   'there on the rate stays at its final value (override its decay_steps with '
                   'train_steps)')
    peak = optimization_config.peak_learning_rate(trainer.optimizer_config)
    console.say(
        f'training {type(self.model).__name__} for {self.total_steps - self.step} steps '
        f'(global batch {self.global_batch}, {self.strategy.num_replicas_in_sync} replicas; '
        f'{trainer.optimizer_config.optimizer.type} with a peak learning rate of {peak:.4g} as '
        'trainer.optimizer_config sets it)')
    problem = validation.lone_batch_problem(self.params)
    if problem:
      console.warn(problem)
    # Here, not when the run is built: a run that only exports makes no slots (a restored
    # checkpoint's slot values load as the slots are made, as at a first step).
    untrained = {v.ref() for v in self.model.untrained_variables()}
    with self.strategy.scope():
      create_optimizer_state(self.optimizer, [v for v in self.model.optimized_variables()
                                              if v.ref() not in untrained])
    # Where TF's PreemptionCheckpointHandler runs (a cluster resolver), it owns preemption;
    # elsewhere SIGTERM checkpoints and exits, even with the main thread blocked in input.
    on_sigterm = (trainer.preemption_on_demand_checkpoint and self.cluster_resolver is None
                  and threading.current_thread() is threading.main_thread())
    watch = (preemption.SigtermWatch(lambda: self.step, self._save_and_say) if on_sigterm
             else contextlib.nullcontext())
    with watch:
      try:
        # A recovery rewinds the step, so fit again until train_steps is reached.
        while self.step < self.total_steps:
          trials = self.recovery.trials
          try:
            self.model.fit(self.dataset(), epochs=1,
                           steps_per_epoch=self.total_steps - self.step, verbose=0,
                           callbacks=callbacks)
          except ValueError as e:  # Keras, when not one batch came
            if 'Empty logs' not in str(e):
              raise
            raise self._no_example_error() from e
          if self.step < self.total_steps and self.recovery.trials == trials:
            raise self._no_example_error()
      except KeyboardInterrupt:
        if on_sigterm:
          watch.handled()
        console.say(f'interrupted at step {self.step}; {self._save_and_say()}; rerun the same '
                    'command to resume')
        raise

  def _no_example_error(self) -> ValueError:
    """The input ended: only a source with no (valid) example ends (training input repeats)."""
    data = self.params.task.train_data
    return ValueError(f'task.train_data yielded no example from {datasets.describe_source(data)} '
                      '(empty, or every record dropped by on_bad_example=skip)')

  def _save_now(self) -> Optional[str]:
    self.checkpointer.set_model(self.model)
    return self.checkpointer.save()

  def _save_and_say(self) -> str:
    """Checkpoints the current step if it is not saved yet, and says what holds it."""
    path = self._save_now()
    if path:
      return f'checkpoint {path}'
    on_disk = checkpoints.on_disk(self.manager.directory)
    if on_disk and checkpoints.step_of(on_disk[-1]) == self.step:
      return f'checkpoint {on_disk[-1]} already saved'
    return 'no step trained, no checkpoint written'

  def export(self) -> str:
    """The model's `checkpoint_items` as float32 modules, and metadata for fine-tuning."""
    modules = {name: export_lib.float32_copy(module)
               for name, module in self.model.checkpoint_items.items()}
    record = manifest.Manifest.from_dict(
        {'method': self.params.task.method.type, 'step': self.step,
         'tf_detcon_version': __version__, 'config': self.params.as_dict(),
         **self.model.export_metadata()})
    return export_lib.export(self.model_dir, modules, record)


def _lock_name() -> str:
  """'.lock', or one per multi-worker task (TF_CONFIG), whose workers share model_dir."""
  task = json.loads(os.environ.get('TF_CONFIG') or '{}').get('task') or {}
  return '.lock' + (f"-{task.get('type')}-{task.get('index')}" if task else '')


@contextlib.contextmanager
def _owning(model_dir: str, mode: str) -> Iterator[None]:
  """Holds model_dir for this process; a second run on it is refused in one line."""
  with locks.DirectoryLock(model_dir, '--model_dir', _lock_name(), command=f'pretrain {mode}'):
    yield


def _leaves(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_leaves(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def record_config(params: pretrain_config.PretrainExperiment, model_dir: str, step: int) -> None:
  """Writes model_dir/params.yaml (Model Garden's `serialize_config`) once the run is known to
  start. A previous params.yaml that differs is kept as params-before-step<N>.yaml, and the
  settings that changed are named in one line."""
  path = os.path.join(model_dir, 'params.yaml')
  if tf.io.gfile.exists(path):
    now = _leaves(yaml.safe_load(yaml.dump(params.as_dict())) or {})
    try:
      with tf.io.gfile.GFile(path) as f:
        before = _leaves(yaml.safe_load(f.read()) or {})
      changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError):  # not a mapping of settings
      changed = ['(every setting: it is not readable YAML)']
    if changed:
      kept = locks.unused_path(os.path.join(model_dir, f'params-before-step{step}'), '.yaml')
      tf.io.gfile.copy(path, kept)
      shown = ', '.join(changed[:6]) + (f' and {len(changed) - 6} more' if len(changed) > 6
                                        else '')
      console.warn(f'the config differs from {path} in {shown}; the previous one is kept as '
                   f'{kept}')
  train_utils.serialize_config(params, model_dir)


def method_blocks(method: Dict[str, Any]) -> List[Tuple[Any, Dict[str, Any]]]:
  """(type, config block) of the method a `task.method` config (as a dict) trains, then of its
  base, if any, and so on: a composed method gives [(its type, …), (its base's type, …)]."""
  kind = method.get('type')
  inner = method.get(kind) or {}
  base = inner.get('base')
  return [(kind, inner)] + (method_blocks(base) if isinstance(base, dict) else [])


def method_identity(method: Dict[str, Any]) -> str:
  """The method a `task.method` config trains, as '<type>/<variant>/<loss>' followed by its
  base's identity, if any: two configs that share a type but not a variant or loss train
  different methods."""
  return '/'.join(part for kind, inner in method_blocks(method)
                  for part in [str(kind)] + [str(inner[key]) for key in ('variant', 'loss')
                                             if key in inner])


def check_same_method(params: pretrain_config.PretrainExperiment, model_dir: str) -> None:
  """A run with checkpoints resumes only as the method it trained (its params.yaml): restoring
  one method's checkpoint into another would train a hybrid of the two."""
  path = os.path.join(model_dir, 'params.yaml')
  if not checkpoints.on_disk(os.path.join(model_dir, 'checkpoints')):
    return
  try:
    with tf.io.gfile.GFile(path) as f:
      recorded = yaml.safe_load(f.read())
    before = method_identity(recorded['task']['method'])
  except (tf.errors.OpError, yaml.YAMLError, TypeError, KeyError, AttributeError,
          UnicodeDecodeError):
    return  # unreadable: record_config says so; the checkpoint's own check remains
  now = method_identity(params.task.method.as_dict())
  if before != now:
    raise ValueError(f'{model_dir} holds a run of method {before} (its params.yaml) and this '
                     f'experiment trains {now}: use a new --model_dir')


def train_and_export(params: pretrain_config.PretrainExperiment, model_dir: str,
                     strategy: Optional[tf.distribute.Strategy] = None) -> Run:
  """Validates, takes model_dir, restores, records params.yaml, trains and exports. Nothing is
  written into model_dir before the config is valid and its checkpoint (if any) fits."""
  with _owning(model_dir, 'train'):
    check_same_method(params, model_dir)
    run = Run(params, model_dir, strategy)
    record_config(params, model_dir, run.step)
    run.train()
    path = run.export()
  console.say(f'exported step {run.step} to {path}')
  return run


def export_only(params: pretrain_config.PretrainExperiment, model_dir: str,
                strategy: Optional[tf.distribute.Strategy] = None) -> Run:
  with _owning(model_dir, 'export'):
    run = Run(params, model_dir, strategy)
    if run.manager.latest_checkpoint is None:
      raise ValueError(f'no checkpoint in {model_dir}/checkpoints to export')
    path = run.export()
  console.say(f'exported step {run.step} to {path}')
  return run
