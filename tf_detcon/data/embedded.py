"""The embedded default dataset: scikit-image's sample images with FH masks, built once, cached.

Used when a config names no input: the README's main command and most tests train on it. The build
is the ordinary precompute job, so it is atomic and safe to interrupt.
"""

import os
from typing import List

from absl import logging

from tf_detcon.data import masks as masks_lib
from tf_detcon.data import precompute
from tf_detcon.data import records
from tf_detcon.data import sources

# Bump when the images, their size or the mask settings change, so stale caches are not reused.
EMBEDDED_VERSION = 'v1'
EMBEDDED_MAX_SIDE = 256
EMBEDDED_SHARDS = 2


def cache_dir() -> str:
  root = os.environ.get('TF_DETCON_CACHE',
                        os.path.join(os.path.expanduser('~'), '.cache', 'tf_detcon'))
  return os.path.join(root, f'embedded-{EMBEDDED_VERSION}')


def embedded_files() -> List[str]:
  """TFRecord paths of the embedded dataset, building it on first use (a few seconds)."""
  out_dir = cache_dir()
  if not os.path.exists(os.path.join(out_dir, records.MANIFEST_NAME)):
    logging.info('building the embedded sample dataset in %s', out_dir)
    precompute.Job(
        source=sources.SampleImageSource(max_side=EMBEDDED_MAX_SIDE),
        out_dir=out_dir,
        num_shards=EMBEDDED_SHARDS,
        # COCO's three scales, so the multi-mask path is exercised by default.
        spec=precompute.MaskSpec(kind='fh', fh_settings=masks_lib.COCO_FH_SETTINGS),
        prefix='embedded').run()
  return precompute.shard_paths_from_manifest(out_dir)
