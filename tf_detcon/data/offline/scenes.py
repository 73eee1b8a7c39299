"""Synthetic multi-object scenes with ground truth, generated offline (no download).

Each scene is a textured background with one to four textured objects. An object's class is its
texture pattern only: its colours, shape, size, position, the pattern's scale and phase are drawn
at random for every object, and a later object may occlude an earlier one. So the class is
recoverable from appearance, not from colour, position or shape, and colour jitter (which every
method's augmentation applies) cannot give it away. Patterns are chosen to survive horizontal
flips (no diagonal stripes, whose flip is another class).

Classes: 0 background (smooth two-colour noise), 1 horizontal stripes, 2 vertical stripes,
3 checkerboard, 4 dots, 5 speckle (fine random cells). A scene is a deterministic function of its
seed; `PRETRAIN_SEEDS` and `PROBE_SEEDS` are disjoint ranges, so evaluation images are never
pretraining images.
"""

import dataclasses
from typing import Iterator, List, Tuple

import numpy as np

from tf_detcon.data.offline import sources

CLASS_NAMES = ('background', 'h-stripes', 'v-stripes', 'checkerboard', 'dots', 'speckle')
NUM_CLASSES = len(CLASS_NAMES)
PRETRAIN_SEEDS = 0  # pretraining scenes use seeds 0, 1, 2, ...
# Labelled sets, disjoint: the dense probes' and the transfer table's fine-tuning sets.
PROBE_SEEDS = {'train': 10_000_000, 'eval': 20_000_000,
               'transfer_train': 30_000_000, 'transfer_eval': 40_000_000}


@dataclasses.dataclass
class Scene:
  image: np.ndarray  # uint8 [S, S, 3]
  instances: np.ndarray  # int32 [S, S]: 0 background, 1..n objects (visible part)
  semantic: np.ndarray  # int32 [S, S]: class per pixel

  def instance_masks(self) -> List[np.ndarray]:
    """One binary mask per visible object (the ground-truth masks of DetCon §4.4)."""
    return [self.instances == i for i in np.unique(self.instances) if i > 0]


def _colour(rng: np.random.Generator) -> np.ndarray:
  """A random saturated-enough colour, [3] floats in [0, 1]."""
  hue = rng.uniform()
  saturation, value = rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0)
  k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
  return value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
  """Bilinearly upsampled uniform noise on a coarse grid: [size, size] in [0, 1]."""
  coarse = rng.uniform(size=(cells + 1, cells + 1))
  position = np.linspace(0, cells, size)
  low = np.minimum(position.astype(int), cells - 1)
  frac = position - low
  rows = coarse[low] * (1 - frac)[:, None] + coarse[low + 1] * frac[:, None]
  return rows[:, low] * (1 - frac)[None] + rows[:, low + 1] * frac[None]


def _pattern(cls: int, rng: np.random.Generator, size: int) -> np.ndarray:
  """A binary [size, size] texture of class `cls` with a random scale and phase."""
  y, x = np.mgrid[0:size, 0:size].astype(np.float64)
  period = rng.uniform(5.0, 8.0) * size / 96.0
  y, x = y + rng.uniform(0, period), x + rng.uniform(0, period)
  if cls == 1:
    return (y % period) < period / 2
  if cls == 2:
    return (x % period) < period / 2
  if cls == 3:
    return ((y // (period / 2)) + (x // (period / 2))) % 2 == 0
  if cls == 4:
    dy, dx = y % period - period / 2, x % period - period / 2
    return dy**2 + dx**2 < (period * 0.3)**2
  if cls == 5:
    cell = max(1, int(round(period / 3)))
    coarse = rng.uniform(size=(size // cell + 2, size // cell + 2)) < 0.5
    return np.kron(coarse, np.ones((cell, cell), bool))[:size, :size]
  raise ValueError(f'no pattern for class {cls}')


def _shape(rng: np.random.Generator, size: int) -> np.ndarray:
  """A random ellipse or blob covering 6–25% of the image: binary [size, size]."""
  y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
  area = rng.uniform(0.06, 0.25)
  aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
  ry, rx = np.sqrt(area / np.pi / aspect), np.sqrt(area * aspect / np.pi)
  cy, cx = rng.uniform(ry * 0.5, 1 - ry * 0.5), rng.uniform(rx * 0.5, 1 - rx * 0.5)
  angle = rng.uniform(0, np.pi)
  u = ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / rx
  v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / ry
  radius = np.sqrt(u**2 + v**2)
  if rng.uniform() < 0.5:  # a blob: the ellipse's radius modulated by a few harmonics
    theta = np.arctan2(v, u)
    wobble = sum(rng.uniform(-0.15, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
                 for k in (2, 3, 5))
    radius = radius / (1.0 + wobble)
  return radius < 1.0


def scene(seed: int, size: int = 128) -> Scene:
  """The scene of `seed`: background plus 1–4 objects, with instance and class maps."""
  rng = np.random.default_rng(seed)
  noise = _smooth_noise(rng, size, cells=int(rng.integers(2, 5)))[..., None]
  image = noise * _colour(rng) + (1 - noise) * _colour(rng)
  instances = np.zeros((size, size), np.int32)
  semantic = np.zeros((size, size), np.int32)
  for index in range(1, int(rng.integers(1, 5)) + 1):
    cls = int(rng.integers(1, NUM_CLASSES))
    mask = _shape(rng, size)
    texture = _pattern(cls, rng, size)[..., None]
    appearance = np.where(texture, _colour(rng), _colour(rng))
    image = np.where(mask[..., None], appearance, image)
    instances[mask] = index
    semantic[mask] = cls
  image = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)
  # Renumber visible instances 1..n (an object may be hidden by later ones).
  visible = [i for i in np.unique(instances) if i > 0]
  renumbered = np.zeros_like(instances)
  for new, old in enumerate(visible, 1):
    renumbered[instances == old] = new
  return Scene(image=np.round(image * 255).astype(np.uint8), instances=renumbered,
               semantic=semantic)


def scenes(split: str, count: int, size: int = 128) -> Iterator[Tuple[int, Scene]]:
  """(seed, scene) of a split: 'pretrain', or a labelled split of `PROBE_SEEDS`."""
  first = PRETRAIN_SEEDS if split == 'pretrain' else PROBE_SEEDS[split]
  for seed in range(first, first + count):
    yield seed, scene(seed, size)


class SceneSource(sources.Source):
  """Pretraining scenes for the precompute job, with their ground-truth instance masks (for
  `MaskSpec(kind='gt')`, or ignored by FH masks)."""

  def __init__(self, count: int, size: int = 128):
    self.name = f'scenes:{count}x{size}'
    self.count = count
    self.size = size

  def __len__(self) -> int:
    return self.count

  def read(self, start: int, stop: int) -> Iterator[sources.RawExample]:
    for seed in range(PRETRAIN_SEEDS + start, PRETRAIN_SEEDS + stop):
      s = scene(seed, self.size)
      yield sources.RawExample(key=f'scene-{seed:07d}', image=s.image,
                               instance_masks=s.instance_masks())
