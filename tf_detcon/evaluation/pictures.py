"""Pictures of what the methods see and learn, as uint8 arrays (PNG files or TensorBoard images).

- `view_panels`: an image, its stored id map in colour, the two augmented views with their aligned
  masks overlaid, and DetCo's nine patches when the config has local views.
- `similarity_panel`: for query points, the cosine similarity of every position's feature to the
  query's, upsampled over the image.
- `retrieval_panel`: mask-pooled features across images; for a query mask, its nearest masks.
"""

import copy
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.primitives import color
from tf_detcon.data import decode
from tf_detcon.data import geometry
from tf_detcon.primitives import seeds

PAD = 2


def id_colours(num: int = 256, seed: int = 0) -> np.ndarray:
  """A fixed palette of `num` distinguishable colours (id 0 dark grey)."""
  rng = np.random.default_rng(seed)
  palette = rng.integers(40, 256, size=(num, 3)).astype(np.uint8)
  palette[0] = (50, 50, 50)
  return palette


PALETTE = id_colours()


def colour_ids(ids: np.ndarray) -> np.ndarray:
  return PALETTE[np.asarray(ids) % len(PALETTE)]


def overlay(image: np.ndarray, ids: np.ndarray, alpha: float = 0.45) -> np.ndarray:
  """The image with its id map blended on top, and the segments' borders in white (the image
  unchanged when the map is one segment: a global mask)."""
  if np.all(ids == ids.flat[0]):
    return image
  blended = (1 - alpha) * image.astype(np.float32) + alpha * colour_ids(ids)
  border = np.zeros(ids.shape, bool)
  border[:, 1:] |= ids[:, 1:] != ids[:, :-1]
  border[1:, :] |= ids[1:, :] != ids[:-1, :]
  blended[border] = 255
  return blended.astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
  return np.clip(np.round(np.asarray(image) * 255), 0, 255).astype(np.uint8)


def fit(image: np.ndarray, size: int) -> np.ndarray:
  """Nearest-neighbour resize of an [H, W(, 3)] array to size×size (keeps ids intact)."""
  image = np.asarray(image)
  rows = np.arange(size) * image.shape[0] // size
  cols = np.arange(size) * image.shape[1] // size
  return image[rows][:, cols]


def row(tiles: Sequence[np.ndarray], size: int) -> np.ndarray:
  """Tiles side by side (each resized to size×size, grey ids as colour), padded."""
  padded = []
  for tile in tiles:
    tile = fit(tile, size)
    if tile.ndim == 2:
      tile = colour_ids(tile)
    padded.append(np.pad(tile, ((PAD, PAD), (PAD, PAD), (0, 0)), constant_values=255))
  return np.concatenate(padded, axis=1)


def stack(rows: Sequence[np.ndarray]) -> np.ndarray:
  width = max(r.shape[1] for r in rows)
  return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)),
                                constant_values=255) for r in rows], axis=0)


def view_panels(records: Sequence[bytes], cfg: data_config.DataConfig, size: int = 128,
                seed: int = 0,
                local_views: Optional[data_config.LocalViewConfig] = None) -> np.ndarray:
  """One row per record: the image, its stored id map (FH or ground truth), view 1 and view 2
  with the masks the method uses overlaid, and, for a method's `local_views` recipe (DetCo's),
  the patches of view 1's local crop."""
  stored = data_config.MaskConfig(type='stored')
  data_cfg = copy.deepcopy(cfg)
  data_cfg.seed = seed  # the views are keyed by (seed, record)
  rows = []
  for index, serialized in enumerate(records):
    decode_seed = seeds.record_seed(seed, 0, index, seeds.DECODE)
    example = decode.decode_example(tf.constant(serialized), cfg.masks, decode_seed)
    views = geometry.host_views(dict(example, position=tf.constant(index, tf.int64),
                                     pipeline=tf.constant(0)), data_cfg,
                                 local_views)
    stored_ids = decode.decode_example(tf.constant(serialized), stored,
                                       decode_seed)['mask'].numpy()
    tiles = [example['image'].numpy(), stored_ids if stored_ids.size else example['mask'].numpy()]
    color_seeds = tf.random.experimental.stateless_split(
        seeds.record_seed(seed, 0, index, seeds.COLOR), 3)
    for i, view_cfg in ((1, cfg.view1), (2, cfg.view2)):
      coloured = color.color_augment(views[f'view{i}'][None], view_cfg.color,
                                     color_seeds[i - 1])[0].numpy()
      tiles.append(overlay(to_uint8(coloured), views[f'mask{i}'].numpy()))
    if local_views is not None:
      local = color.color_augment(views['local1'][None], cfg.view1.color, color_seeds[2])
      patches = color.extract_patches(local, views['offsets1'][None],
                                      local_views.patch_size)[0].numpy()
      grid = local_views.grid_size
      patch_rows = [np.concatenate([np.pad(to_uint8(patches[r * grid + c]),
                                           ((1, 1), (1, 1), (0, 0)), constant_values=255)
                                    for c in range(grid)], axis=1) for r in range(grid)]
      tiles.append(np.concatenate(patch_rows, axis=0))
    rows.append(row(tiles, size))
  return stack(rows)


