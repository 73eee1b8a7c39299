r"""What each seed of the mini table feeds a mask method: mask statistics of its first batches.

  .venv/bin/python benchmarks/seed_masks.py --steps=2000 --batches=100

The mini table's FH masks are computed once and shared by every seed; a seed sets the data
order, the crops and the weights' initialisation. This prints, per seed, over the first
`--batches` batches of DetCon_S (FH)'s input pipeline: masks per view, masks both views share
(DetCon samples its 16 masks among these, §3.1), the share of pairs with at most one shared mask
(no negative inside the image), and the largest mask's share of a view.
"""

import argparse
import os

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import common
import mini_table
from tf_detcon.data import datasets
# pylint: enable=g-import-not-at-top,wrong-import-position


def mask_statistics(dataset, batches: int) -> dict:
  shared, single, per_view, largest = [], [], [], []
  for batch in dataset.take(batches):
    for first, second in zip(batch['mask1'].numpy(), batch['mask2'].numpy()):
      ids = set(np.unique(first))
      both = ids & set(np.unique(second))
      per_view.append(len(ids))
      shared.append(len(both))
      single.append(len(both) <= 1)
      largest.append(np.bincount(first.ravel()).max() / first.size)
  return {'masks per view': np.mean(per_view), 'shared by both views': np.mean(shared),
          'pairs sharing <= 1': np.mean(single), 'largest mask share': np.mean(largest)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--work_dir', default=common.WORK_DIR)
  parser.add_argument('--steps', type=int, default=2000, help="the mini table's budget")
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--batches', type=int, default=100)
  args = parser.parse_args()
  if args.batches < 1 or args.seeds < 1:
    parser.error('--batches and --seeds must be positive')
  setup = mini_table.Setup(steps=args.steps)
  data = mini_table.scene_data(
      os.path.join(args.work_dir, f'steps{setup.steps}-scenes{setup.scenes}'), setup)
  rows = []
  for seed in range(args.seeds):
    params = mini_table.mini_config(mini_table.METHODS['detcon_s_fh'], data, setup, seed)
    rows.append((seed, mask_statistics(datasets.build_dataset(params.task.train_data),
                                       args.batches)))
  names = list(rows[0][1])
  print(f'first {args.batches} batches of {setup.batch} of DetCon_S (FH), by seed')
  print('seed ' + ' '.join(f'{n:>22}' for n in names))
  for seed, stats in rows:
    print(f'{seed:>4} ' + ' '.join(f'{stats[n]:>22.3f}' for n in names))


if __name__ == '__main__':
  main()
