"""The TFRecord schema of pretraining examples, and reading it (graph side, TF only).

One example holds the encoded image (JPEG or PNG) and one or more PNG id maps of the same size:
one per FH scale (COCO uses three, one drawn per example at training time), or the
ground-truth map. PNGs are 8-bit when the ids fit, else 16-bit. `offline.shards` writes them.
"""

import json
import os
from typing import Any, Dict, List

import tensorflow as tf

IMAGE_KEY = 'image/key'
IMAGE_ENCODED = 'image/encoded'
IMAGE_HEIGHT = 'image/height'
IMAGE_WIDTH = 'image/width'
MASK_ENCODED = 'mask/encoded'
MASK_NAMES = 'mask/names'

MANIFEST_NAME = 'manifest.json'


def parse_example(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Graph-side parse of `make_example` records (masks stay encoded)."""
  spec = {
      IMAGE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
      IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string, default_value=''),
      MASK_ENCODED: tf.io.VarLenFeature(tf.string),
  }
  parsed = tf.io.parse_single_example(serialized, spec)
  parsed[MASK_ENCODED] = tf.sparse.to_dense(parsed[MASK_ENCODED], default_value='')
  return parsed


def read_manifest(out_dir: str) -> Dict[str, Any]:
  with tf.io.gfile.GFile(os.path.join(out_dir, MANIFEST_NAME)) as f:
    return json.load(f)


def shard_paths_from_manifest(out_dir: str) -> List[str]:
  """The shard files a finished precompute job lists in its manifest."""
  manifest = read_manifest(out_dir)
  return [os.path.join(out_dir, f) for f in manifest['files']]


def unlisted_files(files: List[str]) -> List[str]:
  """Record files beside a manifest that does not list them: shards of another precompute run
  (other settings, another shard count) that a `pretrain-*.tfrecord` pattern would train on too.
  """
  listed: Dict[str, set] = {}
  out = []
  for path in files:
    folder = os.path.dirname(path)
    if folder not in listed:
      manifest = os.path.join(folder, MANIFEST_NAME)
      listed[folder] = (set(read_manifest(folder).get('files', []))
                        if tf.io.gfile.exists(manifest) else None)
    if listed[folder] is not None and os.path.basename(path) not in listed[folder]:
      out.append(path)
  return out
