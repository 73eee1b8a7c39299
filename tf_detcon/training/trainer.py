"""config → strategy, data, model, optimiser, callbacks → `model.fit` → export.

Resuming is the default: the latest checkpoint in `model_dir` (weights, EMA targets, optimiser
slots and step) is restored and training continues to `trainer.train_steps`. An interruption
(Ctrl-C, or SIGTERM on preemption) saves a checkpoint at the current step before exiting.
"""

import os
import signal
import threading
from typing import Optional

from absl import logging
import tensorflow as tf

from tf_detcon import __version__
from tf_detcon.configs import optimization as optimization_config
from tf_detcon.configs import pretrain as pretrain_config
from tf_detcon.configs import validation
from tf_detcon.data import datasets
from tf_detcon.modeling import registry
from tf_detcon.training import callbacks as callbacks_lib
from tf_detcon.training import distribute
from tf_detcon.training import export as export_lib
from tf_detcon.training import monitors
from tf_detcon.training import optimization


class Run:
  """A model, its optimiser and checkpoint manager, built under a strategy and restored."""

  def __init__(self, params: pretrain_config.PretrainExperiment, model_dir: str,
               strategy: Optional[tf.distribute.Strategy] = None):
    if not model_dir:
      raise ValueError('--model_dir is required')
    validation.validate(params)
    self.params = params
    self.model_dir = model_dir
    distribute.configure_precision(params.runtime)
    self.strategy = strategy or distribute.build_strategy(params.runtime)
    validation.validate(params, num_replicas=self.strategy.num_replicas_in_sync)
    task = params.task
    self.total_steps = params.trainer.train_steps
    self.global_batch = task.train_data.global_batch_size
    with self.strategy.scope():
      self.model = registry.build_model(task, self.total_steps)
      self.optimizer = optimization.build_optimizer(params.trainer.optimizer_config)
      self.model.compile(optimizer=self.optimizer,
                         steps_per_execution=max(params.trainer.steps_per_loop, 1))
      self.model.initialize_targets()
      self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
      self.manager = tf.train.CheckpointManager(
          self.checkpoint, os.path.join(model_dir, 'checkpoints'),
          max_to_keep=params.trainer.max_to_keep)
      restored = self.manager.latest_checkpoint
      if restored:
        self._restore(restored)
    if restored:
      logging.info('resumed from %s at step %d', restored, self.step)
      print(f'resumed from {restored} at step {self.step}', flush=True)

  def _restore(self, path: str) -> None:
    """Restores everything or explains that model_dir belongs to another model."""
    try:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
      first_line = str(e).strip().splitlines()[0][:300]
      raise ValueError(f'{self.model_dir} holds a checkpoint of another model or config '
                       f'({first_line}); use a new --model_dir') from e

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def dataset(self) -> tf.distribute.DistributedDataset:
    data_cfg = self.params.task.train_data
    return self.strategy.distribute_datasets_from_function(
        lambda context: datasets.build_dataset(data_cfg, context))

  def train(self) -> None:
    remaining = self.total_steps - self.step
    if remaining <= 0:
      logging.info('already trained to step %d', self.step)
      return
    trainer = self.params.trainer
    checkpointer = callbacks_lib.CheckpointEvery(self.manager, trainer.checkpoint_interval)
    task = self.params.task
    callbacks = [
        callbacks_lib.NonFiniteGuard(),
        callbacks_lib.ProgressLogger(task.log_every_steps, self.global_batch,
                                     self.total_steps, os.path.join(self.model_dir, 'train')),
        checkpointer,
    ]
    if trainer.summary_interval > 0:
      callbacks.append(monitors.ViewSummaries(task.train_data, trainer.summary_interval,
                                              os.path.join(self.model_dir, 'train')))
    if task.validation_data.source:
      callbacks.append(monitors.ProbeEvaluation(task.validation_data,
                                                trainer.validation_interval,
                                                trainer.validation_steps, self.model_dir))
    peak = optimization_config.peak_learning_rate(trainer.optimizer_config)
    print(f'training {type(self.model).__name__} for {remaining} steps '
          f'(global batch {self.global_batch}, {self.strategy.num_replicas_in_sync} replicas; '
          f'{trainer.optimizer_config.optimizer.type} with a peak learning rate of {peak:.4g} = '
          f'{peak * 256 / self.global_batch:.4g} x {self.global_batch}/256)', flush=True)
    # Preemption (SIGTERM) becomes an interruption that checkpoints; signals are main-thread only.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
      self.model.fit(self.dataset(), epochs=1, steps_per_epoch=remaining, verbose=0,
                     callbacks=callbacks)
    except KeyboardInterrupt:
      checkpointer.model = self.model
      path = checkpointer.save()
      print(f'interrupted at step {self.step}; checkpoint {path or "already saved"}; rerun the '
            'same command to resume', flush=True)
      raise
    finally:
      if in_main_thread:
        signal.signal(signal.SIGTERM, previous)

  def export(self) -> str:
    """The model's `checkpoint_items` as float32 modules, and metadata for fine-tuning."""
    modules = {name: export_lib.float32_copy(module)
               for name, module in self.model.checkpoint_items.items()}
    metadata = {'method': self.params.task.method.type, 'step': self.step,
                'tf_detcon_version': __version__, 'config': self.params.as_dict(),
                **self.model.export_metadata()}
    return export_lib.export(self.model_dir, modules, metadata)


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt('SIGTERM')


def train_and_export(params: pretrain_config.PretrainExperiment, model_dir: str,
                     strategy: Optional[tf.distribute.Strategy] = None) -> Run:
  run = Run(params, model_dir, strategy)
  run.train()
  path = run.export()
  print(f'exported step {run.step} to {path}', flush=True)
  return run


def export_only(params: pretrain_config.PretrainExperiment, model_dir: str,
                strategy: Optional[tf.distribute.Strategy] = None) -> Run:
  run = Run(params, model_dir, strategy)
  if run.manager.latest_checkpoint is None:
    raise ValueError(f'no checkpoint in {model_dir}/checkpoints to export')
  path = run.export()
  print(f'exported step {run.step} to {path}', flush=True)
  return run

