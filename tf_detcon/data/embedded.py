"""Where the embedded sample dataset lives: scikit-image's sample images with FH masks.

Used when a config names no input (`task.train_data.input_path: ''`): the README's main command
and most tests train on it. Reading it needs nothing of the offline precompute; building it is
`tf_detcon.data.offline.build_embedded`, which the launchers run on first use.
"""

import os
from typing import List

import tensorflow as tf

from tf_detcon.data import records

# Bump when the images, their size or the mask settings change, so stale caches are not reused.
EMBEDDED_VERSION = 'v1'


def cache_dir() -> str:
  """`$TF_DETCON_CACHE/embedded-<version>` (default `~/.cache/tf_detcon`)."""
  root = os.environ.get('TF_DETCON_CACHE',
                        os.path.join(os.path.expanduser('~'), '.cache', 'tf_detcon'))
  return os.path.join(root, f'embedded-{EMBEDDED_VERSION}')


def is_built() -> bool:
  return tf.io.gfile.exists(os.path.join(cache_dir(), records.MANIFEST_NAME))


def files() -> List[str]:
  """The embedded set's TFRecord shards; a clear error if it has not been built."""
  if not is_built():
    raise ValueError(f'the embedded sample dataset is not built in {cache_dir()}: run '
                     '`python -m tf_detcon.data.offline.build_embedded` (the launchers build it '
                     'on first use), or set task.train_data.input_path')
  return records.shard_paths_from_manifest(cache_dir())
