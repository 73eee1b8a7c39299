"""Training callbacks: checkpoints, progress lines with images/s and TensorBoard scalars, and a
guard that stops on a non-finite loss before it is checkpointed."""

import math
import time
from typing import Dict, Optional

from absl import logging
import tensorflow as tf
import tf_keras


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
    self._last = step
    path = self.manager.save(checkpoint_number=step)
    logging.info('saved checkpoint %s', path)
    return path

  def on_train_begin(self, logs=None):
    self._last = _step(self.model)

  def on_train_batch_end(self, batch, logs=None):
    if _step(self.model) - self._last >= self.interval:
      self.save()

  def on_train_end(self, logs=None):
    self.save()


class NonFiniteGuard(tf_keras.callbacks.Callback):
  """Raises on a NaN/inf loss, so the run stops before a broken state is checkpointed."""

  def on_train_batch_end(self, batch, logs=None):
    loss = float((logs or {}).get('loss', 0.0))
    if not math.isfinite(loss):
      raise FloatingPointError(f'non-finite loss {loss} at step {_step(self.model)}; the last '
                               'checkpoint is intact (lower the learning rate or check inputs)')


class ProgressLogger(tf_keras.callbacks.Callback):
  """Every `every` steps: one log line (step, loss, lr, images/s, ETA) and TensorBoard scalars."""

  def __init__(self, every: int, global_batch: int, total_steps: int,
               summary_dir: Optional[str] = None):
    super().__init__()
    self.every = max(every, 1)
    self.global_batch = global_batch
    self.total_steps = total_steps
    self.writer = tf.summary.create_file_writer(summary_dir) if summary_dir else None
    self._last_step = 0
    self._last_time = 0.0

  def on_train_begin(self, logs=None):
    self._last_step, self._last_time = _step(self.model), time.time()

  def on_train_batch_end(self, batch, logs=None):
    step = _step(self.model)
    if step - self._last_step < self.every and step < self.total_steps:
      return
    now = time.time()
    rate = (step - self._last_step) * self.global_batch / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    values: Dict[str, float] = {k: float(v) for k, v in (logs or {}).items()}
    values['images_per_second'] = rate
    eta = (self.total_steps - step) * self.global_batch / max(rate, 1e-9)
    text = ' '.join(f'{k}={v:.4g}' for k, v in sorted(values.items()))
    logging.info('step %d/%d %s eta=%.0fs', step, self.total_steps, text, eta)
    print(f'step {step}/{self.total_steps} {text} eta={eta:.0f}s', flush=True)
    if self.writer is not None:
      with self.writer.as_default(step=step):
        for name, value in values.items():
          tf.summary.scalar(name, value)
      self.writer.flush()
