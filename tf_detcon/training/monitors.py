"""What pretraining shows while it runs, beside the loss: a periodic frozen linear probe (so a
collapsing run is visible early) and pictures of the views it trains on."""

import time
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tf_detcon.support import console
from tf_detcon.configs import data as data_config
from tf_detcon.data import datasets
from tf_detcon.evaluation import labelled_sets
from tf_detcon.evaluation import frozen
from tf_detcon.evaluation import pictures
from tf_detcon.evaluation import probes



def _step(model: tf_keras.Model) -> int:
  return int(model.optimizer.iterations.numpy())


def probe_sets(cfg: data_config.ProbeDataConfig, validation_steps: int = -1):
  """(fit set, scoring set, number of classes) of a probe config."""
  num_eval = cfg.num_eval
  if validation_steps and validation_steps > 0:
    num_eval = min(num_eval, validation_steps * cfg.global_batch_size)
  size = cfg.image_size
  if cfg.source == 'synthetic':
    return (labelled_sets.synthetic('train', cfg.num_train, size),
            labelled_sets.synthetic('eval', num_eval, size), labelled_sets.SYNTHETIC_NUM_CLASSES)
  if cfg.source == 'tfrecord':
    return (labelled_sets.from_tfrecords(cfg.input_path, size, cfg.num_train),
            labelled_sets.from_tfrecords(cfg.eval_input_path, size, num_eval), cfg.num_classes)
  return (labelled_sets.from_folders(cfg.train_images, cfg.train_labels, size, cfg.num_train),
          labelled_sets.from_folders(cfg.eval_images, cfg.eval_labels, size, num_eval),
          cfg.num_classes)


class ProbeEvaluation(tf_keras.callbacks.Callback):
  """Every `interval` steps (Model Garden's `trainer.validation_interval`): the linear probe of
  `launch/evaluate.py` on the online encoder's frozen features (BN in inference mode), its mIoU
  and pixel accuracy as TensorBoard scalars in `summary_dir`
  (`<model_dir>/<trainer.validation_summary_subdir>`)."""

  def __init__(self, cfg: data_config.ProbeDataConfig, interval: int, validation_steps: int,
               summary_dir: str, seed: int = 0):
    super().__init__()
    self.cfg = cfg
    self.interval = max(interval, 1)
    self.validation_steps = validation_steps
    self.summary_dir = summary_dir
    self.seed = seed
    self._sets = None
    self._encoder = None
    self._last = 0
    self.history = []  # (step, mIoU, accuracy)

  def on_train_begin(self, logs=None):
    self._sets = probe_sets(self.cfg, self.validation_steps)
    self._encoder = frozen.from_keras('online', self.model.encoder)
    self._last = _step(self.model)

  def on_train_batch_end(self, batch, logs=None):
    step = _step(self.model)
    if step // self.interval > self._last // self.interval:
      self.evaluate(step)
    self._last = step

  def evaluate(self, step: int) -> None:
    begin = time.time()
    train, evaluation, num_classes = self._sets
    result = probes.evaluate(self._encoder, train.images, train.labels, evaluation.images,
                             evaluation.labels, num_classes, [self.cfg.level], ('linear',),
                             self.cfg.ignore_label, seed=self.seed,
                             steps=self.cfg.fit_steps)[f'linear/level{self.cfg.level}']
    self.history.append((step, result['miou'], result['acc']))
    writer = tf.summary.create_file_writer(self.summary_dir)
    with writer.as_default(step=step):
      tf.summary.scalar(f'probe/linear_level{self.cfg.level}_miou', result['miou'])
      tf.summary.scalar(f'probe/linear_level{self.cfg.level}_acc', result['acc'])
    writer.close()
    line = (f'probe at step {step}: linear level={self.cfg.level} mIoU={result["miou"]:.4f} '
            f'acc={result["acc"]:.4f} ({time.time() - begin:.0f}s)')
    console.say(line)


class ViewSummaries(tf_keras.callbacks.Callback):
  """Every `interval` steps (`trainer.summary_interval`): TensorBoard images of training
  examples, their views and aligned masks (and the patches of a method's `local_views`, DetCo's),
  under `<model_dir>/train/`."""

  def __init__(self, data_cfg: data_config.DataConfig, interval: int, summary_dir: str,
               num_examples: int = 3,
               local_views: Optional[data_config.LocalViewConfig] = None):
    super().__init__()
    self.data_cfg = data_cfg
    self.local_views = local_views
    self.interval = max(interval, 1)
    self.summary_dir = summary_dir
    self.num_examples = num_examples
    self._records = None
    self._last = 0

  def on_train_begin(self, logs=None):
    files = datasets.resolve_files(self.data_cfg.input_path)
    self._records = [r.numpy() for r in tf.data.TFRecordDataset(files[:1]).take(
        self.num_examples)]
    self._last = _step(self.model)
    self.write(self._last)

  def on_train_batch_end(self, batch, logs=None):
    step = _step(self.model)
    if step // self.interval > self._last // self.interval:
      self.write(step)
    self._last = step

  def write(self, step: int) -> Optional[np.ndarray]:
    if not self._records:
      return None
    panel = pictures.view_panels(self._records, self.data_cfg, seed=step,
                                 local_views=self.local_views)
    writer = tf.summary.create_file_writer(self.summary_dir)
    with writer.as_default(step=step):
      tf.summary.image('views', panel[None])
    writer.close()
    return panel
