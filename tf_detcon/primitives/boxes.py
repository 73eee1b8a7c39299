"""Where a view's pixels came from: the cells of a view's feature grid in source-image
coordinates, from the view's box and flip (`geometry.window_box`, `base.Inputs.boxes`).

A view is its box of the source image, resized to S × S and then flipped left-right or not
(`geometry.crop_resize_flip`). Resizing maps centres to centres (half-pixel convention, as
`tf.image.resize` does), so cell (r, c) of an h × w grid over the view has its centre at
((r + ½)/h, (c + ½)/w) of the view, mirrored in x when the view was flipped, and then at
y0 + (y1 − y0)·v_y, x0 + (x1 − x0)·v_x in the source. This is what relates two views' pixels to
each other (PixPro's positive pairs, Xie et al. 2021 §3.1) or to another crop's segments.
All on the device, batched and XLA-compilable.
"""

import tensorflow as tf


def cell_centres(boxes: tf.Tensor, flips: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """Source-image coordinates of the cell centres of an height × width grid over each view.

  Args:
    boxes: [B, 4] (y0, x0, y1, x1) in fractions of the source image.
    flips: [B] bool, whether the view was flipped left-right after the cut.
    height, width: the grid (a feature map's spatial size).

  Returns:
    [B, height·width, 2] (y, x) in fractions of the source's height and width, cells in
    row-major order (as a [B, h, w, C] map reshapes to [B, h·w, C]).
  """
  boxes = tf.cast(boxes, tf.float32)
  view_y = (tf.range(height, dtype=tf.float32) + 0.5) / height
  view_x = (tf.range(width, dtype=tf.float32) + 0.5) / width
  grid_y = tf.repeat(view_y, width)  # [hw]
  grid_x = tf.tile(view_x, [height])
  grid_x = tf.where(flips[:, None], 1.0 - grid_x[None], grid_x[None])  # [B, hw]
  y0, x0, y1, x1 = tf.unstack(boxes[:, :, None], axis=1)  # each [B, 1]
  return tf.stack([y0 + (y1 - y0) * grid_y[None], x0 + (x1 - x0) * grid_x], axis=-1)


def cell_diagonals(boxes: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """[B] the diagonal of one grid cell of each view, in the source's fractions (PixPro
  normalises the distance between two views' cells by it)."""
  boxes = tf.cast(boxes, tf.float32)
  cell_h = (boxes[:, 2] - boxes[:, 0]) / height
  cell_w = (boxes[:, 3] - boxes[:, 1]) / width
  return tf.sqrt(cell_h**2 + cell_w**2)


def pairwise_distances(points_a: tf.Tensor, points_b: tf.Tensor) -> tf.Tensor:
  """[B, N, 2] and [B, M, 2] → [B, N, M] Euclidean distances."""
  difference = points_a[:, :, None, :] - points_b[:, None, :, :]
  return tf.sqrt(tf.reduce_sum(tf.square(difference), axis=-1))


def in_frame(points: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
  """[B, N, 2] source coordinates → the same points as fractions of each image's box [B, 4]
  (a frame: another crop of the same source, e.g. the one a segmentation was computed on)."""
  boxes = tf.cast(boxes, tf.float32)[:, None, :]
  origin, extent = boxes[..., :2], boxes[..., 2:] - boxes[..., :2]
  return (points - origin) / extent


def lookup_ids(id_maps: tf.Tensor, points: tf.Tensor, outside_id: int) -> tf.Tensor:
  """The id of the cell of each [B, h, w] id map that holds each point, given as fractions of
  that map's frame ([B, N, 2], from `in_frame`); `outside_id` for a point outside the frame.

  Transports a segmentation computed on one crop to another crop's cells (`cell_centres` of
  its grid, `in_frame` of the first crop's box): [B, N] int32."""
  height, width = id_maps.shape[1], id_maps.shape[2]
  rows = tf.cast(tf.floor(points[..., 0] * height), tf.int32)
  cols = tf.cast(tf.floor(points[..., 1] * width), tf.int32)
  inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
  index = tf.clip_by_value(rows, 0, height - 1) * width + tf.clip_by_value(cols, 0, width - 1)
  flat = tf.reshape(id_maps, [-1, height * width])
  ids = tf.gather(flat, index, batch_dims=1)
  return tf.where(inside, ids, tf.cast(outside_id, ids.dtype))
