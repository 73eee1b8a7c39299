"""Host geometry (tf.data, per example): joint random resized crop, flip and resize of an image
and its id map (DetCon §3.1, A.1; docs/design.md §2), and the local views a method declares
(DetCo's jigsaw crops; `MethodBlock.view_recipe`).

The same window and flip go to the image (bicubic, clipped to [0, 1]) and to its id map (nearest
neighbour), so masks stay aligned with the pixels. Each view's window (as a box in the source
image) and flip go along in the batch, so that a method can relate a view's pixels to the
source's and to the other view's (`tf_detcon.primitives.boxes`). Colour is not applied here: it
runs on whole batches (`tf_detcon.primitives.color`), on the accelerator by default.
"""

import math
from typing import Dict, Optional, Tuple

import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.primitives import seeds

CROP_ATTEMPTS = 10
# Uniforms one crop window takes: area and aspect per attempt, then y and x.
WINDOW_DRAWS = 2 * CROP_ATTEMPTS + 2


def sample_crop_window(height: tf.Tensor, width: tf.Tensor,
                       area_range: Tuple[float, float],
                       aspect_range: Tuple[float, float], seed: tf.Tensor) -> tf.Tensor:
  """A random resized crop window [y, x, h, w] (int32), as torchvision / BYOL sample it, drawn
  from the stateless `seed` [2].

  Area fraction uniform in `area_range`, aspect ratio log-uniform in `aspect_range`; the first of
  10 draws that fits the image is used, else a centre crop clamped to the aspect range.
  """
  draws = tf.random.stateless_uniform([WINDOW_DRAWS], seed)
  return _crop_window(height, width, area_range, aspect_range, draws)


def _crop_window(height: tf.Tensor, width: tf.Tensor, area_range: Tuple[float, float],
                 aspect_range: Tuple[float, float], draws: tf.Tensor) -> tf.Tensor:
  """`sample_crop_window` from WINDOW_DRAWS uniforms in [0, 1) (one random op per view)."""
  h = tf.cast(height, tf.float32)
  w = tf.cast(width, tf.float32)
  area = h * w * (area_range[0] + (area_range[1] - area_range[0]) * draws[:CROP_ATTEMPTS])
  low, high = math.log(aspect_range[0]), math.log(aspect_range[1])
  ratio = tf.exp(low + (high - low) * draws[CROP_ATTEMPTS:2 * CROP_ATTEMPTS])
  crop_w = tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32)
  crop_h = tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32)
  fits = (crop_w <= width) & (crop_h <= height) & (crop_w > 0) & (crop_h > 0)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  # Fallback: the whole image, narrowed to the nearest allowed aspect ratio.
  in_ratio = w / h
  fallback_w = tf.where(in_ratio > aspect_range[1], tf.round(h * aspect_range[1]), w)
  fallback_h = tf.where(in_ratio < aspect_range[0], tf.round(w / aspect_range[0]), h)
  any_fits = tf.reduce_any(fits)
  crop_h = tf.where(any_fits, crop_h[first], tf.cast(fallback_h, tf.int32))
  crop_w = tf.where(any_fits, crop_w[first], tf.cast(fallback_w, tf.int32))
  y = _uniform_int(draws[2 * CROP_ATTEMPTS], height - crop_h + 1)
  x = _uniform_int(draws[2 * CROP_ATTEMPTS + 1], width - crop_w + 1)
  return tf.stack([y, x, crop_h, crop_w])


