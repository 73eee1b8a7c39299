"""Batch colour and normalisation (DetCon A.1; docs/design.md §2): graph code that runs at the
end of tf.data or at the start of the train step on the accelerator (`color_on_device`, as
DeepMind's release does so TPU hosts only decode and crop).

Every op draws its parameters per image and applies them with `tf.where`, without per-image
branches, so the step compiles for TPUs. DetCo's local crops are coloured once and then cut
into their jigsaw patches by a gather, so the nine patches of a view share its colour.
"""

from typing import Dict, Optional

import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.primitives import seeds

# Blur settings are those of a 224 px view (BYOL/SimCLR/DetCon A.1); smaller or larger views
# scale the kernel and σ with their size, so the blur removes the same share of the image.
BLUR_REFERENCE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _where(apply: tf.Tensor, new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
  return tf.where(apply[:, None, None, None], new, old)


def _uniform(batch: tf.Tensor, seed: tf.Tensor, low: float, high: float) -> tf.Tensor:
  return tf.random.stateless_uniform([batch], seed, low, high)


def _grayscale(images: tf.Tensor) -> tf.Tensor:
  return tf.image.rgb_to_grayscale(images)


def adjust_brightness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """torchvision's brightness: x · f, clipped."""
  return tf.clip_by_value(images * factor[:, None, None, None], 0.0, 1.0)


def shift_brightness(images: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
  """DetCon A.1's brightness (dm_pix, as DeepMind's release runs it): x + δ, clipped."""
  return tf.clip_by_value(images + delta[:, None, None, None], 0.0, 1.0)


def adjust_contrast(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """dm_pix's (and tf.image's) contrast: a blend toward each channel's spatial mean."""
  mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  return _blend(images, factor, mean)


def adjust_saturation(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """torchvision's saturation: a blend toward the grey image."""
  return _blend(images, factor, _grayscale(images))


def scale_saturation(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """dm_pix's saturation: S · f in HSV, clipped to [0, 1], without the HSV round trip.

  For a pixel of value V = max(r, g, b) and hue H, each channel is V − V·S·k(H), so scaling S by
  g moves each channel toward V by g: x′ = V − g·(V − x). Clipping S·f at 1 is g =
  min(f, V / (V − min(r, g, b))), per pixel.
  """
  value, factor = _saturation_blend(images, factor[:, None, None, None])
  return _blend(images, factor, value)


def _saturation_blend(images: tf.Tensor, factor: tf.Tensor):
  """The reference (V) and per-pixel factor of dm_pix's saturation scale (see above)."""
  # Element-wise over the unstacked channels: 4× faster on CPU than a reduction over 3 values.
  red, green, blue = tf.unstack(images, axis=-1)
  value = tf.maximum(tf.maximum(red, green), blue)[..., None]
  chroma = value - tf.minimum(tf.minimum(red, green), blue)[..., None]
  # Grey pixels (chroma 0) stay as they are for any factor; divide_no_nan gives them 0.
  return value, tf.minimum(factor, tf.math.divide_no_nan(value, chroma))


def adjust_hue(images: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
  hsv = tf.image.rgb_to_hsv(images)
  hue = tf.math.floormod(hsv[..., 0] + delta[:, None, None], 1.0)
  return tf.clip_by_value(tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], -1)),
                          0.0, 1.0)


def _blend(images: tf.Tensor, factor: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
  """reference + factor · (images − reference), clipped: torchvision's brightness (reference
  0), contrast and saturation, and dm_pix's contrast and saturation (factor [B] or per pixel)."""
  if factor.shape.rank == 1:
    factor = factor[:, None, None, None]
  return tf.clip_by_value(reference + (images - reference) * factor, 0.0, 1.0)


def _jitter_step(images: tf.Tensor, op: tf.Tensor, params: tf.Tensor, active: tf.Tensor,
                 semantics: str) -> tf.Tensor:
  """Applies each active image's op (0 brightness, 1 contrast, 2 saturation) as one affine step;
  inactive images get scale 1 and shift 0, which leaves them bit for bit."""
  active = active & (op < 3)
  param = tf.where(active, tf.gather(params, tf.minimum(op, 2), batch_dims=1), 1.0)
  brightness, contrast, saturation = ((active & (op == k))[:, None, None, None]
                                      for k in range(3))
  param = param[:, None, None, None]
  if semantics == 'torchvision':
    gray = _grayscale(images)
    reference = tf.where(contrast, tf.reduce_mean(gray, axis=[1, 2, 3], keepdims=True),
                         tf.where(saturation, gray, 0.0))
    return _blend(images, param, reference)
  # dm_pix's ops as one affine step x · scale + shift: brightness (1, δ), contrast
  # (c, (1 − c) · channel mean), saturation (g, (1 − g) · V) with g per pixel.
  value, saturation_factor = _saturation_blend(images, param)
  scale = tf.where(saturation, saturation_factor, tf.where(brightness, 1.0, param))
  mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  shift = tf.where(brightness, param, tf.where(contrast, (1.0 - param) * mean, 0.0))
  pixel_shift = tf.where(saturation, (1.0 - saturation_factor) * value, 0.0)
  return tf.clip_by_value(images * scale + shift + pixel_shift, 0.0, 1.0)


def random_order_jitter(images: tf.Tensor, params: tf.Tensor, order: tf.Tensor,
                        semantics: str = 'additive_hsv') -> tf.Tensor:
  """Brightness, contrast, saturation and hue, each image in its own order (SimCLR/BYOL A.1).

  params [B, 4]: the brightness, contrast and saturation parameters and the hue delta; order
  [B, 4]: a permutation of 0..3 (the ops in that order) per image. semantics 'additive_hsv'
  (DetCon A.1, dm_pix in DeepMind's release): brightness x + δ, contrast toward each channel's
  mean, saturation S · f in HSV; 'torchvision' (MoCo v2, DetCo: `ColorJitter`): brightness x · f,
  contrast toward the mean grey level, saturation toward the grey image. Hue shifts H in both.

  The three affine ops run before hue where the image's order puts them before it, then hue
  once for every image, then those after it: 6 affine steps and one HSV round trip, where
  evaluating every op at every position takes 16 evaluations, four of them HSV round trips.
  No per-image branch, so it compiles for TPUs.
  """
  hue_position = tf.argmax(tf.cast(order == 3, tf.int32), axis=1, output_type=tf.int32)
  for position in range(3):
    images = _jitter_step(images, order[:, position], params, position < hue_position,
                          semantics)
  images = adjust_hue(images, params[:, 3])
  for position in range(1, 4):
    images = _jitter_step(images, order[:, position], params, position > hue_position,
                          semantics)
  return images


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


def color_augment(images: tf.Tensor, cfg: data_config.ColorConfig, seed: tf.Tensor,
                  group_size: int = 1) -> tf.Tensor:
  """Colour ops on a batch [B, H, W, 3] in [0, 1]; each image draws its own parameters, all from
  the stateless `seed` [2].

  With group_size g, consecutive groups of g images share parameters (DetCo's nine patches of one
  local view). Jitter applies brightness, contrast, saturation and hue in a random order per image,
  with the semantics `cfg.jitter_semantics` names (`random_order_jitter`).
  """
  num = tf.shape(images)[0] // group_size
  draw_seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, 10)))

  def draw(values: tf.Tensor) -> tf.Tensor:
    return tf.repeat(values, group_size, axis=0) if group_size > 1 else values

  def uniform(low: float, high: float) -> tf.Tensor:
    return draw(_uniform(num, next(draw_seeds), low, high))

  def coin(prob: float) -> tf.Tensor:
    return uniform(0.0, 1.0) < prob

  if cfg.jitter_semantics == 'additive_hsv':
    brightness = uniform(-cfg.brightness, cfg.brightness)
  else:
    brightness = uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness)
  params = tf.stack([
      brightness,
      uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
      uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
      uniform(-cfg.hue, cfg.hue),
  ], axis=1)
  order = draw(tf.argsort(tf.random.stateless_uniform([num, 4], next(draw_seeds)), axis=1))
  jittered = random_order_jitter(images, params, order, cfg.jitter_semantics)
  images = _where(coin(cfg.jitter_prob), jittered, images)
  images = _where(coin(cfg.grayscale_prob), tf.tile(_grayscale(images), [1, 1, 1, 3]), images)
  if cfg.blur_prob > 0:
    kernel = blur_kernel_size(images.shape[1], cfg.blur_kernel_fraction)
    scale = images.shape[1] / BLUR_REFERENCE_SIZE
    sigma = uniform(cfg.blur_sigma_min * scale, cfg.blur_sigma_max * scale)
    images = _where(coin(cfg.blur_prob), gaussian_blur(images, sigma, kernel), images)
  if cfg.solarize_prob > 0:
    images = _where(coin(cfg.solarize_prob), tf.where(images < 0.5, images, 1.0 - images),
                    images)
  return images


