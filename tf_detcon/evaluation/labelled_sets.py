"""Labelled sets for the dense probes: images and per-pixel class labels, resized to a square.

Three sources: Model Garden's semantic-segmentation TFRecords (`image/encoded`,
`image/segmentation/class/encoded`: what `seg_detcon_pascal_fcn` trains on, e.g. PASCAL VOC), a
folder of images with a folder of label PNGs matched by file stem, and the synthetic scenes of
`data/offline/scenes.py`. Images are resized bilinearly (antialiased) and labels
nearest-neighbour, so a label keeps its class and its ignore value.
"""

import dataclasses
import io
import os
from typing import Iterator, List, Optional, Tuple

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps
import tensorflow as tf

from tf_detcon.data.offline import scenes

# Classes of the synthetic scenes' maps (background and the shapes' kinds).
SYNTHETIC_NUM_CLASSES = scenes.NUM_CLASSES
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


@dataclasses.dataclass
class LabelledSet:
  name: str
  images: np.ndarray  # uint8 [N, S, S, 3]
  labels: np.ndarray  # int32 [N, S, S]; ignore_label where unlabelled


def _resize(image: np.ndarray, label: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
  image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
  label = np.asarray(Image.fromarray(label.astype(np.int32)).resize((size, size), Image.NEAREST))
  return image, label.astype(np.int32)


def _stack(name: str, pairs: Iterator[Tuple[np.ndarray, np.ndarray]], size: int,
           limit: Optional[int]) -> LabelledSet:
  images, labels = [], []
  for image, label in pairs:
    image, label = _resize(image, label, size)
    images.append(image)
    labels.append(label)
    if limit and len(images) >= limit:
      break
  if not images:
    raise ValueError(f'{name}: no labelled images')
  return LabelledSet(name, np.stack(images), np.stack(labels))


def _read_image(path: str) -> np.ndarray:
  """An image file as a viewer shows it (its EXIF orientation applied), RGB."""
  with Image.open(path) as pil:
    return np.asarray(ImageOps.exif_transpose(pil).convert('RGB'))


def from_folders(image_dir: str, label_dir: str, size: int,
                 limit: Optional[int] = None) -> LabelledSet:
  """Images under `image_dir` with the label PNG of the same stem under `label_dir`."""
  for flag, folder in (('images', image_dir), ('labels', label_dir)):
    if not folder or not os.path.isdir(folder):
      raise ValueError(f'{flag} folder {folder!r} does not exist')
  names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(IMAGE_EXTENSIONS))
  if not names:
    raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {image_dir!r}')

  def pairs():
    for name in names:
      stem = os.path.splitext(name)[0]
      label_path = os.path.join(label_dir, stem + '.png')
      if not os.path.exists(label_path):
        raise ValueError(f'image {name!r} has no label {stem}.png in {label_dir!r}')
      image = _read_image(os.path.join(image_dir, name))
      with Image.open(label_path) as pil:
        label = np.asarray(ImageOps.exif_transpose(pil))
      if label.ndim != 2:
        raise ValueError(f'label {label_path!r} is not a single-channel class map '
                         f'(shape {label.shape})')
      if label.shape != image.shape[:2]:
        raise ValueError(f'label {label_path!r} is {label.shape[1]}x{label.shape[0]} but its '
                         f'image is {image.shape[1]}x{image.shape[0]}')
      yield image, label

  return _stack(os.path.basename(os.path.normpath(image_dir)), pairs(), size, limit)


def from_tfrecords(pattern: str, size: int, limit: Optional[int] = None) -> LabelledSet:
  """Model Garden semantic-segmentation TFRecords (comma-separated patterns)."""
  files: List[str] = []
  for part in (p.strip() for p in pattern.split(',') if p.strip()):
    matched = sorted(tf.io.gfile.glob(part))
    if not matched:
      raise ValueError(f'--input_path {part!r} matches no file')
    files += matched
  spec = {'image/encoded': tf.io.FixedLenFeature([], tf.string, default_value=''),
          'image/segmentation/class/encoded': tf.io.FixedLenFeature([], tf.string,
                                                                    default_value='')}

  def pairs():
    for index, record in enumerate(tf.data.TFRecordDataset(files)):
      example = tf.io.parse_single_example(record, spec)
      encoded_label = example['image/segmentation/class/encoded'].numpy()
      if not encoded_label:
        raise ValueError(f'record {index} of {pattern!r} has no image/segmentation/class/encoded')
      image = _read_image(io.BytesIO(example['image/encoded'].numpy()))
      label = np.asarray(Image.open(io.BytesIO(encoded_label)))
      if label.ndim == 3:
        label = label[..., 0]
      if label.shape != image.shape[:2]:
        raise ValueError(f'record {index} of {pattern!r}: label {label.shape} does not match '
                         f'image {image.shape[:2]}')
      yield image, label

  return _stack(os.path.basename(pattern.split(',')[0]), pairs(), size, limit)


def synthetic(split: str, count: int, size: int) -> LabelledSet:
  """`count` synthetic scenes of a probe split ('train' or 'eval'), their class maps."""
  logging.info('generating %d synthetic %s scenes', count, split)
  pairs = ((s.image, s.semantic) for _, s in scenes.scenes(split, count, size))
  return _stack(f'synthetic-{split}', pairs, size, None)