def _uniform_int(draw: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
  """An int uniform in [0, count) from a uniform draw in [0, 1)."""
  count = tf.cast(count, tf.int32)
  return tf.minimum(tf.cast(draw * tf.cast(count, tf.float32), tf.int32), count - 1)


def crop_resize_flip(image: tf.Tensor, mask: Optional[tf.Tensor], window: tf.Tensor,
                     flip: tf.Tensor, size: int) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
  """Applies one window and flip to image (bicubic, clipped to [0, 1]) and mask (nearest)."""
  y, x, h, w = tf.unstack(window)
  image = tf.image.convert_image_dtype(image[y:y + h, x:x + w], tf.float32)
  image = tf.clip_by_value(tf.image.resize(image, [size, size], method='bicubic'), 0.0, 1.0)
  image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
  if mask is None:
    return image, None
  mask = tf.image.resize(mask[y:y + h, x:x + w, None], [size, size], method='nearest')[..., 0]
  mask = tf.cond(flip, lambda: tf.reverse(mask, axis=[1]), lambda: mask)
  return image, mask


def _window_and_flip(image: tf.Tensor, area_range: Tuple[float, float],
                     view_cfg: data_config.ViewConfig,
                     draws: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """A crop window and a flip from WINDOW_DRAWS + 1 uniforms."""
  shape = tf.shape(image)
  window = _crop_window(shape[0], shape[1], area_range,
                        (view_cfg.aspect_ratio_min, view_cfg.aspect_ratio_max),
                        draws[:WINDOW_DRAWS])
  return window, draws[WINDOW_DRAWS] < view_cfg.flip_prob


def window_box(window: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
  """A window [y, x, h, w] in pixels as a box [y0, x0, y1, x1] (float32) in fractions of the
  source image's height and width."""
  y, x, h, w = tf.unstack(tf.cast(window, tf.float32))
  height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  return tf.stack([y / height, x / width, (y + h) / height, (x + w) / width])


def global_view(image: tf.Tensor, mask: tf.Tensor, cfg: data_config.ViewConfig,
                seed: tf.Tensor) -> Dict[str, tf.Tensor]:
  """A view, its aligned id map, and where it came from, drawn from the stateless `seed` [2]:
  {'view': [S, S, 3], 'mask': [S, S], 'box': its window as `window_box`, 'flip': bool}."""
  draws = tf.random.stateless_uniform([WINDOW_DRAWS + 1], seed)
  window, flip = _window_and_flip(image, (cfg.crop_area_min, cfg.crop_area_max), cfg, draws)
  view, view_mask = crop_resize_flip(image, mask, window, flip, cfg.output_size)
  shape = tf.shape(image)
  return {'view': view, 'mask': view_mask, 'box': window_box(window, shape[0], shape[1]),
          'flip': flip}


def local_view(image: tf.Tensor, view_cfg: data_config.ViewConfig,
               cfg: data_config.LocalViewConfig,
               seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """A local view (DetCo §3.2's jigsaw crop): the crop [S, S, 3] and the top-left corners
  [grid², 2] of its patches.

  Cell (r, c) of the grid_size × grid_size grid holds one patch_size patch at a random offset.
  Drawn from the stateless `seed` [2].
  """
  patches = cfg.grid_size**2
  draws = tf.random.stateless_uniform([WINDOW_DRAWS + 1 + 2 * patches], seed)
  window, flip = _window_and_flip(image, (cfg.crop_area_min, cfg.crop_area_max), view_cfg,
                                  draws[:WINDOW_DRAWS + 1])
  crop, _ = crop_resize_flip(image, None, window, flip, cfg.output_size)
  cell = cfg.output_size // cfg.grid_size  # >= patch_size (configs.validation)
  corners = tf.range(cfg.grid_size) * cell
  rows = tf.repeat(corners, cfg.grid_size)
  cols = tf.tile(corners, [cfg.grid_size])
  jitter = _uniform_int(tf.reshape(draws[WINDOW_DRAWS + 1:], [patches, 2]),
                        cell - cfg.patch_size + 1)
  return crop, tf.stack([rows, cols], axis=1) + jitter


def host_views(example: Dict[str, tf.Tensor], cfg: data_config.DataConfig,
               local_views: Optional[data_config.LocalViewConfig] = None
               ) -> Dict[str, tf.Tensor]:
  """The per-example host part: two global views with masks (view1/2, mask1/2), their boxes in
  the source image and flips (box1/2, flip1/2), and, for a method's `local_views` recipe, a local
  crop of each (local1/2) with its patches' corners (offsets1/2), drawn from seeds keyed by the
  example's `pipeline` and `position`, which go along (`seeds.batch_seed`)."""
  out = {'position': example['position'], 'pipeline': example['pipeline']}
  base = seeds.base_seed(cfg)

  def seed(purpose: int) -> tf.Tensor:
    return seeds.record_seed(base, example['pipeline'], example['position'], purpose)

  for i, view_cfg in ((1, cfg.view1), (2, cfg.view2)):
    view = global_view(example['image'], example['mask'], view_cfg,
                       seed(seeds.VIEW1 if i == 1 else seeds.VIEW2))
    out.update({f'{key}{i}': value for key, value in view.items()})
    if local_views is not None:
      out[f'local{i}'], out[f'offsets{i}'] = local_view(
          example['image'], view_cfg, local_views,
          seed(seeds.LOCAL1 if i == 1 else seeds.LOCAL2))
  return out
