"""Tests for tf_detcon.primitives.boxes: view cells in source coordinates, by hand and against
the host geometry's own crops and flips."""

import numpy as np
import tensorflow as tf

from tests.conftest import blocky_ids, palette
from tf_detcon.configs import data as data_config
from tf_detcon.data import geometry
from tf_detcon.primitives import boxes


def test_cell_centres_worked_by_hand():
  # Box rows 0.25..0.75, columns 0.5..1.0 of the source; a 2 × 2 grid; flipped and not.
  box = tf.constant([[0.25, 0.5, 0.75, 1.0]] * 2)
  centres = boxes.cell_centres(box, tf.constant([False, True]), 2, 2).numpy()
  np.testing.assert_allclose(centres[0], [[0.375, 0.625], [0.375, 0.875],
                                          [0.625, 0.625], [0.625, 0.875]])
  np.testing.assert_allclose(centres[1], [[0.375, 0.875], [0.375, 0.625],
                                          [0.625, 0.875], [0.625, 0.625]])
  np.testing.assert_allclose(boxes.cell_diagonals(box, 2, 2).numpy(), [np.sqrt(0.125)] * 2,
                             rtol=1e-6)
  distances = boxes.pairwise_distances(tf.constant(centres[:1]), tf.constant(centres[1:]))
  assert distances.shape == (1, 4, 4)
  np.testing.assert_allclose(distances.numpy()[0, 0], [0.25, 0.0, np.hypot(0.25, 0.25), 0.25],
                             atol=1e-6)


def test_cell_centres_find_each_view_pixel_in_the_source():
  """Over many host views, the source id at each view pixel's centre (from its box and flip)
  is the id the view's own mask holds there: the boxes and flips the batch carries are the
  crops and flips the pixels went through."""
  height, width, size = 90, 150, 32
  ids = blocky_ids(height, width, 24, 10, seed=3)
  cfg = data_config.DataConfig(seed=11, **data_config.byol_views(size))
  example = {'image': tf.constant(palette(24)[ids]), 'mask': tf.constant(ids, tf.int32),
             'pipeline': tf.constant(0)}
  make = tf.function(lambda e: geometry.host_views(e, cfg))
  padded = np.pad(ids, 1, mode='edge')
  uniform = np.all([padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width] == ids
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
  agreement, flips = [], []
  for draw in range(60):
    out = make(dict(example, position=tf.constant(draw, tf.int64)))
    for i in (1, 2):
      centres = boxes.cell_centres(out[f'box{i}'][None], out[f'flip{i}'][None], size,
                                   size).numpy()[0]
      rows = np.clip((centres[:, 0] * height).astype(int), 0, height - 1)
      cols = np.clip((centres[:, 1] * width).astype(int), 0, width - 1)
      # Away from the blocks' edges, where a centre on a pixel border may round either way.
      clear = uniform[rows, cols]
      agreement.append((ids[rows, cols] == out[f'mask{i}'].numpy().ravel())[clear].mean())
      flips.append(bool(out[f'flip{i}']))
  assert min(agreement) == 1.0
  assert 0 < np.mean(flips) < 1


def test_cell_centres_compile_under_xla():
  fn = tf.function(lambda b, f: boxes.cell_centres(b, f, 4, 4), jit_compile=True)
  out = fn(tf.constant([[0.0, 0.0, 1.0, 1.0]]), tf.constant([True]))
  np.testing.assert_allclose(out.numpy()[0, 0], [0.125, 0.875])


def test_a_segmentation_transports_to_another_crops_cells_worked_by_hand():
  """Ids of a 2 × 2 segmentation of the whole image [[0, 1], [2, 3]] (frame box (0, 0, 1, 1)),
  read at the cells of a 2 × 2 grid over a view: the view is the top-right quarter, flipped or
  not, and a view reaching outside the frame (half of it left of a frame that starts at x 0.5)."""
  segmentation = tf.constant([[[0, 1], [2, 3]]] * 3, tf.int32)
  frames = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.5, 1.0, 1.0]])
  views = tf.constant([[0.0, 0.5, 0.5, 1.0], [0.0, 0.25, 1.0, 0.75], [0.0, 0.0, 1.0, 1.0]])
  flips = tf.constant([False, True, False])
  centres = boxes.cell_centres(views, flips, 2, 2)
  ids = boxes.lookup_ids(segmentation, boxes.in_frame(centres, frames), outside_id=-1).numpy()
  # 1: every cell of the top-right quarter lies in segment 1.
  # 2: the middle half, flipped: its left cells show x 0.625 (segment 1 / 3 by row), its right
  #    cells x 0.375 (segment 0 / 2).
  # 3: the whole image against a frame of its right half (x 0.5..1 → frame columns 0..1): the
  #    view's left cells (x 0.25) are outside; its right cells (x 0.75 → frame x 0.5) are
  #    column 1 of the frame's map.
  np.testing.assert_array_equal(ids, [[1, 1, 1, 1], [1, 0, 3, 2], [-1, 1, -1, 3]])
  np.testing.assert_allclose(boxes.in_frame(tf.constant([[[0.5, 0.75]]]),
                                            tf.constant([[0.0, 0.5, 1.0, 1.0]])).numpy(),
                             [[[0.5, 0.5]]])
