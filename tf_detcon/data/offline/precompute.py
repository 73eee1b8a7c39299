"""The mask precompute job: sources → validated images + id maps → TFRecord shards.

Scales to ImageNet by sharding: the source is split into `num_shards` contiguous index ranges; a
worker (`worker_index` of `num_workers`, e.g. one VM of a batch runner) writes the shards
congruent to its index, optionally with several local processes. Each shard is written atomically
and a rerun skips finished shards, so an interrupted job resumes where it stopped. The manifest is
written by whichever worker finds every shard finished.
"""

import collections
import dataclasses
import io
import multiprocessing
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError
import tensorflow as tf

from tf_detcon.data.offline import masks as masks_lib
from tf_detcon.data.offline import shards
from tf_detcon.data.offline import sources


PROGRESS_EVERY = 100  # examples between progress lines inside a shard


class BadExampleError(ValueError):
  """An input that cannot give a correct image/mask pair; names the example and the reason."""

  def __init__(self, key: str, reason: str, detail: str = ''):
    self.key = key
    self.reason = reason
    super().__init__(f'example {key!r}: {reason}' + (f' ({detail})' if detail else ''))


@dataclasses.dataclass
class MaskSpec:
  """Which id maps to store. kind: 'fh' (one map per setting), 'gt' or 'file'."""
  kind: str = 'fh'
  fh_settings: Tuple[Tuple[float, float, int], ...] = masks_lib.IMAGENET_FH_SETTINGS
  max_segments: Optional[int] = masks_lib.MAX_UINT8_SEGMENTS
  fh_downscale: float = masks_lib.PAPER_FH_DOWNSCALE  # see masks_lib.fh_segments
  # Per image: full resolution up to this short side, never below it (fh_working_downscale).
  fh_min_working_side: int = masks_lib.FH_MIN_WORKING_SIDE

  def names(self) -> List[str]:
    if self.kind == 'fh':
      return [f'fh_{scale:g}_{sigma:g}_{min_size}' for scale, sigma, min_size in self.fh_settings]
    if self.kind in ('gt', 'file'):
      return [self.kind]
    raise ValueError(f"mask kind must be 'fh', 'gt' or 'file', got {self.kind!r}")


@dataclasses.dataclass
class Policy:
  """What to do with bad inputs: 'error' stops the job naming the example, 'skip' counts it."""
  on_bad_example: str = 'error'
  min_image_side: int = 32
  # Larger images are refused from their header, before decoding: a 10k×10k photo would take
  # 300 MB decoded and several GB in FH. 50 Mpx is 130× an ImageNet image.
  max_image_pixels: int = 50_000_000
  min_segments: int = 1  # images whose every mask has fewer segments are bad

  def __post_init__(self):
    if self.on_bad_example not in ('error', 'skip'):
      raise ValueError(f"on_bad_example must be 'error' or 'skip', got {self.on_bad_example!r}")


def decode_image(raw: sources.RawExample,
                 max_pixels: int = Policy.max_image_pixels) -> Tuple[np.ndarray, bytes, bool]:
  """Decodes and validates an image; returns (uint8 RGB array, bytes to store, converted?).

  JPEG/PNG images in RGB or grayscale are stored as received and decoded by TF, so the masks are
  computed on exactly the pixels training sees (JPEG decoders differ slightly); anything else
  (CMYK, RGBA, palette, 16-bit, other formats) is converted to RGB by PIL and stored as PNG.
  """
  if raw.image is not None:
    image = np.asarray(raw.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise BadExampleError(raw.key, 'not a uint8 RGB array', f'{image.dtype} {image.shape}')
    return image, shards.encode_png(image), False
  if not raw.image_bytes:
    raise BadExampleError(raw.key, 'empty image file')
  try:
    with Image.open(io.BytesIO(raw.image_bytes)) as pil:
      size = pil.size
      if size[0] * size[1] <= max_pixels:
        pil.load()  # raises on truncated data
        image_format, mode = pil.format, pil.mode
        rgb = pil.convert('RGB')
  except Image.DecompressionBombError as e:
    raise BadExampleError(raw.key, 'image too large', str(e)) from e
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise BadExampleError(raw.key, 'corrupt or truncated image', str(e)) from e
  if size[0] * size[1] > max_pixels:
    raise BadExampleError(raw.key, 'image too large',
                          f'{size[0]}x{size[1]} > {max_pixels} pixels')
  if image_format in ('JPEG', 'PNG') and mode in ('RGB', 'L'):
    image = tf.io.decode_image(raw.image_bytes, channels=3, expand_animations=False).numpy()
    return image, raw.image_bytes, False
  image = np.asarray(rgb, dtype=np.uint8)
  return image, shards.encode_png(image), True


def _decode_mask_file(raw: sources.RawExample) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(raw.mask_bytes)) as pil:
      pil.load()
      mask = np.asarray(pil)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise BadExampleError(raw.key, 'corrupt mask file', str(e)) from e
  if mask.ndim != 2:
    raise BadExampleError(raw.key, 'mask file is not a single-channel id map', str(mask.shape))
  return masks_lib.to_storage_dtype(masks_lib.relabel_by_area(mask))


