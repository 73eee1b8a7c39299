"""Tests for tf_detcon.data.geometry: joint crop/flip alignment, window statistics, local views."""

import math

import numpy as np
import tensorflow as tf

from tests.conftest import blocky_ids, palette
from tf_detcon.configs import data as data_config
from tf_detcon.data import geometry

NUM_IDS = 24


def _colour_coded(height=120, width=160, block=12, seed=0):
  ids = blocky_ids(height, width, NUM_IDS, block, seed)
  return palette(NUM_IDS)[ids], ids


def _ids_from_colours(image: np.ndarray) -> np.ndarray:
  """Nearest palette colour of each pixel of a [0, 1] image → its id."""
  colours = palette(NUM_IDS).astype(np.float32) / 255.0
  distance = ((image[..., None, :] - colours) ** 2).sum(-1)
  return distance.argmin(-1)


def _interior(mask: np.ndarray) -> np.ndarray:
  """Pixels whose 3×3 neighbourhood has one id, inside the frame (away from resampled borders)."""
  same = np.ones_like(mask, bool)
  padded = np.pad(mask, 1, constant_values=-1)
  for dy in (0, 1, 2):
    for dx in (0, 1, 2):
      same &= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] == mask
  return same



def test_views_keep_image_and_mask_aligned_over_many_draws():
  """Seeded, so the 100 draws are the same on every run (unseeded, the overall agreement of 100
  draws varies by about ±0.005 around 0.954)."""
  image, ids = _colour_coded()
  cfg = data_config.DataConfig(seed=11, **data_config.byol_views(64))
  example = {'image': tf.constant(image), 'mask': tf.constant(ids, tf.int32),
             'pipeline': tf.constant(0)}
  make = tf.function(lambda e: geometry.host_views(e, cfg))
  interior_agreement, overall_agreement = [], []
  for draw in range(100):
    out = make(dict(example, position=tf.constant(draw, tf.int64)))
    for i in (1, 2):
      view, mask = out[f'view{i}'].numpy(), out[f'mask{i}'].numpy()
      assert view.shape == (64, 64, 3) and mask.shape == (64, 64)
      assert view.min() >= 0.0 and view.max() <= 1.0
      decoded = _ids_from_colours(view)
      inside = _interior(mask)
      interior_agreement.append((decoded[inside] == mask[inside]).mean())
      overall_agreement.append((decoded == mask).mean())
  assert min(interior_agreement) > 0.99
  assert np.mean(overall_agreement) > 0.95


def test_flip_is_applied_to_both_with_probability_one_half():
  # Ids increase left to right, so a view is flipped iff its ids decrease along a row.
  width = 160
  ids = np.tile(np.arange(width) * NUM_IDS // width, (120, 1))
  image = palette(NUM_IDS)[ids]
  view_cfg = data_config.ViewConfig(output_size=32)
  example_image, example_mask = tf.constant(image), tf.constant(ids, tf.int32)
  make = tf.function(lambda seed: geometry.global_view(example_image, example_mask, view_cfg,
                                                       seed))
  flips = []
  for draw in range(400):
    out = make(tf.constant([draw, 2], tf.int64))
    view, mask = out['view'], out['mask']
    row_ids, row_colours = mask.numpy()[16], _ids_from_colours(view.numpy())[16]
    trend_ids = row_ids[-8:].mean() - row_ids[:8].mean()
    if trend_ids == 0:
      continue  # crop inside one column band: flip not observable
    flipped = trend_ids < 0
    # The image was flipped with its mask, and the view says so.
    assert (row_colours[-8:].mean() - row_colours[:8].mean() < 0) == flipped
    assert bool(out['flip']) == flipped
    flips.append(flipped)
  assert len(flips) > 300
  assert abs(np.mean(flips) - 0.5) < 0.08


def test_crop_window_area_and_log_aspect_statistics():
  sample = tf.function(lambda seed: geometry.sample_crop_window(
      tf.constant(400), tf.constant(600), (0.08, 1.0), (3 / 4, 4 / 3), seed))
  windows = np.array([sample(tf.constant([draw, 3], tf.int64)).numpy() for draw in range(1500)])
  y, x, h, w = windows.T
  assert np.all(y >= 0) and np.all(x >= 0) and np.all(y + h <= 400) and np.all(x + w <= 600)
  area = h * w / (400 * 600)
  log_aspect = np.log(w / h)
  assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0
  assert log_aspect.min() >= math.log(3 / 4) - 0.05 and log_aspect.max() <= math.log(4 / 3) + 0.05
  # Crops under 0.3 of the area always fit at first draw: their log-aspect is uniform.
  small = log_aspect[area < 0.3]
  assert abs(np.median(small)) < 0.03
  np.testing.assert_allclose(np.quantile(small, [0.1, 0.9]),
                             np.quantile(np.linspace(math.log(3 / 4), math.log(4 / 3)), [0.1, 0.9]),
                             atol=0.04)
  # Area distribution against a NumPy simulation of torchvision's rejection sampler.
  rng = np.random.default_rng(0)
  simulated = []
  for _ in range(4000):
    for _ in range(10):
      a = 400 * 600 * rng.uniform(0.08, 1.0)
      r = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
      cw, ch = round(math.sqrt(a * r)), round(math.sqrt(a / r))
      if cw <= 600 and ch <= 400:
        simulated.append(cw * ch / (400 * 600))
        break
    else:
      simulated.append(400 * 533 / (400 * 600))
  for q in (0.25, 0.5, 0.75):
    assert abs(np.quantile(area, q) - np.quantile(simulated, q)) < 0.05


def test_crop_window_falls_back_to_a_centre_crop_on_extreme_images():
  window = geometry.sample_crop_window(tf.constant(10), tf.constant(1000), (0.9, 1.0),
                                       (3 / 4, 4 / 3), tf.constant([0, 4], tf.int64)).numpy()
  assert window[2] == 10 and window[3] == 13


def test_local_view_patches_lie_in_their_grid_cells():
  cfg = data_config.LocalViewConfig()
  crop, corners = geometry.local_view(tf.zeros([300, 300, 3], tf.uint8),
                                      data_config.ViewConfig(), cfg, tf.constant([0, 5], tf.int64))
  assert crop.shape == (255, 255, 3)
  corners = corners.numpy()
  for n, (y, x) in enumerate(corners):
    row, col = divmod(n, 3)
    assert row * 85 <= y <= row * 85 + 85 - 64 and col * 85 <= x <= col * 85 + 85 - 64


def test_views_are_a_function_of_seed_pipeline_and_position():
  """The same (seed, pipeline, position) gives the same views (a resumed run repeats them);
  changing any of them gives others."""
  image, ids = _colour_coded()
  example = {'image': tf.constant(image), 'mask': tf.constant(ids, tf.int32)}

  def views(seed, pipeline, position):
    cfg = data_config.DataConfig(seed=seed, **data_config.byol_views(64))
    out = geometry.host_views(dict(example, pipeline=tf.constant(pipeline),
                                   position=tf.constant(position, tf.int64)), cfg)
    return np.concatenate([out['view1'].numpy().ravel(), out['mask2'].numpy().ravel()])

  reference = views(1, 0, 5)
  np.testing.assert_array_equal(views(1, 0, 5), reference)
  for other in ((2, 0, 5), (1, 1, 5), (1, 0, 6)):
    assert not np.array_equal(views(*other), reference)
