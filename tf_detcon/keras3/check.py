"""Features of a KerasHub preset on the backend this process runs (KERAS_BACKEND).

  python -m tf_detcon.keras3.check PRESET IMAGES.npy OUT.npz

loads the preset as a user does (`keras_hub.models.Backbone.from_preset`, with its image
converter), runs uint8 images [N, H, W, 3] through it in inference mode, and writes
{'2': res2, ..., and with a decoder 'p2': ...} float32, the keys of our frozen encoders
(evaluation/frozen.py). The preset writer (`preset.py`) runs it once per backend in a process of
its own, since Keras fixes its backend at import. A failure prints one line and exits with 2.
"""

import sys
from typing import Dict

import numpy as np


def features(preset: str, images: np.ndarray) -> Dict[str, np.ndarray]:
  """{level: features} of `preset` on `images`, on this process's Keras backend."""
  import keras  # pylint: disable=g-import-not-at-top
  import keras_hub  # pylint: disable=g-import-not-at-top
  from tf_detcon.keras3 import backbone as _  # pylint: disable=g-import-not-at-top  (registers ours)
  backbone = keras_hub.models.Backbone.from_preset(preset)
  converter = keras_hub.layers.ImageConverter.from_preset(preset)
  outputs = {level[1:]: value for level, value in backbone.pyramid_outputs.items()}
  outputs.update({f'p{level[1:]}': value
                  for level, value in getattr(backbone, 'decoder_outputs', {}).items()})
  model = keras.Model(backbone.inputs, outputs)
  result = model(converter(images.astype('float32')), training=False)
  return {level: np.asarray(keras.ops.convert_to_numpy(value), np.float32)
          for level, value in result.items()}


def main(argv) -> int:
  if len(argv) != 4:
    print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
    return 2
  _, preset, images, out = argv
  try:
    np.savez(out, **features(preset, np.load(images)))
  except Exception as e:  # pylint: disable=broad-except  (reported in one line to the writer)
    print(f'{type(e).__name__}: {" ".join(str(e).split())[:300]}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
