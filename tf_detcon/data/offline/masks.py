"""Segment-id maps used as DetCon masks: Felzenszwalb–Huttenlocher, grid, ground truth.

Every map is an integer array [H, W] with ids 0..K-1 numbered by decreasing area. The DeepMind
release casts FH ids to uint8 and so silently wraps ids above 255; here a map either fits in 8 bits
after merging its smallest segments into their neighbours, or is kept (and stored) as uint16.
Nothing ever wraps.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from skimage import segmentation

MAX_UINT8_SEGMENTS = 256
MAX_UINT16_SEGMENTS = 65536
# (scale, sigma, min_size) per mask: DetCon §3.2 (scales); docs/design.md §1 (sigma, min_size).
IMAGENET_FH_SETTINGS: Tuple[Tuple[float, float, int], ...] = ((1000.0, 0.8, 1000),)
COCO_FH_SETTINGS: Tuple[Tuple[float, float, int], ...] = (
    (500.0, 0.8, 500), (1000.0, 0.8, 1000), (1500.0, 0.8, 1500))
# FH at full resolution, as the paper, and the precompute's default: half resolution, which
# matched it in ABO at 4.6× the speed (benchmarks/README.md, "FH masks at ImageNet scale").
PAPER_FH_DOWNSCALE = 1.0
FAST_FH_DOWNSCALE = 0.5
# Images whose short side is at most this many pixels are segmented at full resolution, and
# none is segmented below it: the smallest side at which half resolution held ABO within 0.01
# of full resolution (benchmarks/README.md, "FH working resolution by image size").
FH_MIN_WORKING_SIDE = 128


def relabel_by_area(ids: np.ndarray) -> np.ndarray:
  """Renumbers ids to 0..K-1 by decreasing area (ties by old id); returns int64."""
  ids = np.asarray(ids)
  uniques, inverse, counts = np.unique(ids.ravel(), return_inverse=True, return_counts=True)
  order = np.lexsort((uniques, -counts))  # largest first, stable on the old id
  rank = np.empty_like(order)
  rank[order] = np.arange(order.size)
  return rank[inverse].reshape(ids.shape).astype(np.int64)


def merge_small_segments(ids: np.ndarray, max_segments: int) -> np.ndarray:
  """Merges the smallest segments into neighbours until at most `max_segments` remain.

  Each segment to remove joins the larger neighbour with which it shares the longest border; a
  segment all of whose neighbours are smaller waits for the next round, when they have joined it.
  The smallest segment always has a larger neighbour, so every round makes progress.

  Args:
    ids: integer id map [H, W].
    max_segments: the number of segments to keep, >= 1.

  Returns:
    An id map relabelled 0..K-1 by decreasing area, K <= max_segments.
  """
  if max_segments < 1:
    raise ValueError(f'max_segments must be >= 1, got {max_segments}')
  ids = relabel_by_area(ids)
  num_ids = int(ids.max()) + 1
  while num_ids > max_segments:
    best, has_larger = _largest_neighbour(ids, num_ids)
    # After relabel_by_area a larger id means a smaller (or equal, later) segment.
    target = np.arange(num_ids)
    removable = np.arange(max_segments, num_ids)
    move = removable[has_larger[removable]]
    target[move] = best[move]
    # Resolve chains (a -> b -> c): targets always point to smaller ids, so this terminates.
    while not np.array_equal(target[target], target):
      target = target[target]
    ids = relabel_by_area(target[ids])
    num_ids = int(ids.max()) + 1
  return ids


def _largest_neighbour(ids: np.ndarray, num_ids: int) -> Tuple[np.ndarray, np.ndarray]:
  """For each id, the larger (smaller-numbered) neighbour with the longest shared border."""
  a = np.concatenate([ids[:, :-1].ravel(), ids[:-1, :].ravel()])
  b = np.concatenate([ids[:, 1:].ravel(), ids[1:, :].ravel()])
  src = np.concatenate([a, b])
  dst = np.concatenate([b, a])
  keep = dst < src  # only neighbours that are larger segments
  src, dst = src[keep], dst[keep]
  best = np.arange(num_ids)
  has_larger = np.zeros(num_ids, bool)
  if src.size == 0:
    return best, has_larger
  pair_key = src * num_ids + dst
  keys, counts = np.unique(pair_key, return_counts=True)
  key_src, key_dst = keys // num_ids, keys % num_ids
  # Sort by (src, -count, dst) and take the first row of each src.
  order = np.lexsort((key_dst, -counts, key_src))
  key_src, key_dst = key_src[order], key_dst[order]
  first = np.ones(key_src.size, bool)
  first[1:] = key_src[1:] != key_src[:-1]
  best[key_src[first]] = key_dst[first]
  has_larger[key_src[first]] = True
  return best, has_larger


def to_storage_dtype(ids: np.ndarray) -> np.ndarray:
  """Casts an id map to uint8 if its ids fit, else uint16; raises rather than wrap."""
  max_id = int(ids.max()) if ids.size else 0
  if int(ids.min()) < 0:
    raise ValueError('id maps must be non-negative')
  if max_id < MAX_UINT8_SEGMENTS:
    return ids.astype(np.uint8)
  if max_id < MAX_UINT16_SEGMENTS:
    return ids.astype(np.uint16)
  raise ValueError(f'{max_id + 1} segments do not fit in uint16')


def fh_working_settings(setting: Tuple[float, float, int],
                        downscale: float) -> Tuple[float, float, int]:
  """The FH (scale, sigma, min_size) used on an image resized by `downscale`.

  min_size is an area, so it scales by d². sigma stays in pixels of the image segmented: FH's
  smoothing only removes digitisation artefacts (Felzenszwalb & Huttenlocher 2004, §5). scale
  follows d, not d²: measured on photos and scenes, d² gives 3× as many segments as full
  resolution at d = 0.5 and d about as many (benchmarks/README.md).
  """
  scale, sigma, min_size = setting
  return scale * downscale, sigma, max(1, round(min_size * downscale * downscale))


def fh_working_downscale(height: int, width: int, downscale: float,
                         min_side: Optional[int] = None) -> float:
  """The factor FH segments one image by, for a requested `downscale`: 1 for an image whose
  short side is at most `min_side` (`FH_MIN_WORKING_SIDE` by default), else `downscale` or the
  factor that brings the short side to `min_side`, whichever reduces less."""
  min_side = FH_MIN_WORKING_SIDE if min_side is None else min_side
  short = min(height, width)
  if downscale >= 1 or short <= min_side:
    return 1.0
  return max(downscale, min_side / short)


def fh_segments(image: np.ndarray, scale: float = 1000.0, sigma: float = 0.8,
                min_size: int = 1000, max_segments: Optional[int] = MAX_UINT8_SEGMENTS,
                downscale: float = 1.0) -> Tuple[np.ndarray, int]:
  """`fh_mask`, and how many of its segments were merged into neighbours to fit.

  With `downscale` d < 1, FH segments a copy of the image resized by d (area averaging), with
  `fh_working_settings`, and the ids are upsampled to the image's size by nearest neighbour.
  FH's cost is about linear in pixels: d = 0.5 runs the whole per-example precompute 4.6× faster
  on ImageNet-sized JPEGs, at an ABO against ground truth no lower than full resolution's
  (benchmarks/README.md, "FH masks at ImageNet scale").
  """
  if not 0 < downscale <= 1:
    raise ValueError(f'FH downscale must be in (0, 1], got {downscale}')
  height, width = image.shape[:2]
  small = image
  if downscale < 1:
    size = (max(1, round(width * downscale)), max(1, round(height * downscale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    scale, sigma, min_size = fh_working_settings((scale, sigma, min_size), downscale)
  segments = segmentation.felzenszwalb(small, scale=scale, sigma=sigma, min_size=min_size)
  merged = 0
  if max_segments is not None:
    ids = merge_small_segments(segments, max_segments)
    merged = len(np.unique(segments)) - (int(ids.max()) + 1)
    segments = ids
  if small is not image:
    rows = np.arange(height) * segments.shape[0] // height
    cols = np.arange(width) * segments.shape[1] // width
    segments = segments[rows[:, None], cols[None, :]]
  return to_storage_dtype(relabel_by_area(segments)), merged


def fh_mask(image: np.ndarray,
            scale: float = 1000.0,
            sigma: float = 0.8,
            min_size: int = 1000,
            max_segments: Optional[int] = MAX_UINT8_SEGMENTS,
            downscale: float = 1.0) -> np.ndarray:
  """Felzenszwalb–Huttenlocher segmentation of an RGB image as an id map.

  Args:
    image: uint8 [H, W, 3] image (the decoded full image, as in the paper).
    scale, sigma, min_size: `skimage.segmentation.felzenszwalb` settings.
    max_segments: merge the smallest segments until this many remain (256 fits uint8); None keeps
      every segment (the map is then stored as uint16).
    downscale: segment a copy resized by this factor (see `fh_segments`); 1 is the paper's.

  Returns:
    uint8 or uint16 [H, W] ids 0..K-1 by decreasing area.
  """
  return fh_segments(image, scale, sigma, min_size, max_segments, downscale)[0]


def grid_mask(height: int, width: int, grid_size: int) -> np.ndarray:
  """An n×n grid of equal cells, ids row-major; n=1 is the global mask (SimCLR/BYOL)."""
  if grid_size < 1:
    raise ValueError(f'grid_size must be >= 1, got {grid_size}')
  rows = np.minimum(np.arange(height) * grid_size // max(height, 1), grid_size - 1)
  cols = np.minimum(np.arange(width) * grid_size // max(width, 1), grid_size - 1)
  return to_storage_dtype(rows[:, None] * grid_size + cols[None, :])


def ground_truth_mask(instance_masks: Sequence[np.ndarray],
                      height: int,
                      width: int) -> np.ndarray:
  """Id map from instance masks: background 0, each instance its own id.

  Larger instances are painted first so that small objects lying on top of larger ones keep their
  pixels. Ids are then renumbered by area; an instance fully covered by others disappears.

  Args:
    instance_masks: binary [H, W] arrays, one per instance (COCO annotations decoded).
    height, width: the image size; every mask must have it.

  Returns:
    uint8 or uint16 [H, W] id map.
  """
  ids = np.zeros((height, width), np.int64)
  masks = [np.asarray(m).astype(bool) for m in instance_masks]
  for i, m in enumerate(masks):
    if m.shape != (height, width):
      raise ValueError(f'instance mask {i} has shape {m.shape}, image is {(height, width)}')
  for i in sorted(range(len(masks)), key=lambda k: -masks[k].sum()):
    ids[masks[i]] = i + 1
  return to_storage_dtype(relabel_by_area(ids))
