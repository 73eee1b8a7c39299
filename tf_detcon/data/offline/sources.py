"""Where raw images come from: image folders, TFDS datasets, COCO annotations, and the embedded
sample set built from the images scikit-image ships (no download).

A source is a sized sequence read by index range, so that the precompute job can split it into
shards deterministically and any worker can produce any shard.
"""

import dataclasses
import os
from typing import Iterator, List, Optional, Sequence

import numpy as np

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')


@dataclasses.dataclass
class RawExample:
  """One input before validation. Exactly one of image_bytes / image is set."""
  key: str
  image_bytes: Optional[bytes] = None
  image: Optional[np.ndarray] = None
  instance_masks: Optional[List[np.ndarray]] = None  # ground truth, for 'gt' masks
  mask_bytes: Optional[bytes] = None  # a precomputed id map, for 'file' masks
  mask_missing: bool = False
  read_error: str = ''  # why the file could not be read (a dangling link, no permission)


class Source:
  """A sized, index-addressable collection of raw examples."""

  name: str = 'source'

  def __len__(self) -> int:
    raise NotImplementedError

  def read(self, start: int, stop: int) -> Iterator[RawExample]:
    raise NotImplementedError


def image_files(root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
  """Every image file below `root`, sorted, as paths relative to it: searched recursively,
  through symbolic links to folders too, each real folder once (a link back up is no loop)."""
  files, seen = [], set()
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in seen:
      dirnames[:] = []
      continue
    seen.add(real)
    dirnames.sort()
    for filename in filenames:
      if filename.lower().endswith(tuple(extensions)):
        files.append(os.path.relpath(os.path.join(dirpath, filename), root))
  return sorted(files)


class ImageFolderSource(Source):
  """Every image file below `root` (`image_files`); keys are paths relative to `root`.

  With `mask_dir`, each image takes its id map from `<mask_dir>/<relative path stem>.png`.
  """

  def __init__(self, root: str, mask_dir: Optional[str] = None,
               extensions: Sequence[str] = IMAGE_EXTENSIONS):
    if not os.path.isdir(root):
      raise ValueError(f'image folder {root!r} does not exist')
    self.name = f'folder:{os.path.abspath(root)}'
    self.root = root
    self.mask_dir = mask_dir
    self.files = image_files(root, extensions)
    if not self.files:
      raise ValueError(f'no image files ({", ".join(extensions)}) under {root!r}')

  def __len__(self) -> int:
    return len(self.files)

  def read(self, start: int, stop: int) -> Iterator[RawExample]:
    for relpath in self.files[start:stop]:
      try:
        with open(os.path.join(self.root, relpath), 'rb') as f:
          example = RawExample(key=relpath, image_bytes=f.read())
      except OSError as e:  # a dangling link, a file without read permission
        example = RawExample(key=relpath, read_error=e.strerror or str(e))
      if self.mask_dir is not None:
        mask_path = os.path.join(self.mask_dir, os.path.splitext(relpath)[0] + '.png')
        if os.path.exists(mask_path):
          with open(mask_path, 'rb') as f:
            example.mask_bytes = f.read()
        else:
          example.mask_missing = True
      yield example


class TfdsSource(Source):
  """A TFDS split already prepared under `data_dir` (e.g. imagenet2012, coco/2017).

  Images are read encoded (no decode/re-encode); slices `split[a:b]` make shards.
  """

  def __init__(self, name: str, split: str, data_dir: Optional[str] = None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self._tfds = tfds
    self.name = f'tfds:{name}/{split}'
    try:
      self.builder = tfds.builder(name, data_dir=data_dir)
      self.num_examples = self.builder.info.splits[split].num_examples
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'TFDS dataset {name!r} split {split!r} is not prepared under '
                       f'{data_dir!r}: {e}') from e
    self.split = split

  def __len__(self) -> int:
    return self.num_examples

  def read(self, start: int, stop: int) -> Iterator[RawExample]:
    ds = self.builder.as_dataset(
        split=f'{self.split}[{start}:{stop}]', shuffle_files=False,
        decoders={'image': self._tfds.decode.SkipDecoding()})
    for i, features in enumerate(ds.as_numpy_iterator()):
      key = features.get('image/filename', features.get('image/id', start + i))
      if isinstance(key, bytes):
        key = key.decode('utf-8')
      yield RawExample(key=str(key), image_bytes=features['image'])


class CocoSource(Source):
  """COCO images with their instance masks (crowd regions excluded), for ground-truth masks."""

  def __init__(self, annotation_file: str, image_dir: str):
    from pycocotools import coco  # pylint: disable=g-import-not-at-top
    if not os.path.exists(annotation_file):
      raise ValueError(f'COCO annotation file {annotation_file!r} does not exist')
    self.name = f'coco:{os.path.abspath(annotation_file)}'
    self.coco = coco.COCO(annotation_file)
    self.image_dir = image_dir
    self.image_ids = sorted(self.coco.getImgIds())

  def __len__(self) -> int:
    return len(self.image_ids)

  def read(self, start: int, stop: int) -> Iterator[RawExample]:
    for image_id in self.image_ids[start:stop]:
      info = self.coco.loadImgs(image_id)[0]
      anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=False))
      with open(os.path.join(self.image_dir, info['file_name']), 'rb') as f:
        image_bytes = f.read()
      yield RawExample(key=info['file_name'], image_bytes=image_bytes,
                       instance_masks=[self.coco.annToMask(a) for a in anns])


# Shipped inside scikit-image's wheel (skimage/data/*.png|jpg), so they load offline.
SAMPLE_IMAGE_NAMES = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry',
                      'hubble_deep_field', 'colorwheel', 'retina', 'camera', 'coins', 'moon',
                      'page', 'text', 'clock', 'brick', 'grass', 'gravel', 'cell')


class SampleImageSource(Source):
  """scikit-image's bundled sample images, RGB, downscaled so the longer side is `max_side`."""

  name = 'skimage-samples'

  def __init__(self, max_side: int = 256, names: Sequence[str] = SAMPLE_IMAGE_NAMES):
    self.max_side = max_side
    self.names = list(names)

  def __len__(self) -> int:
    return len(self.names)

  def read(self, start: int, stop: int) -> Iterator[RawExample]:
    from skimage import color, data, transform  # pylint: disable=g-import-not-at-top
    for name in self.names[start:stop]:
      image = getattr(data, name)()
      if image.ndim == 2:
        image = color.gray2rgb(image)
      image = image[..., :3]
      scale = self.max_side / max(image.shape[:2])
      if scale < 1:
        image = transform.rescale(image, scale, channel_axis=-1, anti_aliasing=True,
                                  preserve_range=True)
      yield RawExample(key=name, image=np.clip(np.round(image), 0, 255).astype(np.uint8))
