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
import json
import multiprocessing
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError
import tensorflow as tf

from tf_detcon.data import records
from tf_detcon.data.offline import masks as masks_lib
from tf_detcon.data.offline import shards
from tf_detcon.data.offline import sources


PROGRESS_EVERY = 100  # examples between progress lines inside a shard
JOB_NAME = 'job.json'  # the request an output folder was written for (`Job.check_output_dir`)


class BadExampleError(ValueError):
  """An input that cannot give a correct image/mask pair; names the example and the reason."""

  def __init__(self, key: str, reason: str, detail: str = ''):
    self.key = key
    self.reason = reason
    super().__init__(f'example {key!r}: {reason}' + (f' ({detail})' if detail else ''))


@dataclasses.dataclass
class FHMasks:
  """Felzenszwalb–Huttenlocher's settings (DetCon §3.2): one map per (scale, sigma, min_size)
  setting, at most `max_segments` segments each, computed at the image's working resolution
  (`masks_lib.fh_working_downscale` of `downscale` and `min_working_side`)."""
  settings: Tuple[Tuple[float, float, int], ...] = masks_lib.IMAGENET_FH_SETTINGS
  max_segments: Optional[int] = masks_lib.MAX_UINT8_SEGMENTS
  downscale: float = masks_lib.PAPER_FH_DOWNSCALE  # see masks_lib.fh_segments
  # Per image: full resolution up to this short side, never below it (fh_working_downscale).
  min_working_side: int = masks_lib.FH_MIN_WORKING_SIDE


@dataclasses.dataclass
class MaskSpec:
  """Which id maps to store, as a one-of: `kind` names the registered `MaskSource` ('fh', 'gt',
  'file', or one of a user's), and a source with settings of its own reads its block (`fh`). A
  block set for another kind is refused, not ignored."""
  kind: str = 'fh'
  fh: FHMasks = dataclasses.field(default_factory=FHMasks)

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if field.name not in ('kind', self.kind) and (
          getattr(self, field.name) != field.default_factory()):
        raise ValueError(f'mask settings {field.name!r} are set but the mask kind is '
                         f'{self.kind!r}')

  def names(self) -> List[str]:
    return mask_source(self.kind).names(self)


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


EXIF_ORIENTATION = 0x0112

# PIL modes of one deep channel (16-bit PNG/TIFF, 32-bit int, float), which `convert('RGB')`
# clips at 255 instead of rescaling.
DEEP_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')


def _deep_to_uint8(pil: Image.Image) -> np.ndarray:
  """A deep single-channel image as uint8 RGB: 16-bit by 255/65535 (the top byte, rounded);
  32-bit int and float images by their own range, since they carry no fixed white point."""
  values = np.asarray(pil).astype(np.float64)
  if pil.mode.startswith('I;16') or (pil.mode == 'I' and values.min() >= 0
                                      and values.max() <= 65535):
    low, high = 0.0, 65535.0
  else:
    low, high = float(values.min()), float(values.max())
  scaled = (values - low) * (255.0 / max(high - low, 1e-12))
  gray = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=-1)


