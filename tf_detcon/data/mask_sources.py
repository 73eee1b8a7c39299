"""Online mask sources: the id map each example gets in the host pipeline, whose segments DetCon
pools features over (DetCon §3.1). One registered class per source, chosen by
`task.train_data.masks.type`, a one-of of config blocks (`configs/data.py`), as methods are; the
trainer sees only id maps.

  @mask_sources.register('grid')
  class Grid(mask_sources.MaskSource): ...

A new source is its class here (or in a module of its own that registers it) and its block in
`MaskConfig`. The offline sources, which write the stored maps into records
(launch/make_masks.py), are `data/offline/precompute.MaskSource`.
"""

from typing import Callable, Dict, NamedTuple, Optional, Type

import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.data import records


class Ids(NamedTuple):
  """An example's id map, int32 [H, W]; whether it is usable; and if not, why, naming it."""
  mask: tf.Tensor
  valid: tf.Tensor
  error: tf.Tensor


class MaskSource:
  """Gives an example its id map. `parsed` is the record's features (`records.parse_example`),
  or None for an input without records (TFDS images), which validation lets only sources that
  do not read stored maps serve."""

  def __init__(self, cfg: data_config.MaskBlock):
    self.cfg = cfg

  def ids(self, image: tf.Tensor, parsed: Optional[Dict[str, tf.Tensor]], key: tf.Tensor,
          seed: tf.Tensor) -> Ids:
    """The id map of `image` [H, W, 3] (example `key`), drawing from the stateless `seed` [2]."""
    raise NotImplementedError


_SOURCES: Dict[str, Type[MaskSource]] = {}


def register(name: str) -> Callable[[Type[MaskSource]], Type[MaskSource]]:
  """Class decorator: registers a `MaskSource` under its config block's name."""

  def decorator(cls: Type[MaskSource]) -> Type[MaskSource]:
    _SOURCES[name] = cls
    return cls

  return decorator


def build(cfg: data_config.MaskConfig) -> MaskSource:
  """The source of the one-of `cfg` (validated: its type names a block)."""
  if cfg.type not in _SOURCES:
    raise ValueError(f'no mask source is registered for masks.type {cfg.type!r}; known: '
                     f'{", ".join(sorted(_SOURCES))}')
  return _SOURCES[cfg.type](cfg.get())


def grid_ids(height: tf.Tensor, width: tf.Tensor, grid_size: int) -> tf.Tensor:
  """int32 [H, W] ids of grid_size × grid_size equal cells, row-major (1: the global mask)."""
  rows = tf.minimum(tf.range(height) * grid_size // tf.maximum(height, 1), grid_size - 1)
  cols = tf.minimum(tf.range(width) * grid_size // tf.maximum(width, 1), grid_size - 1)
  return rows[:, None] * grid_size + cols[None, :]


def decode_mask_png(png: tf.Tensor) -> tf.Tensor:
  """int32 [H, W] ids from an 8- or 16-bit PNG (decode_png as uint16 would rescale 8-bit data)."""
  bit_depth = tf.io.decode_raw(tf.strings.substr(png, 24, 1), tf.uint8)[0]
  return tf.cond(
      tf.equal(bit_depth, 16),
      lambda: tf.cast(tf.io.decode_png(png, channels=1, dtype=tf.uint16), tf.int32),
      lambda: tf.cast(tf.io.decode_png(png, channels=1, dtype=tf.uint8), tf.int32))[..., 0]


@register('grid')
class Grid(MaskSource):
  """`GridMasks`: equal cells of the whole image; always valid."""

  def ids(self, image, parsed, key, seed) -> Ids:
    del parsed, key, seed
    shape = tf.shape(image)[:2]
    return Ids(grid_ids(shape[0], shape[1], self.cfg.grid_size), tf.constant(True),
               tf.constant(''))


@register('stored')
class Stored(MaskSource):
  """`StoredMasks`: one of the record's stored maps (FH at several scales, or ground truth),
  drawn uniformly by `seed`. Invalid when the record has none or it does not match the image."""

  def ids(self, image, parsed, key, seed) -> Ids:
    image_shape = tf.shape(image)[:2]
    pngs = parsed[records.MASK_ENCODED]
    num_masks = tf.size(pngs)
    index = tf.random.stateless_uniform([], seed, 0, tf.maximum(num_masks, 1), dtype=tf.int32)
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
    return Ids(mask, valid, error)
