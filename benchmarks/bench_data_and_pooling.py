"""Benchmarks (run by hand): host view pipeline throughput, and mask pooling vs one-hot.

  .venv/bin/python benchmarks/bench_data_and_pooling.py

Prints a table. Figures are ratios measured in one run where possible: this machine is noisy.
  - the host pipeline (decode, crops, flips, resizes with masks; colour on the device) on the
    embedded samples (≤ 256 px) and on ImageNet-sized JPEGs (scikit-image's photos at 500×375,
    FH masks precomputed), for two 224 px views and for DetCo's views (two views and two 3×3
    jigsaw crops), on one core (one tf.data thread) and two;
  - mask → cell assignment against the one-hot approach: time, and the peak-RSS growth of one
    call, each in a fresh process.
"""

import os
import subprocess
import sys
import tempfile
import time

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import common  # pylint: disable=wrong-import-position
from tf_detcon.configs import data as data_config  # pylint: disable=wrong-import-position
from tf_detcon.data import datasets  # pylint: disable=wrong-import-position
from tf_detcon.modeling.blocks import pooling  # pylint: disable=wrong-import-position




def photo_shards(out_dir: str, copies: int = 4) -> str:
  """Shards of scikit-image's photos as 500×375 JPEGs (bench_fh), FH masks at the precompute's
  default; returns the file pattern."""
  import bench_fh  # pylint: disable=g-import-not-at-top
  from tf_detcon.data.offline import masks  # pylint: disable=g-import-not-at-top
  from tf_detcon.data.offline import precompute  # pylint: disable=g-import-not-at-top
  from tf_detcon.data.offline import sources  # pylint: disable=g-import-not-at-top

  class Photos(sources.Source):
    name = 'photos'

    def __init__(self):
      self.items = [(f'{key}-{c}', data) for c in range(copies) for key, data in bench_fh.photos()]

    def __len__(self):
      return len(self.items)

    def read(self, start, stop):
      for key, data in self.items[start:stop]:
        yield sources.RawExample(key, image_bytes=data)

  precompute.Job(source=Photos(), out_dir=out_dir, num_shards=2,
                 spec=precompute.MaskSpec(fh=precompute.FHMasks(downscale=masks.FAST_FH_DOWNSCALE))).run()
  return os.path.join(out_dir, '*.tfrecord')


def detco_views() -> dict:
  from official.core import exp_factory  # pylint: disable=g-import-not-at-top
  from tf_detcon.configs import experiments  # pylint: disable=g-import-not-at-top,unused-import
  task = exp_factory.get_exp_config('detco_imagenet_200ep').task
  return {'view1': task.train_data.view1.as_dict(), 'view2': task.train_data.view2.as_dict(),
          'local_views': task.method.get().view_recipe()}


def host_pipeline_examples_per_second(threads: int, examples: int = 512, input_path: str = '',
                                      views: dict = None) -> float:
  """Decode, two joint crops/flips/resizes at 224 with masks (colour on device), per second."""
  views = dict(views or data_config.byol_views(224))
  local_views = views.pop('local_views', None)
  cfg = data_config.DataConfig(global_batch_size=32, color_on_device=True, input_path=input_path,
                               **views)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  ds = datasets.build_dataset(cfg, local_views=local_views).with_options(options)
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


def pooling_peak_rss(which: str) -> None:
  """In this (fresh) process: the peak-RSS growth of one cell assignment, in MiB, printed."""
  rng = np.random.default_rng(0)
  mask = tf.constant(rng.integers(0, 256, size=(32, 224, 224)), tf.int32)
  fn = {'ours': lambda m: pooling.assign_cells(m, 7, 7, 256),
        'one_hot': lambda m: one_hot_cells(m, 7, 256)}[which]
  traced = tf.function(fn).get_concrete_function(mask)
  before = peak_rss_mib()
  traced(mask).numpy()
  print(peak_rss_mib() - before)


def peak_rss_mib() -> float:
  """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: a child keeps
  its parent's peak in it across exec."""
  with open('/proc/self/status') as f:
    line = next(line for line in f if line.startswith('VmHWM:'))
  return int(line.split()[1]) / 1024


def main():
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    photos = photo_shards(tmp)
    for name, path, views in (
        ('embedded samples, two views @224', '', None),
        ('500x375 JPEGs, two views @224', photos, None),
        ('500x375 JPEGs, DetCo views (2 @224 + 2 jigsaw)', photos, detco_views())):
      one = host_pipeline_examples_per_second(1, input_path=path, views=views)
      two = host_pipeline_examples_per_second(2, input_path=path, views=views)
      rows.append((f'host: {name}, 1 thread', f'{one:.0f} ex/s', ''))
      rows.append((f'host: {name}, 2 threads', f'{two:.0f} ex/s', f'{two / one:.2f}x 1 thread'))
  rng = np.random.default_rng(0)
  mask = tf.constant(rng.integers(0, 256, size=(32, 224, 224)), tf.int32)
  ours = tf.function(lambda m: pooling.assign_cells(m, 7, 7, 256))
  reference = tf.function(lambda m: one_hot_cells(m, 7, 256))
  np.testing.assert_array_equal(ours(mask).numpy(), reference(mask).numpy())
  t_ours, t_ref = time_fn(ours, mask), time_fn(reference, mask)
  rows.append(('mask → 7x7 cells, B=32, K=256, segment count', f'{t_ours * 1e3:.1f} ms',
               f'{t_ref / t_ours:.1f}x faster than one-hot+avg-pool'))
  peaks = {}
  for which in ('ours', 'one_hot'):
    out = subprocess.run([sys.executable, __file__, '--pooling_child', which], check=True,
                         capture_output=True, text=True)
    peaks[which] = float(out.stdout.strip().splitlines()[-1])
  rows.append(('  peak RSS growth of one call, fresh process (ours)', f'{peaks["ours"]:.0f} MiB',
               f'one-hot: {peaks["one_hot"]:.0f} MiB'))
  common.print_rows(('what', 'figure', 'ratio'), rows)


if __name__ == '__main__':
  if len(sys.argv) == 3 and sys.argv[1] == '--pooling_child':
    pooling_peak_rss(sys.argv[2])
  else:
    main()
