"""Writing pretraining shards (offline): PNG id maps, examples, atomic shards and the manifest.

A shard is written under a unique temporary name and renamed into place when complete, with its
statistics beside it, so a shard that exists is finished, concurrent writers never collide, and
an interrupted job leaves only temporary files, which a rerun overwrites.
"""

import io
import json
import os
import uuid
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image
import tensorflow as tf

from tf_detcon.data import records


def encode_png(array: np.ndarray) -> bytes:
  """PNG bytes of a uint8/uint16 [H, W] id map or uint8 [H, W, 3] image."""
  buffer = io.BytesIO()
  if array.dtype == np.uint16:
    Image.fromarray(array).save(buffer, format='PNG')  # mode I;16: a 16-bit PNG
  elif array.dtype == np.uint8:
    Image.fromarray(array).save(buffer, format='PNG')
  else:
    raise ValueError(f'PNG encoding takes uint8 or uint16, got {array.dtype}')
  return buffer.getvalue()


def _bytes_feature(values: Sequence[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _int_feature(values: Sequence[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def make_example(key: str, image_bytes: bytes, height: int, width: int,
                 masks: Sequence[np.ndarray], mask_names: Sequence[str]) -> bytes:
  """Serialises one pretraining example; masks must all be [height, width]."""
  for name, mask in zip(mask_names, masks):
    if mask.shape != (height, width):
      raise ValueError(f'{key}: mask {name!r} is {mask.shape}, image is {(height, width)}')
  features = {
      records.IMAGE_KEY: _bytes_feature([key.encode('utf-8')]),
      records.IMAGE_ENCODED: _bytes_feature([image_bytes]),
      records.IMAGE_HEIGHT: _int_feature([height]),
      records.IMAGE_WIDTH: _int_feature([width]),
      records.MASK_ENCODED: _bytes_feature([encode_png(m) for m in masks]),
      records.MASK_NAMES: _bytes_feature([n.encode('utf-8') for n in mask_names]),
  }
  # deterministic: map entries in key order, so a rerun or another runner writes identical bytes
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(
      deterministic=True)


def shard_name(prefix: str, index: int, num_shards: int) -> str:
  return f'{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord'


def _temporary_name(path: str) -> str:
  """A name beside `path` that no concurrent writer shares (two workers may race on a shard)."""
  return f'{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'


def atomic_write_text(path: str, text: str) -> None:
  tmp = _temporary_name(path)
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def create_exclusive(path: str, text: str) -> bool:
  """Writes `path` unless it exists (atomically on a local disk: O_EXCL; on an object store,
  written and read back); False if it existed."""
  if '://' in path:
    if tf.io.gfile.exists(path):
      return False
    atomic_write_text(path, text)
    with tf.io.gfile.GFile(path) as f:
      return f.read() == text
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  return True


class ShardWriter:
  """Writes one shard under a temporary name and renames it into place when complete.

  A shard's statistics go to `<shard>.json` before the rename, so a shard that exists is finished
  and its counts are known; an interrupted run leaves only `*.tmp` files, which a rerun overwrites.
  """

  def __init__(self, path: str):
    self.path = path
    self._tmp = _temporary_name(path)
    self._writer: Optional[tf.io.TFRecordWriter] = None
    self.stats: Dict[str, Any] = {'examples': 0}

  def __enter__(self) -> 'ShardWriter':
    self._writer = tf.io.TFRecordWriter(self._tmp)
    return self

  def write(self, record: bytes) -> None:
    self._writer.write(record)
    self.stats['examples'] += 1

  def __exit__(self, exc_type, exc, tb) -> None:
    self._writer.close()
    if exc_type is not None:
      tf.io.gfile.remove(self._tmp)
      return
    # The shard's size, to tell a finished shard from a torn one (not a statistic: not summed).
    stats = dict(self.stats, **{SIZE_KEY: tf.io.gfile.stat(self._tmp).length})
    atomic_write_text(stats_path(self.path), json.dumps(stats, sort_keys=True))
    tf.io.gfile.rename(self._tmp, self.path, overwrite=True)


SIZE_KEY = '_bytes'


def stats_path(shard_path: str) -> str:
  return shard_path + '.json'


def read_stats(shard_path: str) -> Optional[Dict[str, Any]]:
  """A shard's statistics; None if its file is missing or unreadable."""
  try:
    with tf.io.gfile.GFile(stats_path(shard_path)) as f:
      stats = json.load(f)
  except (tf.errors.OpError, ValueError, UnicodeDecodeError):
    return None
  return stats if isinstance(stats, dict) else None


def is_finished(shard_path: str) -> bool:
  """Whether the shard and its statistics are whole: both readable, and the shard of the size
  it was written with (a truncated or replaced shard is written again)."""
  if not tf.io.gfile.exists(shard_path):
    return False
  stats = read_stats(shard_path)
  if stats is None:
    return False
  return SIZE_KEY not in stats or tf.io.gfile.stat(shard_path).length == stats[SIZE_KEY]


def write_manifest(out_dir: str, shard_paths: Iterable[str],
                   info: Dict[str, Any]) -> Dict[str, Any]:
  """Sums the shards' statistics into `manifest.json` (atomically) and returns it."""
  totals: Dict[str, int] = {}
  files: List[str] = []
  for path in shard_paths:
    for name, value in read_stats(path).items():
      if not name.startswith('_'):
        totals[name] = totals.get(name, 0) + value
    files.append(os.path.basename(path))
  manifest = dict(info, files=files, totals=totals)
  atomic_write_text(os.path.join(out_dir, records.MANIFEST_NAME),
                     json.dumps(manifest, indent=2, sort_keys=True))
  return manifest


def update_manifest(out_dir: str, **entries: Any) -> Dict[str, Any]:
  """Adds entries (e.g. the mask-quality report) to `manifest.json`, atomically."""
  manifest = dict(records.read_manifest(out_dir), **entries)
  atomic_write_text(os.path.join(out_dir, records.MANIFEST_NAME),
                     json.dumps(manifest, indent=2, sort_keys=True))
  return manifest