def normalize(images: tf.Tensor) -> tf.Tensor:
  return (images - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


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


def finalize_batch(batch: Dict[str, tf.Tensor], cfg: data_config.DataConfig,
                   local_views: Optional[data_config.LocalViewConfig] = None
                   ) -> Dict[str, tf.Tensor]:
  """Colour + normalisation of a batch of host views; a method's local views become patches.

  The colour draws derive from the batch's seed (`seeds.batch_seed`). view1/2 [B, S, S, 3] come
  back coloured and normalised and, with the `local_views` recipe a method declared
  (`MethodBlock.view_recipe`), local1/2 and offsets1/2 come back as patches1/2
  [B, grid², p, p, 3], coloured as their global view; every other key (masks, boxes, flips,
  position, pipeline, a method's own) passes on unchanged.
  """
  consumed = {f'{key}{i}' for key in ('local', 'offsets') for i in (1, 2)}
  out = {key: value for key, value in batch.items() if key not in consumed}
  view_seeds = tf.unstack(tf.random.experimental.stateless_split(
      seeds.batch_seed(seeds.base_seed(cfg), batch, seeds.COLOR), 4))
  for i, view_cfg in ((1, cfg.view1), (2, cfg.view2)):
    out[f'view{i}'] = normalize(color_augment(batch[f'view{i}'], view_cfg.color,
                                              view_seeds[i - 1]))
    if local_views is not None:
      local = color_augment(batch[f'local{i}'], view_cfg.color, view_seeds[i + 1])
      out[f'patches{i}'] = normalize(
          extract_patches(local, batch[f'offsets{i}'], local_views.patch_size))
  return out