def heat(values: np.ndarray) -> np.ndarray:
  """[H, W] values in [-1, 1] → a blue–white–red colour map."""
  t = np.clip((np.asarray(values) + 1) / 2, 0, 1)[..., None]
  blue, white, red = (np.array(c, np.float32) for c in ((40, 70, 200), (245, 245, 245),
                                                         (200, 40, 40)))
  out = np.where(t < 0.5, blue + (white - blue) * (t / 0.5), white + (red - white) *
                 ((t - 0.5) / 0.5))
  return out.astype(np.uint8)


def similarity_maps(features: np.ndarray, points: Sequence[Tuple[float, float]]) -> np.ndarray:
  """[P, h, w]: cosine similarity of every position of `features` [h, w, C] to the feature at
  each point (fractions of height and width)."""
  h, w, _ = features.shape
  flat = features / (np.linalg.norm(features, axis=-1, keepdims=True) + 1e-8)
  maps = []
  for fy, fx in points:
    query = flat[min(int(fy * h), h - 1), min(int(fx * w), w - 1)]
    maps.append(flat @ query)
  return np.stack(maps)


def mark(image: np.ndarray, fy: float, fx: float, radius: int = 3) -> np.ndarray:
  image = image.copy()
  y, x = int(fy * image.shape[0]), int(fx * image.shape[1])
  image[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1] = (255, 230, 0)
  return image


def similarity_panel(images: np.ndarray, features: np.ndarray,
                     points: Sequence[Tuple[float, float]], size: int = 128) -> np.ndarray:
  """One row per image: the image, then per query point the image marked and its map, each
  map stretched over its own range (blue: least similar, red: most)."""
  rows = []
  for image, feature in zip(images, features):
    maps = similarity_maps(feature, points)
    tiles = [image]
    for (fy, fx), values in zip(points, maps):
      low, high = values.min(), values.max()
      stretched = 2 * (values - low) / max(high - low, 1e-8) - 1
      tiles += [mark(fit(image, size), fy, fx), heat(fit(stretched, size))]
    rows.append(row(tiles, size))
  return stack(rows)


def pooled_masks(features: np.ndarray, ids: np.ndarray, min_cells: int = 2):
  """[(image, id, pooled feature)] of every mask that owns >= min_cells feature cells."""
  out = []
  for index, (feature, id_map) in enumerate(zip(features, ids)):
    cells = fit(id_map, feature.shape[0])
    for segment in np.unique(cells):
      member = cells == segment
      if member.sum() >= min_cells:
        out.append((index, int(segment), feature[member].mean(0)))
  return out


def retrieval_panel(images: np.ndarray, ids: np.ndarray, features: np.ndarray,
                    queries: int = 4, neighbours: int = 5, size: int = 96) -> np.ndarray:
  """For a few query masks, the query (outlined) and its nearest masks in other images by cosine
  similarity of mask-pooled features."""
  masks = pooled_masks(features, ids)
  if len(masks) < 2:
    raise ValueError('too few masks to retrieve among')
  vectors = np.stack([m[2] for m in masks])
  vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True) + 1e-8
  rng = np.random.default_rng(0)
  rows: List[np.ndarray] = []
  for q in rng.choice(len(masks), min(queries, len(masks)), replace=False):
    order = [j for j in np.argsort(-(vectors @ vectors[q])) if masks[j][0] != masks[q][0]]

    def tile(j: int) -> np.ndarray:
      index, segment, _ = masks[j]
      inside = ids[index] == segment
      shown = np.where(inside[..., None], images[index], (images[index] * 0.3).astype(np.uint8))
      return overlay(shown, inside.astype(np.int32), alpha=0.0)

    rows.append(row([tile(q)] + [tile(j) for j in order[:neighbours]], size))
  return stack(rows)


def encode_png(image: np.ndarray) -> bytes:
  return tf.io.encode_png(tf.constant(image)).numpy()


def level_features(encoder, images: np.ndarray, level: str) -> np.ndarray:
  """float32 [N, h, w, C] of a frozen encoder at one level."""
  return encoder(tf.constant(images))[level].numpy()
