"""Tests for tf_detcon.data.masks."""

import numpy as np
import pytest
from skimage import segmentation

from tests.conftest import blocky_ids
from tf_detcon.data.offline import masks


def test_relabel_by_area_orders_ids_by_decreasing_area():
  ids = np.array([[7, 7, 7, 3], [3, 9, 7, 7]])
  out = masks.relabel_by_area(ids)
  np.testing.assert_array_equal(out, [[0, 0, 0, 1], [1, 2, 0, 0]])


def _checker_image(cells: int, cell_size: int) -> np.ndarray:
  """An RGB image of cells×cells squares of random distinct colours: one FH segment each."""
  rng = np.random.default_rng(1)
  colours = rng.permutation(256**3)[:cells * cells]
  colours = np.stack([colours // 65536, colours // 256 % 256, colours % 256], -1)
  grid = colours.reshape(cells, cells, 3).astype(np.uint8)
  return np.kron(grid, np.ones((cell_size, cell_size, 1), np.uint8))


def test_fh_over_255_segments_merges_instead_of_wrapping():
  image = _checker_image(cells=20, cell_size=6)  # 400 squares
  raw = segmentation.felzenszwalb(image, scale=1, sigma=0.0, min_size=1)
  assert raw.max() + 1 > 300
  merged = masks.fh_mask(image, scale=1, sigma=0.0, min_size=1, max_segments=256)
  assert merged.dtype == np.uint8
  assert int(merged.max()) + 1 <= 256
  assert len(np.unique(merged)) == int(merged.max()) + 1  # ids are 0..K-1
  # Merging never splits: each original segment lies inside exactly one merged segment.
  for segment in np.unique(raw):
    assert len(np.unique(merged[raw == segment])) == 1
  # The reference's uint8 cast would alias segments 256 apart; ours keeps them apart or merged
  # with a neighbour: far-apart squares never share an id just because of their number.
  wrapped = (raw % 256).astype(np.uint8)
  assert len(np.unique(wrapped)) == 256 and not np.array_equal(wrapped, merged)


def test_fh_without_limit_keeps_every_segment_as_uint16():
  image = _checker_image(cells=20, cell_size=6)
  raw = segmentation.felzenszwalb(image, scale=1, sigma=0.0, min_size=1)
  kept = masks.fh_mask(image, scale=1, sigma=0.0, min_size=1, max_segments=None)
  assert kept.dtype == np.uint16
  assert kept.max() + 1 == len(np.unique(raw))
  np.testing.assert_array_equal(kept, masks.relabel_by_area(raw))


def test_merge_small_segments_joins_the_longest_shared_border():
  # A 1-pixel-wide segment 2 borders 0 along 6 pixel edges and 1 (the bottom row) along 1.
  ids = np.zeros((4, 6), np.int64)
  ids[3, :] = 1
  ids[0:3, 2] = 2
  out = masks.merge_small_segments(ids, max_segments=2)
  assert out.max() == 1
  assert np.all(out[0:3, 2] == out[0, 0])


def test_merge_small_segments_reaches_the_limit_on_random_maps():
  ids = blocky_ids(60, 60, num_ids=200, block=2, seed=3)
  for limit in (1, 5, 50):
    out = masks.merge_small_segments(ids, limit)
    assert out.max() + 1 <= limit


def test_to_storage_dtype_never_wraps():
  assert masks.to_storage_dtype(np.array([[255]])).dtype == np.uint8
  assert masks.to_storage_dtype(np.array([[256]])).dtype == np.uint16
  with pytest.raises(ValueError, match='do not fit'):
    masks.to_storage_dtype(np.array([[70000]]))


def test_ground_truth_mask_keeps_small_objects_on_top():
  big = np.zeros((10, 10), bool)
  big[1:9, 1:9] = True
  small = np.zeros((10, 10), bool)
  small[3:5, 3:5] = True
  out = masks.ground_truth_mask([small, big], 10, 10)
  assert len(np.unique(out)) == 3
  assert out[3, 3] != out[1, 1] and out[3, 3] != out[0, 0]
  assert np.all(out[small] == out[3, 3])
  with pytest.raises(ValueError, match='instance mask 0'):
    masks.ground_truth_mask([np.zeros((4, 4))], 10, 10)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
  """True if two id maps split the pixels the same way, whatever the ids."""
  pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
  return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def test_downscaled_fh_finds_the_full_resolution_segments_of_large_regions():
  image = _checker_image(cells=4, cell_size=24)  # 16 squares of 24 px: 96×96
  full = masks.fh_mask(image, scale=100, sigma=0.0, min_size=50)
  half = masks.fh_mask(image, scale=100, sigma=0.0, min_size=50, downscale=0.5)
  assert half.shape == full.shape == (96, 96) and half.dtype == np.uint8
  assert len(np.unique(full)) == 16
  assert _same_partition(half, full)
  # min_size is scaled with the area: squares of 24 px (576 px²) survive a min_size of 500 at
  # full resolution, and at half resolution too (144 px² against 125).
  half_min = masks.fh_mask(image, scale=100, sigma=0.0, min_size=500, downscale=0.5)
  assert _same_partition(half_min, full)


def test_downscale_one_is_skimage_at_full_resolution_and_bad_factors_are_refused():
  image = _checker_image(cells=5, cell_size=9)
  ids, merged = masks.fh_segments(image, 100, 0.5, 20, None, downscale=1.0)
  raw = segmentation.felzenszwalb(image, scale=100, sigma=0.5, min_size=20)
  np.testing.assert_array_equal(ids, masks.relabel_by_area(raw))
  assert merged == 0
  for bad in (0, 1.5, -0.5):
    with pytest.raises(ValueError, match='FH downscale must be in'):
      masks.fh_segments(image, downscale=bad)


@pytest.mark.parametrize('height,width,min_side,expected', [
    (128, 200, 224, 1.0),         # short side at or under the threshold: full resolution
    (224, 500, 224, 1.0),
    (300, 400, 224, 224 / 300),   # between 1× and 2× the threshold: down to the threshold
    (500, 375, 224, 224 / 375),
    (600, 800, 224, 0.5),         # twice the threshold or more: the requested factor
    (1000, 1000, 224, 0.5),
])
def test_working_downscale_keeps_the_short_side_at_or_above_the_threshold(height, width,
                                                                          min_side, expected):
  factor = masks.fh_working_downscale(height, width, 0.5, min_side)
  assert factor == pytest.approx(expected)
  assert min(height, width) * factor >= min(min(height, width), min_side) - 1e-9
  assert masks.fh_working_downscale(height, width, 1.0, min_side) == 1.0
