r"""Benchmark (run by hand): the colour ops of one view, against another revision's.

  .venv/bin/python benchmarks/bench_color.py --against=ed79f4a

Loads `tf_detcon/primitives/color.py` as it is in the work tree and as it was at `--against` (by
`git show`), runs `color_augment` of both on the same batch with the same seed under
tf.function, taking them in turn, and prints the median time of each, their paired ratio and
the largest difference between their outputs (0 if the change kept the result).
`--jitter_semantics` picks the work tree's jitter; a revision from before the setting runs
torchvision's, so the difference is then that of the semantics.
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_detcon.configs import data as data_config  # pylint: disable=wrong-import-position
from tf_detcon.primitives import color  # pylint: disable=wrong-import-position


_SOURCES = tempfile.TemporaryDirectory()


def module_at(revision: str):
  source = subprocess.run(['git', 'show', f'{revision}:tf_detcon/primitives/color.py'], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
  path = os.path.join(_SOURCES.name, f'color_{revision}.py')  # kept: autograph reads it
  with open(path, 'w') as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location(f'color_{revision}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--against', required=True, help='a git revision')
  parser.add_argument('--shapes', default='32x128,16x64,8x224', help='batch x size, ...')
  parser.add_argument('--repeats', type=int, default=15)
  parser.add_argument('--jitter_semantics', default='additive_hsv',
                      choices=data_config.JITTER_SEMANTICS,
                      help="the work tree's jitter (a revision before it had torchvision's only)")
  args = parser.parse_args()
  old = module_at(args.against)
  # SimCLR/BYOL's view-1 colour settings, with the jitter semantics asked for.
  cfg = data_config.ColorConfig(jitter_semantics=args.jitter_semantics)
  seed = tf.constant([1, 2], tf.int64)
  print(f'{"batch x size":>14}{args.against + " ms":>14}{"work tree ms":>14}{"ratio":>8}'
        f'{"max diff":>10}')
  for shape in args.shapes.split(','):
    batch, size = (int(v) for v in shape.split('x'))
    images = tf.random.uniform([batch, size, size, 3], seed=0)
    fns = [tf.function(lambda m=m: m.color_augment(images, cfg, seed)) for m in (old, color)]
    outputs = [fn() for fn in fns]
    diff = float(tf.reduce_max(tf.abs(outputs[0] - outputs[1])))
    times = [[], []]
    for _ in range(args.repeats):
      for i, fn in enumerate(fns):
        start = time.perf_counter()
        fn().numpy()
        times[i].append(time.perf_counter() - start)
    ratio = statistics.median(a / b for a, b in zip(*times))
    print(f'{shape:>14}{statistics.median(times[0]) * 1e3:>14.1f}'
          f'{statistics.median(times[1]) * 1e3:>14.1f}{ratio:>7.2f}x{diff:>10.1e}')


if __name__ == '__main__':
  main()
