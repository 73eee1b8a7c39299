"""Benchmarks (run by hand): host view pipeline throughput, and mask pooling vs one-hot.

  .venv/bin/python benchmarks/bench_data_and_pooling.py

Prints a table. Figures are ratios measured in one run where possible: this machine is noisy.
"""

import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_detcon.configs import data as data_config  # pylint: disable=wrong-import-position
from tf_detcon.data import datasets  # pylint: disable=wrong-import-position
from tf_detcon.modeling.blocks import pooling  # pylint: disable=wrong-import-position


def host_pipeline_examples_per_second(threads: int, examples: int = 512) -> float:
  """Decode, two joint crops/flips/resizes at 224 with masks (colour on device), per second."""
  cfg = data_config.DataConfig(global_batch_size=32, color_on_device=True,
                               **data_config.byol_views(224))
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  ds = datasets.build_dataset(cfg).with_options(options)
  iterator = iter(ds)
  next(iterator)  # warm up
  start = time.perf_counter()
  for _ in range(examples // 32):
    next(iterator)
  return examples / (time.perf_counter() - start)


def one_hot_cells(mask: tf.Tensor, grid: int, num_ids: int) -> tf.Tensor:
  """The reference's way: a [B, H, W, K] float one-hot, average-pooled, argmax."""
  one_hot = tf.one_hot(mask, num_ids)
  window = mask.shape[1] // grid
  pooled = tf.nn.avg_pool2d(one_hot, window, window, 'VALID')
  return tf.argmax(tf.reshape(pooled, [mask.shape[0], grid * grid, num_ids]), -1)


def time_fn(fn, *args, repeats: int = 10) -> float:
  fn(*args)
  start = time.perf_counter()
  for _ in range(repeats):
    fn(*args).numpy()
  return (time.perf_counter() - start) / repeats


def main():
  rows = []
  one = host_pipeline_examples_per_second(threads=1)
  two = host_pipeline_examples_per_second(threads=2)
  rows.append(('host views @224, 1 thread', f'{one:.0f} ex/s', ''))
  rows.append(('host views @224, 2 threads', f'{two:.0f} ex/s', f'{two / one:.2f}x 1 thread'))
  rng = np.random.default_rng(0)
  mask = tf.constant(rng.integers(0, 256, size=(32, 224, 224)), tf.int32)
  ours = tf.function(lambda m: pooling.assign_cells(m, 7, 7, 256))
  reference = tf.function(lambda m: one_hot_cells(m, 7, 256))
  np.testing.assert_array_equal(ours(mask).numpy(), reference(mask).numpy())
  t_ours, t_ref = time_fn(ours, mask), time_fn(reference, mask)
  rows.append(('mask → 7x7 cells, B=32, K=256, segment count', f'{t_ours * 1e3:.1f} ms',
               f'{t_ref / t_ours:.1f}x faster than one-hot+avg-pool'))
  one_hot_mib = 32 * 224 * 224 * 256 * 4 / 2**20
  rows.append(('  memory of the one-hot it avoids (from shapes)', f'{one_hot_mib:.0f} MiB',
               f'vs {32 * 49 * 256 * 4 / 2**20:.1f} MiB of counts'))
  width = max(len(r[0]) for r in rows)
  print(f'{"what":<{width}}  {"figure":>12}  ratio')
  for name, figure, ratio in rows:
    print(f'{name:<{width}}  {figure:>12}  {ratio}')


if __name__ == '__main__':
  main()
