"""Joint image + mask augmentation (DetCon §3.1, A.1; docs/design.md §2), as graph code for
tf.data and the train step.

Split in two like the DeepMind release: the host part (decode, random resized crop, flip, resize;
the same window and flip for the image and its id map, the map resized nearest-neighbour) runs per
example in tf.data; the colour part (jitter in random order, grayscale, blur, solarize) and the
ImageNet normalisation run on whole batches, either at the end of tf.data or at the start of the
train step on the accelerator (`DataConfig.color_on_device`). DetCo's local view is cropped on the
host and cut into its jigsaw patches by `finalize_batch`, after colour, so that colour is shared by
the nine patches of a view.
"""

import math
from typing import Dict, Optional, Tuple

import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.data import records

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_ATTEMPTS = 10


# --------------------------------------------------------------------------------------- decode

def decode_mask_png(png: tf.Tensor) -> tf.Tensor:
  """int32 [H, W] ids from an 8- or 16-bit PNG (decode_png as uint16 would rescale 8-bit data)."""
  bit_depth = tf.io.decode_raw(tf.strings.substr(png, 24, 1), tf.uint8)[0]
  return tf.cond(
      tf.equal(bit_depth, 16),
      lambda: tf.cast(tf.io.decode_png(png, channels=1, dtype=tf.uint16), tf.int32),
      lambda: tf.cast(tf.io.decode_png(png, channels=1, dtype=tf.uint8), tf.int32))[..., 0]


