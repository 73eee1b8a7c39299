"""Tests for tf_detcon.data.mask_sources: the grid against an independent computation, stored
maps drawn uniformly, and a new source that is one class and its config block, end to end
through the host pipeline."""

import collections
import dataclasses
import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.data import datasets
from tf_detcon.data import mask_sources
from tf_detcon.data import records
from tf_detcon.data.offline import shards


def test_grid_ids_match_an_independent_computation():
  for height, width, n in ((7, 10, 3), (224, 224, 4), (5, 5, 1), (3, 8, 4)):
    out = mask_sources.grid_ids(tf.constant(height), tf.constant(width), n).numpy()
    expected = np.zeros((height, width), np.int64)
    for r in range(height):
      for c in range(width):
        expected[r, c] = int(r * n / height) * n + int(c * n / width)
    np.testing.assert_array_equal(out, expected)


def _parsed(maps, size=(6, 8)):
  image = io.BytesIO()
  Image.fromarray(np.zeros(size + (3,), np.uint8)).save(image, format='PNG')
  example = shards.make_example('photo7', image.getvalue(), size[0], size[1], maps,
                                [f'fh{i}' for i in range(len(maps))])
  return records.parse_example(tf.constant(example))


def test_stored_maps_are_drawn_uniformly_and_a_missing_or_mismatched_map_is_named():
  maps = [np.full((6, 8), i, np.uint8) for i in range(3)]
  parsed = _parsed(maps)
  source = mask_sources.build(data_config.MaskConfig(type='stored'))
  image = tf.zeros([6, 8, 3], tf.uint8)
  drawn = collections.Counter(
      int(source.ids(image, parsed, tf.constant('photo7'), tf.constant([s, 1], tf.int64))
          .mask[0, 0]) for s in range(300))
  assert sorted(drawn) == [0, 1, 2] and min(drawn.values()) > 70  # ~100 each
  missing = source.ids(image, _parsed([]), tf.constant('photo7'), tf.constant([0, 1], tf.int64))
  assert not bool(missing.valid)
  assert missing.error.numpy().decode() == 'example "photo7": record has no mask'
  other = source.ids(tf.zeros([5, 8, 3], tf.uint8), parsed, tf.constant('photo7'),
                     tf.constant([0, 1], tf.int64))
  assert not bool(other.valid) and 'does not match image [5 8]' in other.error.numpy().decode()


def test_an_unregistered_type_is_named():
  with pytest.raises(ValueError, match="no mask source is registered for masks.type 'slic'"):
    mask_sources.build(dataclasses.replace(data_config.MaskConfig(), type='slic'))


# ------------------------------------------------- a new source: its block and its class only
@dataclasses.dataclass
class HalvesMasks(data_config.MaskBlock):
  """The image's left and right halves."""


@dataclasses.dataclass
class MaskConfigWithHalves(data_config.MaskConfig):
  halves: HalvesMasks = dataclasses.field(default_factory=HalvesMasks)


@mask_sources.register('halves')
class Halves(mask_sources.MaskSource):

  def ids(self, image, parsed, key, seed):
    shape = tf.shape(image)[:2]
    columns = tf.range(shape[1]) * 2 // shape[1]
    return mask_sources.Ids(tf.broadcast_to(columns[None], shape), tf.constant(True),
                            tf.constant(''))


def test_a_new_source_is_one_class_and_its_block(embedded_files):
  """Registered and configured, its maps reach the batch through decode, the joint crops and
  flips: every row of a view's mask is its source's halves, cropped (one boundary, ids 0 then 1,
  reversed where the view is flipped)."""
  del embedded_files
  cfg = data_config.DataConfig(global_batch_size=8, shuffle_buffer_size=4,
                               **data_config.byol_views(32))
  cfg.masks = MaskConfigWithHalves(type='halves')
  batch = next(iter(datasets.build_dataset(cfg)))
  both = 0
  for view in ('1', '2'):
    for mask, flip in zip(batch['mask' + view].numpy(), batch['flip' + view].numpy()):
      rows = mask[:, ::-1] if flip else mask
      assert set(np.unique(mask)) <= {0, 1}
      assert (np.diff(rows, axis=1) >= 0).all() and (rows == rows[:1]).all()
      both += len(np.unique(mask)) == 2
  assert both > 0  # some crops straddle the middle
