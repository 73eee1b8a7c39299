"""Data configs: views (crop, flip, colour per method), masks, the input pipeline."""

import dataclasses
from typing import Optional

from official.core import config_definitions as cfg
from official.modeling import hyperparams

from tf_detcon.configs import checks


# What colour jitter's brightness, contrast and saturation mean (ColorConfig.jitter_semantics).
JITTER_SEMANTICS = ('additive_hsv', 'torchvision')


@dataclasses.dataclass
class ColorConfig(hyperparams.Config):
  """Image-only colour ops (DetCon A.1; docs/design.md §2). Jitter is applied as a block, its
  4 ops in random order.

  jitter_semantics: what brightness, contrast and saturation mean. 'additive_hsv' (DetCon A.1:
  "shifted by a uniformly distributed offset"; dm_pix in DeepMind's DetCon and BYOL releases):
  brightness x + δ with δ ~ U[−b, b], contrast toward each channel's mean, saturation S · f in HSV.
  'torchvision' (MoCo v2 and DetCo, torchvision's `ColorJitter`): brightness x · f with
  f ~ U[1 − b, 1 + b], contrast toward the mean grey level, saturation toward the grey image.
  """
  jitter_semantics: str = 'additive_hsv'
  jitter_prob: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1
  grayscale_prob: float = 0.2
  blur_prob: float = 1.0
  # σ in pixels of a 224 px view, scaled with the view's size (as the kernel is).
  blur_sigma_min: float = 0.1
  blur_sigma_max: float = 2.0
  blur_kernel_fraction: float = 0.1  # 23×23 at 224, as in BYOL/DetCon
  solarize_prob: float = 0.0


@dataclasses.dataclass
class ViewConfig(hyperparams.Config):
  """One global view: random resized crop (image and mask alike), flip, colour."""
  crop_area_min: float = 0.08
  crop_area_max: float = 1.0
  aspect_ratio_min: float = 3.0 / 4.0
  aspect_ratio_max: float = 4.0 / 3.0
  output_size: int = 224
  flip_prob: float = 0.5
  color: ColorConfig = dataclasses.field(default_factory=ColorConfig)


@dataclasses.dataclass
class LocalViewConfig(hyperparams.Config):
  """A view recipe a method declares (`MethodBlock.view_recipe`; DetCo §3.2's jigsaw local
  view): a crop of each source image, coloured as its global view, split into a grid of
  grid_size × grid_size cells with one patch_size patch at a random offset in each. The data
  pipeline serves it to whichever method declares it, as `Inputs.patches`."""
  crop_area_min: float = 0.6
  crop_area_max: float = 1.0
  output_size: int = 255
  grid_size: int = 3
  patch_size: int = 64

  def check(self, path: str) -> None:
    """One-line `ConfigError`s for a recipe that cannot be cut; `path` names this block."""
    checks.require(0 < self.crop_area_min <= self.crop_area_max <= 1,
                   f'{path}: need 0 < crop_area_min <= crop_area_max <= 1')
    cell = self.output_size // max(self.grid_size, 1)
    checks.require(self.grid_size >= 1 and cell >= self.patch_size >= 1,
                   f'{path}: cells of {self.output_size}/{self.grid_size} = {cell} px cannot '
                   f'hold patches of {self.patch_size} px')


@dataclasses.dataclass
class MaskBlock(hyperparams.Config):
  """A mask source's settings (`data/mask_sources.py` registers its class under the block's
  name): what only it knows of itself."""

  def check(self, path: str) -> None:
    """One-line `ConfigError`s for settings that cannot work; `path` names this block."""

  def reads_stored_masks(self) -> bool:
    """Whether it reads id maps stored in the records (launch/make_masks.py writes them), which
    an images-only input (TFDS) does not have."""
    return False


@dataclasses.dataclass
class StoredMasks(MaskBlock):
  """One of the example's stored id maps (FH at each scale, or ground truth), drawn uniformly
  per example (DetCon §3.2)."""

  def reads_stored_masks(self) -> bool:
    return True