def grid_ids(height: tf.Tensor, width: tf.Tensor, grid_size: int) -> tf.Tensor:
  """int32 [H, W] ids of grid_size × grid_size equal cells, row-major (1: the global mask)."""
  rows = tf.minimum(tf.range(height) * grid_size // tf.maximum(height, 1), grid_size - 1)
  cols = tf.minimum(tf.range(width) * grid_size // tf.maximum(width, 1), grid_size - 1)
  return rows[:, None] * grid_size + cols[None, :]


def decode_example(serialized: tf.Tensor,
                   mask_cfg: data_config.MaskConfig) -> Dict[str, tf.Tensor]:
  """Parses a record into uint8 image [H, W, 3], int32 mask [H, W], key and a validity flag.

  With several stored maps (FH scales) one is drawn uniformly. `valid` is false when the record
  has no map or its map does not match the image size; `error` then says why, naming the example.
  """
  parsed = records.parse_example(serialized)
  key = parsed[records.IMAGE_KEY]
  image = tf.io.decode_image(parsed[records.IMAGE_ENCODED], channels=3, expand_animations=False)
  image_shape = tf.shape(image)[:2]
  if mask_cfg.kind == 'grid':
    mask = grid_ids(image_shape[0], image_shape[1], mask_cfg.grid_size)
    return {'key': key, 'image': image, 'mask': mask, 'valid': tf.constant(True),
            'error': tf.constant('')}
  if mask_cfg.kind != 'stored':
    raise ValueError(f"masks.kind must be 'stored' or 'grid', got {mask_cfg.kind!r}")
  pngs = parsed[records.MASK_ENCODED]
  num_masks = tf.size(pngs)
  index = tf.random.uniform([], 0, tf.maximum(num_masks, 1), dtype=tf.int32)
  mask = tf.cond(num_masks > 0,
                 lambda: decode_mask_png(pngs[tf.minimum(index, num_masks - 1)]),
                 lambda: tf.zeros([0, 0], tf.int32))
  mask_shape = tf.shape(mask)
  valid = tf.reduce_all(tf.equal(mask_shape, image_shape))
  error = tf.cond(
      num_masks > 0,
      lambda: tf.strings.format('example {}: mask {} does not match image {}',
                                (key, mask_shape, image_shape)),
      lambda: tf.strings.format('example {}: record has no mask', key))
  return {'key': key, 'image': image, 'mask': mask, 'valid': valid, 'error': error}


def check_example(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Raises InvalidArgumentError with the example's error message if it is not valid."""
  assertion = tf.debugging.Assert(example['valid'], [example['error']], summarize=1)
  with tf.control_dependencies([assertion]):
    return {k: tf.identity(v) for k, v in example.items()}


# ------------------------------------------------------------------------------ geometric (host)

def sample_crop_window(height: tf.Tensor, width: tf.Tensor,
                       area_range: Tuple[float, float],
                       aspect_range: Tuple[float, float]) -> tf.Tensor:
  """A random resized crop window [y, x, h, w] (int32), as torchvision / BYOL sample it.

  Area fraction uniform in `area_range`, aspect ratio log-uniform in `aspect_range`; the first of
  10 draws that fits the image is used, else a centre crop clamped to the aspect range.
  """
  h = tf.cast(height, tf.float32)
  w = tf.cast(width, tf.float32)
  area = h * w * tf.random.uniform([CROP_ATTEMPTS], area_range[0], area_range[1])
  log_ratio = tf.random.uniform([CROP_ATTEMPTS], math.log(aspect_range[0]),
                                math.log(aspect_range[1]))
  ratio = tf.exp(log_ratio)
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
  y = tf.random.uniform([], 0, height - crop_h + 1, dtype=tf.int32)
  x = tf.random.uniform([], 0, width - crop_w + 1, dtype=tf.int32)
  return tf.stack([y, x, crop_h, crop_w])


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


def global_view(image: tf.Tensor, mask: tf.Tensor,
                cfg: data_config.ViewConfig) -> Tuple[tf.Tensor, tf.Tensor]:
  shape = tf.shape(image)
  window = sample_crop_window(shape[0], shape[1], (cfg.crop_area_min, cfg.crop_area_max),
                              (cfg.aspect_ratio_min, cfg.aspect_ratio_max))
  flip = tf.random.uniform([]) < cfg.flip_prob
  return crop_resize_flip(image, mask, window, flip, cfg.output_size)


def local_view(image: tf.Tensor, view_cfg: data_config.ViewConfig,
               cfg: data_config.LocalViewConfig) -> Tuple[tf.Tensor, tf.Tensor]:
  """DetCo's local view: the crop [S, S, 3] and the top-left corners [grid², 2] of its patches.

  Cell (r, c) of the grid_size × grid_size grid holds one patch_size patch at a random offset.
  """
  shape = tf.shape(image)
  window = sample_crop_window(shape[0], shape[1], (cfg.crop_area_min, cfg.crop_area_max),
                              (view_cfg.aspect_ratio_min, view_cfg.aspect_ratio_max))
  flip = tf.random.uniform([]) < view_cfg.flip_prob
  crop, _ = crop_resize_flip(image, None, window, flip, cfg.output_size)
  cell = cfg.output_size // cfg.grid_size
  if cell < cfg.patch_size:
    raise ValueError(f'local view cells ({cell}px) are smaller than patches ({cfg.patch_size}px)')
  corners = tf.range(cfg.grid_size) * cell
  rows = tf.repeat(corners, cfg.grid_size)
  cols = tf.tile(corners, [cfg.grid_size])
  jitter = tf.random.uniform([cfg.grid_size**2, 2], 0, cell - cfg.patch_size + 1, tf.int32)
  return crop, tf.stack([rows, cols], axis=1) + jitter


def host_views(example: Dict[str, tf.Tensor],
               cfg: data_config.DataConfig) -> Dict[str, tf.Tensor]:
  """The per-example host part: two global views with masks, and DetCo's local views."""
  out = {}
  for i, view_cfg in ((1, cfg.view1), (2, cfg.view2)):
    out[f'view{i}'], out[f'mask{i}'] = global_view(example['image'], example['mask'], view_cfg)
    if cfg.local_views.enabled:
      out[f'local{i}'], out[f'offsets{i}'] = local_view(example['image'], view_cfg,
                                                         cfg.local_views)
  return out


def extract_patches(images: tf.Tensor, corners: tf.Tensor, patch_size: int) -> tf.Tensor:
  """[B, S, S, C] images, [B, N, 2] top-left corners → [B, N, p, p, C] exact pixel patches.

  A gather (no resampling op), so it compiles for TPUs when colour runs on the accelerator.
  """
  batch = tf.shape(images)[0]
  num = corners.shape[1] or tf.shape(corners)[1]  # static when known (9)
  offsets = tf.range(patch_size)
  rows = corners[:, :, 0, None] + offsets  # [B, N, p]
  cols = corners[:, :, 1, None] + offsets
  image_index = tf.broadcast_to(tf.range(batch)[:, None, None, None],
                                [batch, num, patch_size, patch_size])
  indices = tf.stack([image_index,
                      tf.broadcast_to(rows[:, :, :, None], tf.shape(image_index)),
                      tf.broadcast_to(cols[:, :, None, :], tf.shape(image_index))], axis=-1)
  return tf.gather_nd(images, indices)


# -------------------------------------------------------------------------------- colour (batch)

def _where(apply: tf.Tensor, new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
  return tf.where(apply[:, None, None, None], new, old)


def _uniform(batch: tf.Tensor, low: float, high: float) -> tf.Tensor:
  return tf.random.uniform([batch], low, high)


def _grayscale(images: tf.Tensor) -> tf.Tensor:
  return tf.image.rgb_to_grayscale(images)


def adjust_brightness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(images * factor[:, None, None, None], 0.0, 1.0)


def adjust_contrast(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  return tf.clip_by_value((images - mean) * factor[:, None, None, None] + mean, 0.0, 1.0)


def adjust_saturation(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  gray = _grayscale(images)
  return tf.clip_by_value((images - gray) * factor[:, None, None, None] + gray, 0.0, 1.0)


def adjust_hue(images: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
  hsv = tf.image.rgb_to_hsv(images)
  hue = tf.math.floormod(hsv[..., 0] + delta[:, None, None], 1.0)
  return tf.clip_by_value(tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], -1)),
                          0.0, 1.0)


def gaussian_blur(images: tf.Tensor, sigma: tf.Tensor, kernel_size: int) -> tf.Tensor:
  """Separable Gaussian blur with a per-image sigma [B]; reflect padding, one depthwise conv."""
  radius = kernel_size // 2
  if radius == 0:
    return images
  taps = tf.range(-radius, radius + 1, dtype=tf.float32)
  kernels = tf.exp(-tf.square(taps)[None, :] / (2.0 * tf.square(sigma)[:, None]))
  kernels /= tf.reduce_sum(kernels, axis=1, keepdims=True)  # [B, K]
  shape = tf.shape(images)
  batch, height, width, channels = shape[0], shape[1], shape[2], images.shape[-1]
  # Fold batch into channels so one depthwise conv blurs each image with its own kernel.
  folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, height, width, -1])
  kernels = tf.transpose(tf.repeat(kernels, channels, axis=0))  # [K, B*C]
  folded = tf.pad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode='REFLECT')
  folded = tf.nn.depthwise_conv2d(folded, kernels[:, None, :, None], [1, 1, 1, 1], 'VALID')
  folded = tf.nn.depthwise_conv2d(folded, kernels[None, :, :, None], [1, 1, 1, 1], 'VALID')
  return tf.transpose(tf.reshape(folded, [height, width, batch, channels]), [2, 0, 1, 3])


def blur_kernel_size(image_size: int, fraction: float) -> int:
  """An odd kernel of about `fraction` of the image side (23 at 224, as in BYOL)."""
  size = int(image_size * fraction)
  return size + 1 if size % 2 == 0 else size


def color_augment(images: tf.Tensor, cfg: data_config.ColorConfig,
                  group_size: int = 1) -> tf.Tensor:
  """Colour ops on a batch [B, H, W, 3] in [0, 1]; each image draws its own parameters.

  With group_size g, consecutive groups of g images share parameters (DetCo's nine patches of one
  local view). Jitter applies brightness, contrast, saturation and hue in a random order per image.
  """
  num = tf.shape(images)[0] // group_size

  def draw(values: tf.Tensor) -> tf.Tensor:
    return tf.repeat(values, group_size, axis=0) if group_size > 1 else values

  def coin(prob: float) -> tf.Tensor:
    return draw(tf.random.uniform([num]) < prob)

  jitter_ops = (
      (adjust_brightness, draw(_uniform(num, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness))),
      (adjust_contrast, draw(_uniform(num, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast))),
      (adjust_saturation, draw(_uniform(num, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation))),
      (adjust_hue, draw(_uniform(num, -cfg.hue, cfg.hue))),
  )
  order = draw(tf.argsort(tf.random.uniform([num, len(jitter_ops)]), axis=1))
  jittered = images
  for position in range(len(jitter_ops)):
    step = jittered
    for op_index, (op, param) in enumerate(jitter_ops):
      step = _where(tf.equal(order[:, position], op_index), op(jittered, param), step)
    jittered = step
  images = _where(coin(cfg.jitter_prob), jittered, images)
  images = _where(coin(cfg.grayscale_prob), tf.tile(_grayscale(images), [1, 1, 1, 3]), images)
  if cfg.blur_prob > 0:
    kernel = blur_kernel_size(images.shape[1], cfg.blur_kernel_fraction)
    sigma = draw(_uniform(num, cfg.blur_sigma_min, cfg.blur_sigma_max))
    images = _where(coin(cfg.blur_prob), gaussian_blur(images, sigma, kernel), images)
  if cfg.solarize_prob > 0:
    images = _where(coin(cfg.solarize_prob), tf.where(images < 0.5, images, 1.0 - images),
                    images)
  return images


def normalize(images: tf.Tensor) -> tf.Tensor:
  return (images - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def finalize_batch(batch: Dict[str, tf.Tensor],
                   cfg: data_config.DataConfig) -> Dict[str, tf.Tensor]:
  """Colour + normalisation of a batch of host views; DetCo local views become patches.

  Returns view1/2 [B, S, S, 3], mask1/2 [B, S, S] and, with local views, patches1/2
  [B, grid², p, p, 3].
  """
  out = {}
  for i, view_cfg in ((1, cfg.view1), (2, cfg.view2)):
    out[f'view{i}'] = normalize(color_augment(batch[f'view{i}'], view_cfg.color))
    out[f'mask{i}'] = batch[f'mask{i}']
    if cfg.local_views.enabled:
      local = color_augment(batch[f'local{i}'], view_cfg.color)
      out[f'patches{i}'] = normalize(
          extract_patches(local, batch[f'offsets{i}'], cfg.local_views.patch_size))
  return out