def make_masks(raw: sources.RawExample, image: np.ndarray, spec: MaskSpec,
               stats: Optional[collections.Counter] = None) -> List[np.ndarray]:
  """The id maps of one image, per `spec`; each checked against the image size. FH runs at the
  image's own working factor (`fh_working_downscale`), counted by factor in
  `stats['fh_working_factor/<f>']`; segments merged to fit 256 ids in
  `stats['merged_segments']`."""
  height, width = image.shape[:2]
  if spec.kind == 'fh':
    maps = []
    factor = masks_lib.fh_working_downscale(height, width, spec.fh_downscale,
                                            spec.fh_min_working_side)
    if stats is not None:  # the factors, in steps of 0.05
      stats[f'fh_working_factor/{round(factor * 20) / 20:.2f}'] += 1
    for scale, sigma, min_size in spec.fh_settings:
      ids, merged = masks_lib.fh_segments(image, scale, sigma, min_size, spec.max_segments,
                                          factor)
      maps.append(ids)
      if stats is not None:
        stats['merged_segments'] += merged
  elif spec.kind == 'gt':
    if raw.instance_masks is None:
      raise BadExampleError(raw.key, 'missing ground-truth masks')
    try:
      maps = [masks_lib.ground_truth_mask(raw.instance_masks, height, width)]
    except ValueError as e:
      raise BadExampleError(raw.key, 'mask does not match image size', str(e)) from e
  elif spec.kind == 'file':
    if raw.mask_missing or raw.mask_bytes is None:
      raise BadExampleError(raw.key, 'missing mask file')
    maps = [_decode_mask_file(raw)]
  else:
    raise ValueError(f'unknown mask kind {spec.kind!r}')
  for m in maps:
    if m.shape != (height, width):
      raise BadExampleError(raw.key, 'mask does not match image size',
                            f'mask {m.shape}, image {(height, width)}')
  return maps


def process_example(raw: sources.RawExample, spec: MaskSpec, policy: Policy,
                    stats: collections.Counter) -> bytes:
  """Validates one raw example and returns its serialised record; raises BadExampleError."""
  image, image_bytes, converted = decode_image(raw, policy.max_image_pixels)
  height, width = image.shape[:2]
  if min(height, width) < policy.min_image_side:
    raise BadExampleError(raw.key, 'image smaller than the minimum side',
                          f'{height}x{width} < {policy.min_image_side}')
  maps = make_masks(raw, image, spec, stats)
  segments = max(int(m.max()) + 1 for m in maps)
  if segments < policy.min_segments:
    raise BadExampleError(raw.key, 'too few segments', f'{segments} < {policy.min_segments}')
  stats['converted_to_rgb'] += int(converted)
  stats['single_segment'] += int(segments == 1)
  stats['uint16_masks'] += sum(int(m.dtype == np.uint16) for m in maps)
  return shards.make_example(raw.key, image_bytes, height, width, maps, spec.names())


