"""Training callbacks: checkpoints, progress lines with images/s, TensorBoard scalars, Model
Garden's loss recovery and its on-demand checkpoint on preemption."""

import math
import os
import time
from typing import Callable, Dict, Optional

import tensorflow as tf
import tf_keras

from tf_detcon.support import console


def _step(model: tf_keras.Model) -> int:
  return int(model.optimizer.iterations.numpy())


class CheckpointEvery(tf_keras.callbacks.Callback):
  """Saves `manager`'s checkpoint every `interval` optimiser steps and at the end of training."""

  def __init__(self, manager: tf.train.CheckpointManager, interval: int):
    super().__init__()
    self.manager = manager
    self.interval = max(interval, 1)
    self._last = -1

  def save(self) -> Optional[str]:
    step = _step(self.model)
    if step == self._last:
      return None
    try:
      path = self.manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:  # disk full, permissions, a vanished bucket
      for debris in tf.io.gfile.glob(os.path.join(self.manager.directory, '*_temp*')):
        try:  # the saver's half-written files
          (tf.io.gfile.rmtree if tf.io.gfile.isdir(debris) else tf.io.gfile.remove)(debris)
        except (OSError, tf.errors.OpError):
          pass
      reason = ' '.join((getattr(e, 'message', None) or str(e)).split())[:200]
      raise ValueError(f'cannot write the checkpoint of step {step} to {self.manager.directory} '
                       f'({reason}); free space or use another --model_dir, then rerun to '
                       'resume from the last checkpoint') from e
    self._last = step
    console.say(f'saved checkpoint {path}')
    return path

  def on_train_begin(self, logs=None):
    self._last = _step(self.model)

  def on_train_batch_end(self, batch, logs=None):
    if _step(self.model) - self._last >= self.interval:
      self.save()

  def on_train_end(self, logs=None):
    self.save()


class Recovery(tf_keras.callbacks.Callback):
  """Model Garden's loss recovery (`trainer.loss_upper_bound`, `recovery_begin_steps`,
  `recovery_max_trials`; official/core/actions.py RecoveryCondition + RecoveryAction).

  A non-finite loss, or one above the bound from `recovery_begin_steps` on, restores the last
  good checkpoint (`restore`) and training goes on from it, at most `max_trials` times; the next
  one stops the run naming the step. With `max_trials` < 0 recovery is off (as in Model Garden)
  but a non-finite loss still stops the run, so a broken state is never checkpointed.
  """

  def __init__(self, restore: Callable[[], str], loss_upper_bound: float, begin_steps: int,
               max_trials: int):
    super().__init__()
    self.restore = restore
    self.loss_upper_bound = loss_upper_bound
    self.begin_steps = begin_steps
    self.max_trials = max_trials
    self.trials = 0

  def on_train_batch_end(self, batch, logs=None):
    loss = float((logs or {}).get('loss', 0.0))
    step = _step(self.model)
    if not math.isfinite(loss):
      reason = f'non-finite loss {loss}'
    elif self.max_trials >= 0 and step >= self.begin_steps and loss > self.loss_upper_bound:
      reason = f'loss {loss:.4g} above trainer.loss_upper_bound {self.loss_upper_bound:.4g}'
    else:
      return
    self.trials += 1
    if self.trials > max(self.max_trials, 0):
      raise FloatingPointError(
          f'{reason} at step {step}, after {self.trials - 1} recoveries '
          f'(trainer.recovery_max_trials={self.max_trials}); the last checkpoint is intact '
          '(lower the learning rate or check inputs)')
    path = self.restore()
    message = (f'{reason} at step {step}: restored {path} at step {_step(self.model)} '
               f'(recovery {self.trials} of {self.max_trials})')
    console.warn(message)


class SaveIfPreempted(tf_keras.callbacks.Callback):
  """Runs `on_demand` (Model Garden's / orbit's SaveCheckpointIfPreempted, i.e. TF's
  PreemptionCheckpointHandler: it watches the platform's maintenance notice and saves on every
  host at the same step) after each loop of steps."""

  def __init__(self, on_demand: Callable[[Optional[Dict]], None]):
    super().__init__()
    self.on_demand = on_demand

  def on_train_batch_end(self, batch, logs=None):
    self.on_demand(logs)


class _Rate:
  """Images per second since the last `take`; None for the first loop after a (re)start, whose
  time is mostly tracing and compiling the step."""

  def __init__(self, global_batch: int):
    self.global_batch = global_batch
    self.step, self.time, self.warm = 0, 0.0, False

  def reset(self, step: int) -> None:
    self.step, self.time, self.warm = step, time.time(), False

  def take(self, step: int) -> Optional[float]:
    now = time.time()
    rate = (step - self.step) * self.global_batch / max(now - self.time, 1e-9)
    self.step, self.time = step, now
    warm, self.warm = self.warm, True
    return rate if warm else None


def _values(logs: Optional[Dict], rate: Optional[float]) -> Dict[str, float]:
  values = {k: float(v) for k, v in (logs or {}).items()}
  if rate is not None:
    values['images_per_second'] = rate
  return values


class ProgressLogger(tf_keras.callbacks.Callback):
  """Every `every` steps (`task.log_every_steps`), one line: step, loss, lr, images/s, ETA."""

  def __init__(self, every: int, global_batch: int, total_steps: int):
    super().__init__()
    self.every = max(every, 1)
    self.global_batch = global_batch
    self.total_steps = total_steps
    self._rate = _Rate(global_batch)

  def on_train_begin(self, logs=None):
    self._rate.reset(_step(self.model))

  def on_train_batch_end(self, batch, logs=None):
    step = _step(self.model)
    if step - self._rate.step < self.every and step < self.total_steps:
      return
    start = self._rate.time
    rate = self._rate.take(step)
    text = ' '.join(f'{k}={v:.4g}' for k, v in sorted(_values(logs, rate).items()))
    if rate is None:
      timing = f'(first loop, with tracing: {self._rate.time - start:.0f}s)'
    else:
      timing = f'eta={(self.total_steps - step) * self.global_batch / max(rate, 1e-9):.0f}s'
    console.say(f'step {step}/{self.total_steps} {text} {timing}')


class ScalarSummaries(tf_keras.callbacks.Callback):
  """Every `interval` steps (Model Garden's `trainer.summary_interval`), the step's logs and
  images/s as TensorBoard scalars in `summary_dir`."""

  def __init__(self, interval: int, global_batch: int, summary_dir: str):
    super().__init__()
    self.interval = interval
    self.writer = tf.summary.create_file_writer(summary_dir)
    self._rate = _Rate(global_batch)

  def on_train_begin(self, logs=None):
    self._rate.reset(_step(self.model))

  def on_train_batch_end(self, batch, logs=None):
    step = _step(self.model)
    if step - self._rate.step < self.interval:
      return
    with self.writer.as_default(step=step):
      for name, value in _values(logs, self._rate.take(step)).items():
        tf.summary.scalar(name, value)
    self.writer.flush()
