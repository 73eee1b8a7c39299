"""Stateless randomness keyed by where a draw happens, so that a run is a function of its seed
and a resumed run repeats the uninterrupted one (docs/design.md §9).

Every record of an input pipeline gets a position: its epoch and its index in that epoch's
(seeded) order. Every random draw of the run is a `tf.random.stateless_*` op keyed by
(base seed, purpose, pipeline, position) (`record_seed`):

  host    decode (which stored FH map), the two views' crops and flips, DetCo's local crops;
  batch   colour (on the host or the accelerator) and, in the train step, mask-id sampling,
          DeCon's channel dropout and DetCo's shuffled-BN permutation: keyed by the position of
          the batch's first example (`batch_seed`, then `derive` per draw).

Nothing depends on how many threads produced a batch or on how far the pipeline ran ahead, and
the input position of a checkpoint (`PretrainModel.input_positions`) says where to start again.
"""

import random
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # op determinism off: no public API
import tf_keras

from tf_detcon.configs import data as data_config

# A position is epoch << EPOCH_SHIFT | index: one int64 that orders records by (epoch, index).
EPOCH_SHIFT = 40
MAX_INPUT_PIPELINES = 4096

# Purposes: what a seed is for, so that no two draws share one.
DECODE, VIEW1, VIEW2, LOCAL1, LOCAL2, COLOR, STEP = range(7)
MASK_SAMPLING, CHANNEL_DROPOUT, KEY_SHUFFLE = range(10, 13)
FILE_ORDER, RECORD_ORDER = range(20, 22)
_PIPELINE_STRIDE = 0x2545F4914F6CDD1D  # odd: distinct pipelines give distinct keys

# Without task.train_data.seed, one random base per process: a restarted process draws anew.
_PROCESS_SEED = random.randint(0, 2**31 - 1)


def fix_randomness(seed: Optional[int], compiled: bool) -> None:
  """With a seed, seeds Python, NumPy and TF (initial weights, queues) and makes every kernel's
  result repeatable: TF's op determinism for a step that runs op by op; for a step compiled by
  XLA (TPU, `runtime.enable_xla`), the compiled program, which XLA runs the same way each time.

  A compiled step always runs with op determinism off (it is one switch per process, and TF
  refuses to compile a max-pool gradient under it: "do not yet have a deterministic XLA
  implementation")."""
  if seed is not None:
    tf_keras.utils.set_random_seed(seed)
  if compiled:
    tf_config.disable_op_determinism()
  elif seed is not None:
    tf.config.experimental.enable_op_determinism()


def base_seed(cfg: data_config.DataConfig) -> int:
  """`cfg.seed`, or this process's random base seed."""
  return _PROCESS_SEED if cfg.seed is None else int(cfg.seed)


def exact_resume(cfg: data_config.DataConfig) -> bool:
  """Whether the run is deterministic and resumes where it stopped: `seed` set and
  `deterministic: true`, on our records (TFDS and tf.data service keep their own order)."""
  return (cfg.seed is not None and cfg.deterministic is True and not cfg.tfds_name
          and not cfg.enable_tf_data_service)


def position(epoch: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  return tf.bitwise.left_shift(tf.cast(epoch, tf.int64), EPOCH_SHIFT) + tf.cast(index, tf.int64)


def split_position(value: int) -> Tuple[int, int]:
  """(epoch, index) of a position."""
  return value >> EPOCH_SHIFT, value & ((1 << EPOCH_SHIFT) - 1)


def derive(seed: tf.Tensor, *keys) -> tf.Tensor:
  """The [2] int64 seed `seed` folded with each key in turn."""
  seed = tf.cast(seed, tf.int64)
  for key in keys:
    seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(key, tf.int64))
  return seed


def _mix(*values: int) -> int:
  """A 63-bit hash of small ints (splitmix64 steps), computed in Python."""
  state = 0
  for value in values:
    state = (state + 0x9E3779B97F4A7C15 + value) & (2**64 - 1)
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    state = z ^ (z >> 31)
  return state >> 1


def record_seed(base: int, pipeline: tf.Tensor, record_position: tf.Tensor,
                purpose: int) -> tf.Tensor:
  """The [2] seed of one draw for one record: (a key of seed, purpose and pipeline, the
  position). Stateless ops key their counter-based generator (Philox) by the whole pair, so every
  (key, position) is its own stream; building it is one op per draw on the host."""
  key = tf.constant(_mix(base, purpose), tf.int64) + (
      tf.cast(pipeline, tf.int64) * tf.constant(_PIPELINE_STRIDE, tf.int64))
  return tf.stack([key, tf.cast(record_position, tf.int64)])


def epoch_seed(base: int, pipeline: int, epoch: tf.Tensor, purpose: int) -> tf.Tensor:
  """The seed of an epoch's file or record order."""
  return derive(tf.constant([base, 1], tf.int64), pipeline, epoch, purpose)


def batch_seed(base: int, batch: Dict[str, tf.Tensor], purpose: int) -> tf.Tensor:
  """A batch's seed for `purpose`: that of its first record. Batches hold `pipeline` and
  `position` per example."""
  return record_seed(base, batch['pipeline'][0], batch['position'][0], purpose)


def resume_positions(positions: np.ndarray, num_pipelines: int) -> Tuple[List[int], str]:
  """Where each of `num_pipelines` input pipelines starts, from a checkpoint's
  `input_positions`, and a warning ('' if none).

  Every pipeline of a run that trained has a position past 0, so a checkpoint whose count of
  such positions differs from `num_pipelines` comes from another input layout (its files were
  sharded otherwise); its positions do not apply, and the input starts afresh."""
  recorded = int(np.count_nonzero(positions))
  if recorded in (0, num_pipelines):
    return [int(p) for p in positions[:num_pipelines]], ''
  return [0] * num_pipelines, (
      f'the checkpoint holds the input positions of {recorded} input pipelines but this run has '
      f'{num_pipelines}: the input starts again from its first epoch, so this resume is not '
      'exact')
