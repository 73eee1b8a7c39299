"""How good are stored masks? DetCon's Fig. 7 measure, and what the id maps hold.

Average Best Overlap (ABO): for every ground-truth instance, the IoU of the stored segment that
overlaps it best; averaged over all instances of all images (DetCon §4.3, Fig. 7: "the IoU
between each ground-truth mask and the closest pretraining mask, averaged over all ground truth
instances and images"). Alongside it, the number of segments per image (mean and quantiles) and
how many segments were merged to fit 256 ids (counted by the precompute job).
"""

import io
import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image
import tensorflow as tf

from tf_detcon.data import records


def best_overlaps(segments: np.ndarray, instances: Sequence[np.ndarray]) -> List[float]:
  """For each binary instance mask, the highest IoU of any segment of the id map `segments`."""
  segments = np.asarray(segments).astype(np.int64)
  num_ids = int(segments.max()) + 1
  areas = np.bincount(segments.ravel(), minlength=num_ids)
  out = []
  for mask in instances:
    mask = np.asarray(mask, bool)
    if mask.shape != segments.shape:
      raise ValueError(f'instance mask {mask.shape} does not match the id map {segments.shape}')
    size = int(mask.sum())
    if size == 0:
      continue
    intersection = np.bincount(segments[mask], minlength=num_ids)
    iou = intersection / (areas + size - intersection)
    out.append(float(iou.max()))
  return out


def segment_statistics(counts: Sequence[int]) -> Dict[str, float]:
  counts = np.asarray(counts, np.float64)
  if not counts.size:
    return {}
  return {'mean': float(counts.mean()), 'min': float(counts.min()),
          'p10': float(np.quantile(counts, 0.1)), 'median': float(np.median(counts)),
          'p90': float(np.quantile(counts, 0.9)), 'max': float(counts.max())}


def decode_png(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as pil:
    return np.asarray(pil)


def stored_masks(shard_paths: Iterable[str]):
  """(key, {mask name: id map}) of every example of the shards."""
  spec = {records.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
          records.MASK_ENCODED: tf.io.VarLenFeature(tf.string),
          records.MASK_NAMES: tf.io.VarLenFeature(tf.string)}
  for record in tf.data.TFRecordDataset(list(shard_paths)):
    example = tf.io.parse_single_example(record, spec)
    names = [n.decode() for n in tf.sparse.to_dense(example[records.MASK_NAMES]).numpy()]
    pngs = tf.sparse.to_dense(example[records.MASK_ENCODED]).numpy()
    yield (example[records.IMAGE_KEY].numpy().decode(),
           {name: decode_png(png) for name, png in zip(names, pngs)})


def instance_pngs(folder: str):
  """A lookup key → instance masks from a folder of instance-id PNGs (0 is no instance) named
  like the example keys (their stems)."""

  def lookup(key: str) -> Optional[List[np.ndarray]]:
    path = os.path.join(folder, os.path.splitext(key)[0] + '.png')
    if not os.path.exists(path):
      return None
    with Image.open(path) as pil:
      ids = np.asarray(pil)
    return [ids == i for i in np.unique(ids) if i != 0]

  return lookup


def coco_instances(annotation_file: str):
  """A lookup key (COCO file_name) → the image's non-crowd instance masks."""
  from pycocotools import coco  # pylint: disable=g-import-not-at-top
  api = coco.COCO(annotation_file)
  by_name = {info['file_name']: image_id for image_id, info in api.imgs.items()}

  def lookup(key: str) -> Optional[List[np.ndarray]]:
    if key not in by_name:
      return None
    anns = api.loadAnns(api.getAnnIds(imgIds=by_name[key], iscrowd=False))
    return [api.annToMask(a) for a in anns]

  return lookup


def report(shard_paths: Sequence[str], instances=None,
           merged_segments: Optional[int] = None) -> Dict[str, object]:
  """The report of stored masks, per mask name: segments per image and, with an instance lookup
  (`instance_pngs` / `coco_instances`), the ABO over the examples it knows."""
  segments: Dict[str, List[int]] = {}
  overlaps: Dict[str, List[float]] = {}
  matched = 0
  for key, maps in stored_masks(shard_paths):
    truth = instances(key) if instances is not None else None
    matched += truth is not None
    for name, ids in maps.items():
      segments.setdefault(name, []).append(len(np.unique(ids)))
      if truth is not None:
        overlaps.setdefault(name, []).extend(best_overlaps(ids, truth))
  out: Dict[str, object] = {
      name: {'segments_per_image': segment_statistics(counts), 'images': len(counts)}
      for name, counts in segments.items()}
  for name, values in overlaps.items():
    out[name]['abo'] = float(np.mean(values)) if values else None
    out[name]['ground_truth_instances'] = len(values)
  if instances is not None:
    out['images_with_ground_truth'] = matched
  if merged_segments is not None:
    out['merged_segments'] = merged_segments
  return out