def decode_image(raw: sources.RawExample,
                 max_pixels: int = Policy.max_image_pixels) -> Tuple[np.ndarray, bytes, str]:
  """Decodes and validates an image; returns (uint8 RGB array, bytes to store, conversion).

  JPEG/PNG images in RGB or grayscale are stored as received and decoded by TF, so the masks are
  computed on exactly the pixels training sees (JPEG decoders differ slightly); anything else
  (CMYK, RGBA, palette, other formats) is converted to RGB by PIL and stored as PNG, and deep
  images (16-bit, 32-bit, float) are rescaled to 8 bits first. An image whose EXIF orientation
  is not the identity (a phone photo held sideways) is turned as a viewer shows it and stored
  as PNG: TF's decoders ignore EXIF, so its bytes as received would train sideways and a mask
  drawn on it as seen would not fit. The conversion is '' (none), 'converted_to_rgb',
  'rescaled_to_8bit' or 'exif_rotated', the statistic it is counted under.
  """
  if raw.image is not None:
    image = np.asarray(raw.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise BadExampleError(raw.key, 'not a uint8 RGB array', f'{image.dtype} {image.shape}')
    return image, shards.encode_png(image), ''
  if raw.read_error:
    raise BadExampleError(raw.key, 'unreadable file', raw.read_error)
  if not raw.image_bytes:
    raise BadExampleError(raw.key, 'empty image file')
  try:
    with Image.open(io.BytesIO(raw.image_bytes)) as pil:
      size = pil.size
      if size[0] * size[1] <= max_pixels:
        pil.load()  # raises on truncated data
        image_format, mode = pil.format, pil.mode
        orientation = exif_orientation(pil)
        upright = ImageOps.exif_transpose(pil) if orientation != 1 else pil
        rgb = (_deep_to_uint8(upright) if mode in DEEP_MODES
               else np.asarray(upright.convert('RGB')))
  except Image.DecompressionBombError as e:
    raise BadExampleError(raw.key, 'image too large', str(e)) from e
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise BadExampleError(raw.key, 'corrupt or truncated image', str(e)) from e
  if size[0] * size[1] > max_pixels:
    raise BadExampleError(raw.key, 'image too large',
                          f'{size[0]}x{size[1]} > {max_pixels} pixels')
  if image_format in ('JPEG', 'PNG') and mode in ('RGB', 'L') and orientation == 1:
    image = tf.io.decode_image(raw.image_bytes, channels=3, expand_animations=False).numpy()
    return image, raw.image_bytes, ''
  image = np.asarray(rgb, dtype=np.uint8)
  if orientation != 1:
    conversion = 'exif_rotated'
  else:
    conversion = 'rescaled_to_8bit' if mode in DEEP_MODES else 'converted_to_rgb'
  return image, shards.encode_png(image), conversion


def exif_orientation(pil: Image.Image) -> int:
  """The image's EXIF orientation tag (1–8; 1, the identity, when absent or unreadable)."""
  try:
    value = pil.getexif().get(EXIF_ORIENTATION, 1)
  except (OSError, ValueError, SyntaxError):
    return 1
  return value if isinstance(value, int) and 1 <= value <= 8 else 1


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


class MaskSource:
  """One kind of stored id maps (`--mask_kind`): its map names, how it makes an image's maps,
  and the settings of its own that a job records (`job.json`, `manifest.json`). A new kind is
  one subclass, registered with `register_mask_source`."""
  kind = ''

  def names(self, spec: MaskSpec) -> List[str]:
    del spec
    return [self.kind]

  def make(self, raw: sources.RawExample, image: np.ndarray, spec: MaskSpec,
           stats: Optional[collections.Counter]) -> List[np.ndarray]:
    raise NotImplementedError

  def settings(self, spec: MaskSpec) -> Dict[str, Any]:
    """The spec's settings this kind uses, as job.json and manifest.json record them. A kind
    without settings records FH's keys empty, as every job.json has, so that a folder written
    by an earlier version resumes."""
    del spec
    return {'fh_settings': [], 'fh_downscale': None, 'fh_min_working_side': None,
            'max_segments': masks_lib.MAX_UINT8_SEGMENTS}

  def manifest_settings(self, spec: MaskSpec) -> Dict[str, Any]:
    return dict(self.settings(spec), fh_working_settings=[])


_MASK_SOURCES: Dict[str, MaskSource] = {}


def register_mask_source(cls: type) -> type:
  _MASK_SOURCES[cls.kind] = cls()
  return cls


def mask_source(kind: str) -> MaskSource:
  if kind not in _MASK_SOURCES:
    raise ValueError(f'mask kind must be one of {", ".join(repr(k) for k in MASK_KINDS)}, got '
                     f'{kind!r}')
  return _MASK_SOURCES[kind]


@register_mask_source
class FHSource(MaskSource):
  """Felzenszwalb–Huttenlocher segments, one map per (scale, sigma, min_size) setting (DetCon
  §3.2), at the image's working resolution (`masks.fh_working_downscale`)."""
  kind = 'fh'

  def names(self, spec: MaskSpec) -> List[str]:
    return [f'fh_{scale:g}_{sigma:g}_{min_size}' for scale, sigma, min_size in spec.fh.settings]

  def make(self, raw, image, spec, stats):
    height, width = image.shape[:2]
    maps = []
    factor = masks_lib.fh_working_downscale(height, width, spec.fh.downscale,
                                            spec.fh.min_working_side)
    if stats is not None:  # the factors, in steps of 0.05
      stats[f'fh_working_factor/{round(factor * 20) / 20:.2f}'] += 1
    for scale, sigma, min_size in spec.fh.settings:
      ids, merged = masks_lib.fh_segments(image, scale, sigma, min_size, spec.fh.max_segments,
                                          factor)
      maps.append(ids)
      if stats is not None:
        stats['merged_segments'] += merged
    return maps

  def settings(self, spec):
    return {'fh_settings': [list(s) for s in spec.fh.settings],
            'fh_downscale': spec.fh.downscale,
            'fh_min_working_side': spec.fh.min_working_side,
            'max_segments': spec.fh.max_segments}

  def manifest_settings(self, spec):
    # The settings at fh_downscale itself; images near fh_min_working_side run at factors
    # between it and 1 (their counts are under fh_working_factor/).
    return dict(self.settings(spec), fh_working_settings=[
        list(masks_lib.fh_working_settings(s, spec.fh.downscale)) for s in spec.fh.settings])


@register_mask_source
class GroundTruthSource(MaskSource):
  """Ground-truth instance masks (COCO), painted into one id map (DetCon §4.4's 'GT')."""
  kind = 'gt'

  def make(self, raw, image, spec, stats):
    height, width = image.shape[:2]
    if raw.instance_masks is None:
      raise BadExampleError(raw.key, 'missing ground-truth masks')
    try:
      return [masks_lib.ground_truth_mask(raw.instance_masks, height, width)]
    except ValueError as e:
      raise BadExampleError(raw.key, 'mask does not match image size', str(e)) from e


@register_mask_source
class FileSource(MaskSource):
  """Id-map PNGs of the user's, named like the images (`--mask_dir`)."""
  kind = 'file'

  def make(self, raw, image, spec, stats):
    if raw.mask_missing or raw.mask_bytes is None:
      raise BadExampleError(raw.key, 'missing mask file')
    return [_decode_mask_file(raw)]


MASK_KINDS = tuple(_MASK_SOURCES)


def make_masks(raw: sources.RawExample, image: np.ndarray, spec: MaskSpec,
               stats: Optional[collections.Counter] = None) -> List[np.ndarray]:
  """The id maps of one image, by its kind's source (`MaskSource.make`), each checked against
  the image size. FH counts its working factors in `stats['fh_working_factor/<f>']` and merged
  segments in `stats['merged_segments']`."""
  height, width = image.shape[:2]
  maps = mask_source(spec.kind).make(raw, image, spec, stats)
  for m in maps:
    if m.shape != (height, width):
      raise BadExampleError(raw.key, 'mask does not match image size',
                            f'mask {m.shape}, image {(height, width)}')
  return maps


def process_example(raw: sources.RawExample, spec: MaskSpec, policy: Policy,
                    stats: collections.Counter) -> bytes:
  """Validates one raw example and returns its serialised record; raises BadExampleError."""
  image, image_bytes, conversion = decode_image(raw, policy.max_image_pixels)
  height, width = image.shape[:2]
  if min(height, width) < policy.min_image_side:
    raise BadExampleError(raw.key, 'image smaller than the minimum side',
                          f'{height}x{width} < {policy.min_image_side}')
  maps = make_masks(raw, image, spec, stats)
  segments = max(int(m.max()) + 1 for m in maps)
  if segments < policy.min_segments:
    raise BadExampleError(raw.key, 'too few segments', f'{segments} < {policy.min_segments}')
  for name in ('converted_to_rgb', 'rescaled_to_8bit', 'exif_rotated'):
    stats[name] += int(conversion == name)
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
    self.check_output_dir()
    pending = self.pending_shards()
    done = len(range(self.worker_index, self.num_shards, self.num_workers)) - len(pending)
    logging.info('%s: %d examples, %d shards; worker %d/%d has %d done, %d to write',
                 self.source.name, len(self.source), self.num_shards, self.worker_index,
                 self.num_workers, done, len(pending))
    return pending

  def request(self) -> Dict[str, Any]:
    """What this job writes: the settings that must not change between a run and its rerun."""
    return {'source': self.source.name, 'examples': len(self.source),
            'num_shards': self.num_shards, 'prefix': self.prefix, 'mask_kind': self.spec.kind,
            **mask_source(self.spec.kind).settings(self.spec),
            # not on_bad_example: a shard finished under 'error' skipped nothing, so a rerun
            # with 'skip' (the usual answer to a bad example) resumes it
            'min_image_side': self.policy.min_image_side,
            'min_segments': self.policy.min_segments}

  def check_output_dir(self) -> None:
    """Resumes only the same request: refuses in one line an output folder whose shards were
    written with other settings (its `job.json`, or the manifest of an older run), or that holds
    record files this job would not write, which `<prefix>-*.tfrecord` would train on too."""
    request = self.request()
    job_path = os.path.join(self.out_dir, JOB_NAME)
    manifest_path = os.path.join(self.out_dir, records.MANIFEST_NAME)
    present = [os.path.basename(p)
               for p in tf.io.gfile.glob(os.path.join(self.out_dir, '*.tfrecord'))]
    # A request binds once a shard exists or while another worker of the folder runs; one whose
    # run wrote no shard and stopped (a bad flag or example) binds nothing.
    started = bool(present) or self._other_workers_running()
    before = None
    for path in (job_path, manifest_path) if started else ():
      if tf.io.gfile.exists(path):
        try:
          with tf.io.gfile.GFile(path) as f:
            before = json.load(f)
          if not isinstance(before, dict):
            raise ValueError(f'it holds a {type(before).__name__}')
        except (ValueError, UnicodeDecodeError, tf.errors.OpError) as e:
          if path == manifest_path:  # written again from the shards at the end
            continue
          raise ValueError(f'{path} is unreadable ({" ".join(str(e).split())[:120]}), so the '
                           'settings its shards were made with are unknown: delete it to resume '
                           'with these settings, or use another --output_dir') from e
        break
    if before is not None:
      changed = [f'{key} {before[key]!r} there, {value!r} now' for key, value in request.items()
                 if key in before and before[key] != value]
      if changed:
        raise ValueError(f'--output_dir {self.out_dir} holds shards made with other settings '
                         f'({"; ".join(changed[:3])}): use another --output_dir, or empty it '
                         'to start over')
    expected = {shards.shard_name(self.prefix, i, self.num_shards)
                for i in range(self.num_shards)}
    foreign = sorted(name for name in present if name not in expected)
    if foreign:
      raise ValueError(f'--output_dir {self.out_dir} holds record files this job does not write '
                       f'({", ".join(foreign[:3])}{" ..." if len(foreign) > 3 else ""}): use '
                       'another --output_dir, or move them away')
    text = json.dumps(request, indent=2, sort_keys=True)
    if not started:
      shards.atomic_write_text(job_path, text)
    elif before is None and not shards.create_exclusive(job_path, text):
      # Another worker wrote the request between our look and now: it must be ours.
      self.check_output_dir()

  def _other_workers_running(self) -> bool:
    """Whether a live process of another worker holds its lock in the output folder."""
    from tf_detcon.support import locks  # pylint: disable=g-import-not-at-top
    mine = f'.lock-worker-{self.worker_index}'
    for path in tf.io.gfile.glob(os.path.join(self.out_dir, '.lock-worker-*')):
      if os.path.basename(path) != mine and locks.held_by_live_process(path):
        return True
    return False

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
            **mask_source(self.spec.kind).manifest_settings(self.spec),
            'on_bad_example': self.policy.on_bad_example}
    return shards.write_manifest(self.out_dir, all_paths, info)


def sequence_of_settings(text: Sequence[str]) -> Tuple[Tuple[float, float, int], ...]:
  """Parses 'scale:sigma:min_size' strings."""
  settings = []
  for item in text:
    try:
      scale, sigma, min_size = item.split(':')
      setting = (float(scale), float(sigma), int(min_size))
    except ValueError as e:
      raise ValueError(f"--fh_setting {item!r} is not 'scale:sigma:min_size'") from e
    problems = [p for p, bad in (('scale must be > 0', not setting[0] > 0),
                                 ('sigma must be >= 0', not setting[1] >= 0),
                                 ('min_size must be >= 1', setting[2] < 1)) if bad]
    if problems:  # FH's k, Gaussian σ and minimum component size (DetCon §3.2, Felzenszwalb 2004)
      raise ValueError(f'--fh_setting {item!r}: {", ".join(problems)}')
    settings.append(setting)
  return tuple(settings)
