"""Tests for tf_detcon.data.color: batch colour ops against references, patches, normalisation."""

import numpy as np
from scipy import ndimage
import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.data import color

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


def test_random_order_jitter_applies_each_images_ops_in_its_own_order():
  """Against one image at a time, each op applied in turn: all 24 orders, drawn factors."""
  import itertools  # pylint: disable=g-import-not-at-top
  orders = np.array(list(itertools.permutations(range(4))), np.int32)  # 24 orders
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(size=(24, 8, 8, 3)), tf.float32)
  factors = np.stack([rng.uniform(0.6, 1.4, 24), rng.uniform(0.6, 1.4, 24),
                      rng.uniform(0.6, 1.4, 24), rng.uniform(-0.1, 0.1, 24)], 1)
  out = color.random_order_jitter(images, tf.constant(factors, tf.float32), orders).numpy()
  ops = (color.adjust_brightness, color.adjust_contrast, color.adjust_saturation,
         color.adjust_hue)
  for i, order in enumerate(orders):
    image = images[i:i + 1]
    for op in order:
      image = ops[op](image, tf.constant(factors[i:i + 1, op], tf.float32))
    np.testing.assert_allclose(out[i], image.numpy()[0], atol=2e-6, err_msg=f'order {order}')
