r"""Benchmark (run by hand): FH mask quality against ground truth by image size, at full and at
reduced working resolution, and the per-image rule `masks.fh_working_downscale`.

  .venv/bin/python benchmarks/bench_fh_sizes.py [--sizes=128,160,...] [--scenes=150]

Synthetic scenes with ground-truth instances (`scenes.scene`, held-out seeds) of each short
side, stored as JPEG (quality 90, as photos are) or PNG (`--format`) and decoded; FH with
`--fh_setting` (by default the ImageNet preset's, scale 1000, σ 0.8, min size 1000) and 256
ids. For each size:
ABO (DetCon Fig. 7) at full resolution, at `--downscale` (the precompute's default, 0.5), and
under the rule: full resolution up to `--min_side` (default `masks.FH_MIN_WORKING_SIDE`),
never below it. The threshold is the smallest size from which on no size's reduced-resolution
ABO falls more than `--tolerance` below full resolution's; the table marks it.
"""

import argparse
import io
import sys
import time

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_detcon.data.offline import mask_report  # pylint: disable=wrong-import-position
from tf_detcon.data.offline import masks  # pylint: disable=wrong-import-position
from tf_detcon.data.offline import scenes  # pylint: disable=wrong-import-position


def stored(image: np.ndarray, image_format: str) -> np.ndarray:
  """The image as it comes back from a file of `image_format` ('jpeg' at quality 90, or 'png')."""
  out = io.BytesIO()
  Image.fromarray(image).save(out, format=image_format.upper(), quality=90)
  with Image.open(io.BytesIO(out.getvalue())) as decoded:
    return np.asarray(decoded.convert('RGB'))


def abo(scene_set, setting, factor_of) -> float:
  overlaps = []
  for image, truth in scene_set:
    factor = factor_of(image)
    overlaps.extend(mask_report.best_overlaps(masks.fh_mask(image, *setting, downscale=factor),
                                              truth))
  return float(np.mean(overlaps))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='128,160,192,224,256,288,320,375,448,500')
  parser.add_argument('--scenes', type=int, default=150, help='scenes per size')
  parser.add_argument('--downscale', type=float, default=masks.FAST_FH_DOWNSCALE)
  parser.add_argument('--min_side', type=int, default=masks.FH_MIN_WORKING_SIDE)
  parser.add_argument('--tolerance', type=float, default=0.01,
                      help='the largest loss of ABO against full resolution that holds')
  parser.add_argument('--format', default='jpeg', choices=['jpeg', 'png'],
                      help='how the scenes are stored before FH: JPEG q90 (photos) or PNG')
  parser.add_argument('--fh_setting', default='1000:0.8:1000',
                      help="'scale:sigma:min_size' (default: the ImageNet preset's)")
  args = parser.parse_args()
  setting = tuple(t(v) for t, v in zip((float, float, int), args.fh_setting.split(':')))
  sizes = [int(s) for s in args.sizes.split(',')]
  rows = []
  for size in sizes:
    begin = time.time()
    scene_set = []
    for i in range(args.scenes):
      scene = scenes.scene(scenes.PROBE_SEEDS['eval'] + 10_000 + i, size=size)
      scene_set.append((stored(scene.image, args.format), scene.instance_masks()))
    full = abo(scene_set, setting, lambda image: 1.0)
    reduced = abo(scene_set, setting, lambda image: args.downscale)
    factor = masks.fh_working_downscale(size, size, args.downscale, args.min_side)
    rule = {1.0: full, args.downscale: reduced}.get(factor)
    if rule is None:
      rule = abo(scene_set, setting, lambda image: factor)
    rows.append((size, full, reduced, rule, factor))
    print(f'{size} px: {time.time() - begin:.0f}s', file=sys.stderr, flush=True)
  holds = [reduced >= full - args.tolerance for _, full, reduced, _, _ in rows]
  threshold = next((rows[i][0] for i in range(len(rows)) if all(holds[i:])), None)
  stored_as = 'JPEG q90' if args.format == 'jpeg' else 'PNG'
  print(f'{args.scenes} scenes per size, {stored_as}; FH scale {setting[0]:g}, sigma '
        f'{setting[1]:g}, min size {setting[2]}; rule: full resolution up to {args.min_side} px, '
        f'downscale {args.downscale:g} above, never below {args.min_side} px\n')
  header = (f'{"short side":>10}{"ABO full":>10}{"ABO " + format(args.downscale, "g"):>10}'
            f'{"diff":>8}{"ABO rule":>10}{"diff":>8}{"rule factor":>13}')
  print(header + '\n' + '-' * len(header))
  for size, full, reduced, rule, factor in rows:
    mark = '  <- threshold' if size == threshold else ''
    print(f'{size:>10}{full:>10.3f}{reduced:>10.3f}{reduced - full:>+8.3f}{rule:>10.3f}'
          f'{rule - full:>+8.3f}{factor:>13.3f}{mark}')
  print(f'\nsmallest size from which {args.downscale:g} stays within {args.tolerance} of full '
        f'resolution: {threshold} px')


if __name__ == '__main__':
  main()
