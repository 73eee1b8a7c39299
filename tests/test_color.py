"""Tests for tf_detcon.primitives.color: batch colour ops against references, patches,
normalisation."""

import colorsys
import itertools

import numpy as np
import pytest
from scipy import ndimage
import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.primitives import color

SEED = tf.constant([7, 8], tf.int64)


def test_extract_patches_returns_exact_pixels():
  rng = np.random.default_rng(0)
  images = rng.random((2, 30, 30, 3)).astype(np.float32)
  corners = rng.integers(0, 30 - 7, size=(2, 9, 2)).astype(np.int32)
  patches = color.extract_patches(tf.constant(images), tf.constant(corners), 7).numpy()
  for b in range(2):
    for n in range(9):
      y, x = corners[b, n]
      np.testing.assert_array_equal(patches[b, n], images[b, y:y + 7, x:x + 7])


def test_gaussian_blur_matches_scipy_per_image_sigma():
  rng = np.random.default_rng(0)
  images = rng.random((3, 20, 24, 3)).astype(np.float32)
  sigma = np.array([0.5, 1.0, 2.0], np.float32)
  out = color.gaussian_blur(tf.constant(images), tf.constant(sigma), kernel_size=7).numpy()
  for b in range(3):
    expected = ndimage.gaussian_filter(images[b], sigma=(sigma[b], sigma[b], 0), mode='mirror',
                                       radius=(3, 3, 0))
    np.testing.assert_allclose(out[b], expected, atol=1e-5)


def test_blur_kernel_size_is_23_at_224():
  assert color.blur_kernel_size(224, 0.1) == 23
  assert color.blur_kernel_size(64, 0.1) % 2 == 1


def test_colour_ops_with_zero_probability_are_the_identity():
  images = tf.random.uniform([4, 16, 16, 3])
  cfg = data_config.ColorConfig(jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)
  np.testing.assert_array_equal(color.color_augment(images, cfg, SEED).numpy(), images.numpy())


def test_grayscale_and_solarize_with_probability_one():
  images = tf.random.uniform([4, 16, 16, 3])
  cfg = data_config.ColorConfig(jitter_prob=0, grayscale_prob=1, blur_prob=0, solarize_prob=1)
  out = color.color_augment(images, cfg, SEED).numpy()
  gray = tf.image.rgb_to_grayscale(images).numpy()
  expected = np.where(gray < 0.5, gray, 1 - gray)
  np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-6)


def test_jitter_changes_images_and_groups_share_parameters():
  base = tf.random.uniform([2, 16, 16, 3])
  images = tf.repeat(base, 3, axis=0)  # groups of 3 identical images
  cfg = data_config.ColorConfig(jitter_prob=1, grayscale_prob=0, blur_prob=1, solarize_prob=0)
  out = color.color_augment(images, cfg, SEED, group_size=3).numpy()
  assert not np.allclose(out, images.numpy())
  for group in range(2):
    for member in (1, 2):
      np.testing.assert_allclose(out[3 * group], out[3 * group + member], atol=1e-6)
  assert not np.allclose(out[0], out[3])


def test_adjust_ops_match_tf_image_references():
  images = tf.random.uniform([2, 8, 8, 3])
  np.testing.assert_allclose(
      color.adjust_hue(images, tf.constant([0.1, -0.2])).numpy()[0],
      tf.image.adjust_hue(images[0], 0.1).numpy(), atol=1e-5)
  np.testing.assert_allclose(
      color.adjust_contrast(images, tf.constant([1.3, 0.7])).numpy()[1],
      tf.clip_by_value(tf.image.adjust_contrast(images[1], 0.7), 0, 1).numpy(), atol=1e-5)