@dataclasses.dataclass
class Job:
  """One precompute run; `run()` writes this worker's shards and, when all exist, the manifest."""
  source: sources.Source
  out_dir: str
  num_shards: int = 1
  spec: MaskSpec = dataclasses.field(default_factory=MaskSpec)
  policy: Policy = dataclasses.field(default_factory=Policy)
  prefix: str = 'pretrain'
  worker_index: int = 0
  num_workers: int = 1
  num_processes: int = 1

  def shard_path(self, index: int) -> str:
    return os.path.join(self.out_dir, shards.shard_name(self.prefix, index, self.num_shards))

  def shard_range(self, index: int) -> Tuple[int, int]:
    n = len(self.source)
    return index * n // self.num_shards, (index + 1) * n // self.num_shards

  def write_shard(self, index: int) -> Dict[str, Any]:
    """Writes shard `index` atomically; returns its statistics."""
    start, stop = self.shard_range(index)
    stats: collections.Counter = collections.Counter()
    path = self.shard_path(index)
    begin = time.time()
    with shards.ShardWriter(path) as writer:
      for position, raw in enumerate(self.source.read(start, stop)):
        if position and position % PROGRESS_EVERY == 0:
          logging.info('shard %d/%d: %d/%d examples, %.1f/s', index + 1, self.num_shards,
                       position, stop - start, position / (time.time() - begin))
        try:
          writer.write(process_example(raw, self.spec, self.policy, stats))
        except BadExampleError as e:
          if self.policy.on_bad_example == 'error':
            raise
          stats[f'skipped/{e.reason}'] += 1
          logging.warning('skipped %s', e)
      writer.stats.update(stats)
    logging.info('shard %d/%d: %d examples in %.1fs -> %s', index + 1, self.num_shards,
                 writer.stats['examples'], time.time() - begin, path)
    return writer.stats

  def pending_shards(self) -> List[int]:
    mine = range(self.worker_index, self.num_shards, self.num_workers)
    return [i for i in mine if not shards.is_finished(self.shard_path(i))]

  def prepare(self) -> List[int]:
    """Checks the job, creates the output folder and returns this worker's unfinished shards."""
    if self.num_shards < 1 or self.num_shards > max(len(self.source), 1):
      raise ValueError(f'num_shards must be in [1, {len(self.source)}], got {self.num_shards}')
    tf.io.gfile.makedirs(self.out_dir)
    pending = self.pending_shards()
    done = len(range(self.worker_index, self.num_shards, self.num_workers)) - len(pending)
    logging.info('%s: %d examples, %d shards; worker %d/%d has %d done, %d to write',
                 self.source.name, len(self.source), self.num_shards, self.worker_index,
                 self.num_workers, done, len(pending))
    return pending

  def run(self) -> Optional[Dict[str, Any]]:
    """Writes the pending shards of this worker; returns the manifest once every shard exists."""
    pending = self.prepare()
    if self.num_processes > 1 and len(pending) > 1:
      # 'spawn': TensorFlow is not fork-safe once its runtime has started.
      with multiprocessing.get_context('spawn').Pool(self.num_processes) as pool:
        for _ in pool.imap_unordered(self.write_shard, pending):
          pass
    else:
      for index in pending:
        self.write_shard(index)
    return self.finish()

  def finish(self) -> Optional[Dict[str, Any]]:
    """Writes and returns the manifest if every shard is finished; None while some are not."""
    all_paths = [self.shard_path(i) for i in range(self.num_shards)]
    if not all(shards.is_finished(p) for p in all_paths):
      logging.info('other workers still have shards to write; no manifest yet')
      return None
    info = {'source': self.source.name, 'num_shards': self.num_shards,
            'mask_kind': self.spec.kind, 'mask_names': self.spec.names(),
            'fh_settings': [list(s) for s in self.spec.fh_settings] if self.spec.kind == 'fh'
                           else [],
            'fh_downscale': self.spec.fh_downscale if self.spec.kind == 'fh' else None,
            'fh_min_working_side': (self.spec.fh_min_working_side if self.spec.kind == 'fh'
                                    else None),
            # The settings at fh_downscale itself; images near fh_min_working_side run at
            # factors between it and 1 (their counts are under fh_working_factor/).
            'fh_working_settings': [
                list(masks_lib.fh_working_settings(s, self.spec.fh_downscale))
                for s in self.spec.fh_settings] if self.spec.kind == 'fh' else [],
            'on_bad_example': self.policy.on_bad_example}
    return shards.write_manifest(self.out_dir, all_paths, info)


def sequence_of_settings(text: Sequence[str]) -> Tuple[Tuple[float, float, int], ...]:
  """Parses 'scale:sigma:min_size' strings."""
  settings = []
  for item in text:
    try:
      scale, sigma, min_size = item.split(':')
      settings.append((float(scale), float(sigma), int(min_size)))
    except ValueError as e:
      raise ValueError(f"FH setting {item!r} is not 'scale:sigma:min_size'") from e
  return tuple(settings)
