r"""Benchmark (run by hand): FH mask precompute speed and quality at ImageNet size.

  .venv/bin/python benchmarks/bench_fh.py [--downscales=1,0.71,0.5] [--passes=3]

Images, all made offline:
  - photos: scikit-image's bundled photos, resized to 500×375 (or 375×500) and stored as JPEG
    (quality 90), ImageNet's typical size and format;
  - scenes: 24 synthetic scenes of 448×448 (about ImageNet's pixel count) with their ground-truth
    instance masks, as JPEG.
For each FH downscale factor (`masks.fh_segments`; 1 is the paper's full resolution), with the
ImageNet setting (scale 1000, σ 0.8, min size 1000; docs/design.md §1) and 256 ids:
  - images/s on one core for the whole per-example precompute (`precompute.process_example`:
    JPEG decode, FH, merge to 256 ids, PNG encode), median of `--passes`, and its ratio to full
    resolution, paired per pass;
  - ABO (DetCon Fig. 7) against the scenes' ground-truth instances;
  - on the photos, which have no ground truth, the ABO of the downscaled masks against the
    full-resolution FH segments (how well they reproduce the paper's masks);
  - segments per image.
A last line gives the floor of that agreement: full-resolution FH on the photos re-encoded as
JPEG at quality 85 against full-resolution FH on the originals (FH is sensitive to small changes).
"""

import argparse
import collections
import io
import statistics
import time

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_detcon.data.offline import mask_report  # pylint: disable=wrong-import-position
from tf_detcon.data.offline import masks  # pylint: disable=wrong-import-position
from tf_detcon.data.offline import precompute  # pylint: disable=wrong-import-position
from tf_detcon.data.offline import scenes  # pylint: disable=wrong-import-position
from tf_detcon.data.offline import sources  # pylint: disable=wrong-import-position

PHOTO_SIZE = (500, 375)
SCENE_SIZE, NUM_SCENES = 448, 24


def jpeg(image: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(image).save(out, format='JPEG', quality=90)
  return out.getvalue()


def photos():
  """scikit-image's bundled photos as ImageNet-sized JPEGs (key, bytes)."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  out = []
  for name in sources.SAMPLE_IMAGE_NAMES:
    image = getattr(data, name)()
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    size = PHOTO_SIZE if image.shape[1] >= image.shape[0] else PHOTO_SIZE[::-1]
    out.append((name, jpeg(np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC)))))
  return out


def labelled_scenes():
  """Synthetic scenes as JPEGs, with their ground-truth instance masks."""
  out = []
  for i in range(NUM_SCENES):
    scene = scenes.scene(scenes.PROBE_SEEDS['eval'] + i, size=SCENE_SIZE)
    out.append((f'scene{i}', jpeg(scene.image), scene.instance_masks()))
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--downscales', default='1,0.71,0.5')
  parser.add_argument('--passes', type=int, default=3)
  args = parser.parse_args()
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  downscales = [float(d) for d in args.downscales.split(',')]
  if downscales[0] != 1.0:
    raise SystemExit('--downscales must start with 1 (the reference)')
  photo_set, scene_set = photos(), labelled_scenes()
  policy = precompute.Policy()
  setting = masks.IMAGENET_FH_SETTINGS[0]
  rates = collections.defaultdict(list)
  for p in range(args.passes):
    for d in downscales:
      spec = precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=(setting,), downscale=d))
      stats = collections.Counter()
      start = time.perf_counter()
      for key, data in photo_set:
        precompute.process_example(sources.RawExample(key, image_bytes=data), spec, policy, stats)
      rates[d].append(len(photo_set) / (time.perf_counter() - start))
    print(f'pass {p + 1}/{args.passes}: ' + ', '.join(
        f'{d:g}: {rates[d][-1]:.2f} img/s' for d in downscales), flush=True)

  def segment(data: bytes, d: float) -> np.ndarray:
    image = tf.io.decode_jpeg(data, channels=3).numpy()
    return masks.fh_mask(image, *setting, downscale=d)

  reference = {key: segment(data, 1.0) for key, data in photo_set}
  print(f'\n{len(photo_set)} photos {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, {NUM_SCENES} scenes '
        f'{SCENE_SIZE}x{SCENE_SIZE} JPEG; FH scale {setting[0]:g}, sigma {setting[1]:g}, '
        f'min size {setting[2]}; one core\n')
  header = (f'{"downscale":>10}{"img/s/core":>12}{"speed-up":>10}{"ABO scenes":>12}'
            f'{"vs full":>9}{"ABO vs full FH":>16}{"segments":>10}')
  print(header + '\n' + '-' * len(header))
  full_abo = None
  for d in downscales:
    overlaps = [o for key, data, truth in scene_set for o in
                mask_report.best_overlaps(segment(data, d), truth)]
    abo = float(np.mean(overlaps))
    full_abo = abo if full_abo is None else full_abo
    agreement, counts = [], []
    for key, data in photo_set:
      ids = segment(data, d)
      counts.append(len(np.unique(ids)))
      full = reference[key]
      agreement.extend(mask_report.best_overlaps(ids, [full == k for k in np.unique(full)]))
    speedup = statistics.median(a / b for a, b in zip(rates[d], rates[1.0]))
    print(f'{d:>10g}{statistics.median(rates[d]):>12.2f}{speedup:>9.2f}x{abo:>12.3f}'
          f'{abo - full_abo:>+9.3f}{np.mean(agreement):>16.3f}{np.mean(counts):>10.1f}')
  floor = []
  for key, data in photo_set:
    image = tf.io.decode_jpeg(data, channels=3).numpy()
    out = io.BytesIO()
    Image.fromarray(image).save(out, format='JPEG', quality=85)
    full = reference[key]
    floor.extend(mask_report.best_overlaps(segment(out.getvalue(), 1.0),
                                           [full == k for k in np.unique(full)]))
  print(f'\nfull resolution on the photos re-encoded at JPEG quality 85: ABO vs full FH '
        f'{np.mean(floor):.3f}')


if __name__ == '__main__':
  main()