def test_normalize_uses_imagenet_statistics():
  out = color.normalize(tf.constant([[[[0.485, 0.456, 0.406]]]])).numpy()
  np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_blur_sigma_is_given_at_224_and_scales_with_the_view():
  """σ ∈ [0.1, 2.0] is BYOL's at 224 px; a 112 px view gets half of it, as its kernel."""
  cfg = data_config.ColorConfig(jitter_prob=0, grayscale_prob=0, blur_prob=1, solarize_prob=0,
                                blur_sigma_min=2.0, blur_sigma_max=2.0)
  for size, sigma in ((224, 2.0), (112, 1.0)):
    images = tf.random.uniform([2, size, size, 3], seed=size)
    expected = color.gaussian_blur(images, tf.constant([sigma, sigma]),
                                   color.blur_kernel_size(size, cfg.blur_kernel_fraction))
    np.testing.assert_allclose(color.color_augment(images, cfg, SEED).numpy(), expected.numpy(),
                               atol=1e-6)


def test_colour_draws_are_a_function_of_the_seed():
  images = tf.random.uniform([4, 16, 16, 3])
  cfg = data_config.ColorConfig(jitter_prob=1, grayscale_prob=0.5, blur_prob=0.5)
  out = color.color_augment(images, cfg, SEED).numpy()
  np.testing.assert_array_equal(color.color_augment(images, cfg, SEED).numpy(), out)
  assert not np.allclose(color.color_augment(images, cfg, SEED + 1).numpy(), out)


GRAY = np.array([0.2989, 0.5870, 0.1140])  # ITU-R 601 luma, as torchvision and dm_pix


def _hsv_map(image: np.ndarray, fn) -> np.ndarray:
  """fn(h, s, v) → (h, s, v) on every pixel, through the standard library's HSV conversion."""
  flat = image.reshape(-1, 3).astype(np.float64)
  out = np.array([colorsys.hsv_to_rgb(*fn(*colorsys.rgb_to_hsv(*pixel))) for pixel in flat])
  return out.reshape(image.shape)


def _np_op(image: np.ndarray, op: int, param: float, semantics: str) -> np.ndarray:
  """One jitter op on one image [H, W, 3], written out from dm_pix's and torchvision's
  definitions, each followed by the clip to [0, 1] that both apply."""
  if op == 3:
    out = _hsv_map(image, lambda h, s, v: ((h + param) % 1.0, s, v))
  elif semantics == 'additive_hsv':
    if op == 0:
      out = image + param
    elif op == 1:
      mean = image.mean(axis=(0, 1), keepdims=True)
      out = mean + param * (image - mean)
    else:
      out = _hsv_map(image, lambda h, s, v: (h, min(max(s * param, 0.0), 1.0), v))
  else:
    gray = (image @ GRAY)[..., None]
    if op == 0:
      out = image * param
    elif op == 1:
      out = gray.mean() + param * (image - gray.mean())
    else:
      out = gray + param * (image - gray)
  return np.clip(out, 0.0, 1.0)


@pytest.mark.parametrize('semantics', ['additive_hsv', 'torchvision'])
def test_random_order_jitter_matches_the_formulas_in_every_order(semantics):
  """All 24 orders against NumPy (and colorsys for HSV), one image at a time, op by op."""
  orders = np.array(list(itertools.permutations(range(4))), np.int32)  # 24 orders
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(24, 6, 6, 3)).astype(np.float32)
  first = (rng.uniform(-0.4, 0.4, 24) if semantics == 'additive_hsv'
           else rng.uniform(0.6, 1.4, 24))
  params = np.stack([first, rng.uniform(0.2, 1.8, 24), rng.uniform(0.2, 1.8, 24),
                     rng.uniform(-0.2, 0.2, 24)], 1).astype(np.float32)
  out = color.random_order_jitter(tf.constant(images), tf.constant(params), orders,
                                  semantics).numpy()
  for i, order in enumerate(orders):
    expected = images[i].astype(np.float64)
    for op in order:
      expected = _np_op(expected, op, float(params[i, op]), semantics)
    np.testing.assert_allclose(out[i], expected, atol=2e-5, err_msg=f'order {order}')


