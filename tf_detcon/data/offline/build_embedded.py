"""Builds the embedded sample dataset once (a few seconds): scikit-image's sample images,
downscaled to 256 px, with FH masks at COCO's three scales so the multi-mask path is exercised.

The build is the ordinary precompute job, so it is atomic and safe to interrupt. Run it as
`python -m tf_detcon.data.offline.build_embedded`; the launchers call `ensure()` themselves.
"""

from typing import List

from absl import logging

from tf_detcon.data import embedded
from tf_detcon.data.offline import masks as masks_lib
from tf_detcon.data.offline import precompute
from tf_detcon.data.offline import sources

EMBEDDED_MAX_SIDE = 256
EMBEDDED_SHARDS = 2


def ensure() -> List[str]:
  """The embedded set's shard paths, building it first if needed."""
  if not embedded.is_built():
    logging.info('building the embedded sample dataset in %s', embedded.cache_dir())
    precompute.Job(
        source=sources.SampleImageSource(max_side=EMBEDDED_MAX_SIDE),
        out_dir=embedded.cache_dir(),
        num_shards=EMBEDDED_SHARDS,
        spec=precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=masks_lib.COCO_FH_SETTINGS)),
        prefix='embedded').run()
  return embedded.files()


if __name__ == '__main__':
  print('\n'.join(ensure()))