@dataclasses.dataclass
class GridMasks(MaskBlock):
  """grid_size × grid_size equal cells of the whole image (DetCon §4.3, Fig. 7); 1 is the
  single global mask with which DetCon recovers SimCLR and BYOL (§3.1)."""
  grid_size: int = 1

  def check(self, path: str) -> None:
    if self.grid_size < 1:
      raise checks.ConfigError(f'{path}.grid_size must be >= 1, got {self.grid_size}')


@dataclasses.dataclass
class MaskConfig(hyperparams.OneOfConfig):
  """Where each example's id map comes from: `type` picks the block (and the registered source
  of `data/mask_sources.py`); a YAML holds only that block."""
  type: str = 'stored'
  stored: StoredMasks = dataclasses.field(default_factory=StoredMasks)
  grid: GridMasks = dataclasses.field(default_factory=GridMasks)


@dataclasses.dataclass
class DataConfig(cfg.DataConfig):
  """Pretraining input. An empty `input_path` means the embedded scikit-image sample set."""
  input_path: str = ''
  global_batch_size: int = 4096
  is_training: bool = True
  shuffle_buffer_size: int = 10000
  cycle_length: int = 16
  view1: ViewConfig = dataclasses.field(default_factory=ViewConfig)
  view2: ViewConfig = dataclasses.field(default_factory=ViewConfig)
  masks: MaskConfig = dataclasses.field(default_factory=MaskConfig)
  # Colour ops and normalisation in the train step (on the accelerator, as the DeepMind release
  # does so TPU hosts are not the bottleneck) instead of in tf.data.
  color_on_device: bool = True
  # 'error': a record with a missing or mismatched mask stops training naming it; 'skip': dropped.
  on_bad_example: str = 'error'
  seed: Optional[int] = None


def byol_views(size: int = 224) -> dict:
  """BYOL / DetCon_B (DetCon Table A.1): blur 1.0 / 0.1, solarize 0.0 / 0.2."""
  return dict(
      view1=ViewConfig(output_size=size, color=ColorConfig(blur_prob=1.0, solarize_prob=0.0)),
      view2=ViewConfig(output_size=size, color=ColorConfig(blur_prob=0.1, solarize_prob=0.2)))


def simclr_views(size: int = 224) -> dict:
  """SimCLR / DetCon_S: strong jitter, blur on view 1 only, no solarize."""
  def color(blur):
    return ColorConfig(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_prob=blur)
  return dict(view1=ViewConfig(output_size=size, color=color(1.0)),
              view2=ViewConfig(output_size=size, color=color(0.0)))


def mocov2_views(size: int = 224) -> dict:
  """MoCo v2 / DetCo: crop area >= 0.2, torchvision's jitter 0.4/0.4/0.4/0.1, blur 0.5 on both
  views."""
  def view():
    return ViewConfig(crop_area_min=0.2, output_size=size, color=ColorConfig(
        jitter_semantics='torchvision', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
        blur_prob=0.5))
  return dict(view1=view(), view2=view())


@dataclasses.dataclass
class ProbeDataConfig(hyperparams.Config):
  """A labelled set for the frozen linear probe that pretraining runs every
  `trainer.validation_interval` steps (`launch/evaluate.py`'s probe; the run's mIoU goes to
  TensorBoard under `<model_dir>/<trainer.validation_summary_subdir>/`). `source` '' turns it off.

  source: 'synthetic' (the built-in scenes), 'tfrecord' (Model Garden segmentation records:
  `input_path` to fit on, `eval_input_path` to score on) or 'folder' (image and label-PNG
  folders). The probe fits on `num_train` images and scores on `num_eval`; with
  `trainer.validation_steps` > 0, on at most validation_steps × global_batch_size of them.
  """
  source: str = ''
  input_path: str = ''
  eval_input_path: str = ''
  train_images: str = ''
  train_labels: str = ''
  eval_images: str = ''
  eval_labels: str = ''
  num_classes: int = 0
  ignore_label: int = 255
  image_size: int = 96
  level: str = '4'
  num_train: int = 64
  num_eval: int = 64
  global_batch_size: int = 32
  fit_steps: int = 500  # optimisation steps of the linear probe (evaluate.py's default)