@pytest.mark.parametrize('factor', [0.3, 1.0, 1.8, 6.0])
def test_saturation_scale_is_dm_pix_hsv_scale_with_clipping(factor):
  """S · f clipped at 1 in HSV, which the RGB form computes without the round trip; greys,
  black and saturated colours included."""
  rng = np.random.default_rng(1)
  images = rng.uniform(size=(1, 5, 5, 3)).astype(np.float32)
  images[0, 0, :3] = [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [1.0, 0.0, 0.2]]
  out = color.scale_saturation(tf.constant(images), tf.constant([factor])).numpy()
  expected = _np_op(images[0].astype(np.float64), 2, factor, 'additive_hsv')
  np.testing.assert_allclose(out[0], expected, atol=2e-6)


@pytest.mark.parametrize('semantics,low,high', [('additive_hsv', -0.4, 0.4),
                                                ('torchvision', 0.6, 1.4)])
def test_brightness_is_drawn_as_each_semantics_defines_it(semantics, low, high):
  """Brightness alone on mid-grey images: x + δ, δ ~ U[−b, b] ('additive_hsv'), or x · f,
  f ~ U[1 − b, 1 + b] ('torchvision')."""
  cfg = data_config.ColorConfig(jitter_semantics=semantics, jitter_prob=1, brightness=0.4,
                                contrast=0, saturation=0, hue=0, grayscale_prob=0,
                                blur_prob=0)
  images = tf.fill([256, 2, 2, 3], 0.5)
  out = color.color_augment(images, cfg, SEED).numpy()[:, 0, 0, 0]
  drawn = out - 0.5 if semantics == 'additive_hsv' else out / 0.5
  assert low <= drawn.min() < low + 0.05 and high - 0.05 < drawn.max() <= high
  np.testing.assert_allclose(np.mean(drawn), (low + high) / 2, atol=0.05)


def test_shift_brightness_can_wash_a_view_out():
  """DetCon_S's brightness 0.8: an additive δ near 0.8 whitens a mid-grey view, which a factor
  of at most 1.8 cannot."""
  images = tf.fill([1, 2, 2, 3], 0.55)
  np.testing.assert_array_equal(color.shift_brightness(images, tf.constant([0.75])), 1.0)
  assert np.all(color.adjust_brightness(images, tf.constant([1.8])).numpy() < 1.0)


def test_finalize_batch_passes_on_what_it_does_not_transform():
  """Views are coloured, local crops become patches, and every other key (boxes, flips, masks,
  a method's own) passes on unchanged, so a new method's inputs are not dropped on the way."""
  cfg = data_config.DataConfig()
  local_views = data_config.LocalViewConfig(output_size=64, patch_size=16)
  rng = np.random.default_rng(0)
  batch = {f'view{i}': tf.constant(rng.uniform(size=(2, 32, 32, 3)), tf.float32)
           for i in (1, 2)}
  batch.update({f'local{i}': tf.constant(rng.uniform(size=(2, 64, 64, 3)), tf.float32)
                for i in (1, 2)})
  batch.update({f'offsets{i}': tf.zeros([2, 9, 2], tf.int32) for i in (1, 2)})
  passed = {'mask1': tf.ones([2, 32, 32], tf.int32), 'box2': tf.constant([[0., 0., 1., 1.]] * 2),
            'flip1': tf.constant([True, False]), 'my_method_points': tf.range(6),
            'position': tf.constant([3, 4], tf.int64), 'pipeline': tf.constant([0, 0])}
  batch.update(passed)
  out = color.finalize_batch(batch, cfg, local_views)
  assert set(out) == set(passed) | {'view1', 'view2', 'patches1', 'patches2'}
  for key, value in passed.items():
    np.testing.assert_array_equal(out[key].numpy(), value.numpy())
  assert out['patches1'].shape == (2, 9, 16, 16, 3)
  assert float(tf.reduce_min(out['view1'])) < 0  # normalised
