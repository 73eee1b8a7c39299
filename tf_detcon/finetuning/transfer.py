"""Fine-tuning glue for Model Garden: point its tasks at our exports, run its trainer.

Nothing of the detector or segmenter is ours: Model Garden builds, trains and evaluates them
(`official/vision/train.py`'s path). We resolve `--init_checkpoint` (an export directory, its
`checkpoint/` folder or a checkpoint prefix), set `init_checkpoint_modules` from the export's
metadata (backbone, plus decoder for DeCon) unless the user set them, and check, before any graph
is built, that the fine-tuning backbone is the architecture that was pretrained.

The transfer carries the network, not only its variables: the fields that decide the function the
pretrained encoder (and DeCon's FPN) computes (`exports/manifest.py`: the architecture, the
activation and the batch-norm epsilon) are taken from the export where the user did not set them,
saying so in one line, and an explicit conflicting value is refused in one line. Model Garden's
experiments otherwise run our ReLU, ε = 1e-5 weights at their own settings (RetinaNet and the
FPN segmenter ε = 1e-3, the segmenter with swish), which is another function.

A pretrained FPN decoder (DeCon, Quetin et al. 2025 §3) loads into the task's FPN when both have
the same width: the levels they share (DeCon's P2–P5 against Mask R-CNN's P2–P6, or RetinaNet's
and the FPN segmenter's P3–P7) load by layer name, and one line says which layers pretraining
trained, which loaded untrained, and which start at the task's initialisation.
"""

import math
import os
from typing import Any, Collection, Dict, List, Optional, Tuple

from absl import logging
import tensorflow as tf
import tf_keras

from official.common import distribute_utils
from official.core import base_task
from official.core import config_definitions as cfg
from official.core import task_factory
from official.core import train_lib
from official.modeling import performance
from official.vision import registry_imports  # pylint: disable=unused-import
from official.vision.modeling.decoders import factory as decoder_factory
from tf_detcon.support import console
from tf_detcon.exports import manifest

ARCHITECTURE_FIELDS = manifest.BACKBONE_FUNCTION_FIELDS
FPN_FIELDS = manifest.FPN_FUNCTION_FIELDS


def read_export_metadata(path: str) -> Optional[manifest.Manifest]:
  """The manifest of an export given its directory or its checkpoint/ folder, else None."""
  for directory in (path, os.path.dirname(path.rstrip('/'))):
    try:
      record = manifest.read(directory)
    except ValueError as e:
      raise ValueError(f'init_checkpoint {path!r}: {e}') from e
    if record is not None:
      return record
  return None


def _as_list(modules: Any) -> List[str]:
  return [modules] if isinstance(modules, str) else list(modules)


def resolve_init_checkpoint(params: cfg.ExperimentConfig, init_checkpoint: str,
                            modules_given: bool = False, explicit: Collection[str] = ()) -> None:
  """Sets task.init_checkpoint(_modules) from an export, and the fine-tuning model's network
  fields from the export's where `explicit` (the dotted keys the user set) does not name them;
  raises ValueError on a mismatch.

  `modules_given`: the user set task.init_checkpoint_modules, which then wins over the export's
  metadata (e.g. a DeCon export's backbone alone, for a detector with another decoder).
  """
  path = init_checkpoint
  metadata = read_export_metadata(path)
  if metadata is None:
    _refuse_a_training_checkpoint(path)
  if tf.io.gfile.isdir(os.path.join(path, 'checkpoint')) and manifest.exists(path):
    path = os.path.join(path, 'checkpoint')
  if tf.io.gfile.isdir(path):
    if tf.train.latest_checkpoint(path) is None:
      raise ValueError(f'--init_checkpoint {init_checkpoint!r}: no checkpoint in {path!r}')
  elif not tf.io.gfile.exists(path + '.index'):
    raise ValueError(f'--init_checkpoint {init_checkpoint!r} is neither an export, a '
                     'checkpoint directory nor a checkpoint prefix')
  params.task.init_checkpoint = path
  if metadata is None:
    logging.warning('%s has no %s: modules and architecture are not checked', path,
                    manifest.FILE)
    return
  if metadata.padding == 'symmetric':
    logging.warning('%s was imported with PyTorch\'s symmetric padding; Model Garden\'s ResNet '
                    'pads as TF does, so fine-tuning starts from features shifted by a pixel at '
                    'each stride-2 layer (docs/reference.md, "Use released weights")',
                    init_checkpoint)
  held = metadata.init_checkpoint_modules
  if modules_given:
    modules = _as_list(params.task.init_checkpoint_modules)
    missing = [m for m in modules if m not in held]
    if missing:
      raise ValueError(f'task.init_checkpoint_modules asks for {missing} but the export holds '
                       f'{held}')
  else:
    modules = list(held)
    if 'decoder' in modules and not _fpn_decoder(params):
      decoder = getattr(params.task.model, 'decoder', None)
      logging.warning('the export\'s pretrained FPN decoder is not loaded: the fine-tuning '
                      'model\'s decoder is %s', decoder.type if decoder else 'absent')
      modules.remove('decoder')
  params.task.init_checkpoint_modules = modules if len(modules) > 1 else modules[0]
  carry_network(params, metadata, explicit, decoder='decoder' in modules)
  check_backbone(params, metadata)
  if 'decoder' in modules:
    shared_decoder_levels(params, metadata)


def _refuse_a_training_checkpoint(init_checkpoint: str) -> None:
  """A pretraining run's directory, its checkpoints/ folder or a checkpoint in it holds the whole
  pretraining model (heads, targets, optimiser), which Model Garden cannot read as a backbone:
  name the run's export instead."""
  path = init_checkpoint.rstrip('/')
  for run in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
    export = os.path.join(run, 'export')
    if tf.io.gfile.isdir(os.path.join(run, 'checkpoints')) and manifest.exists(export):
      raise ValueError(f'--init_checkpoint {init_checkpoint!r} is a pretraining run\'s training '
                       f'checkpoint: use its export, --init_checkpoint={export}')


def _fpn_decoder(params: cfg.ExperimentConfig) -> bool:
  decoder = getattr(params.task.model, 'decoder', None)
  return decoder is not None and decoder.type == 'fpn'


def _backbone_fields(backbone: Dict[str, Any]) -> Dict[str, Any]:
  """The fields that decide a backbone's variables. Model Garden's dilated ResNet (VOC's FCN)
  holds exactly the variables of the ResNet of the same depth at width 1 (dilation and stride
  change no weight), so it compares as that ResNet."""
  kind = backbone['type']
  inner = backbone.get(kind) or {}
  fields = {k: inner.get(k) for k in ARCHITECTURE_FIELDS if k in inner}
  if kind == 'dilated_resnet' and inner.get('last_stage_repeats', 1) == 1:
    kind = 'resnet'
    fields.update(depth_multiplier=1.0)
  if kind == 'resnet' and fields.get('depth_multiplier') == 1.0:
    fields.pop('scale_stem', None)  # the stem has 64 filters either way
  return {'type': kind, **fields}


def _same(a: Any, b: Any) -> bool:
  if isinstance(a, float) or isinstance(b, float):
    try:
      return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
      return False
  return a == b


def carry_network(params: cfg.ExperimentConfig, metadata: manifest.Manifest,
                  explicit: Collection[str] = (), decoder: bool = False) -> List[str]:
  """Gives the fine-tuning model the export's network fields (`Manifest.function`): each
  one the user did not set (`explicit`: dotted keys) takes the export's value, in one line; one
  the user set to another value stops with one line naming both. Returns what was taken.

  Model Garden's `task.model.norm_activation` serves backbone, decoder and heads alike, so the
  heads run with the pretrained activation and epsilon too."""
  network = metadata.function
  model = params.task.model
  backbone_type = model.backbone.type
  wanted = []  # (config, dotted path, field, export's value)
  if backbone_type == network['backbone']['type']:
    inner = model.backbone.get()
    wanted += [(inner, f'task.model.backbone.{backbone_type}', field, value)
               for field, value in network['backbone'].items()
               if field != 'type' and field in inner.as_dict()]
  wanted += [(model.norm_activation, 'task.model.norm_activation', field, value)
             for field, value in network['norm_activation'].items()]
  if decoder and network.get('decoder') and _fpn_decoder(params):
    wanted += [(model.decoder.fpn, 'task.model.decoder.fpn', field, value)
               for field, value in network['decoder'].items() if field != 'type']
  taken, conflicts = [], []
  for config, path, field, value in wanted:
    current = getattr(config, field)
    if _same(current, value):
      continue
    key = f'{path}.{field}'
    if key in explicit:
      conflicts.append(f'{key} is set to {current!r} but the export was pretrained with '
                       f'{value!r}')
    else:
      setattr(config, field, value)
      taken.append(f'{key}={value!r} (the experiment\'s: {current!r})')
  if conflicts:
    raise ValueError(f'{conflicts[0]}: fine-tuning would start from another function than '
                     'the pretrained one; remove the setting to take the export\'s'
                     + (f' ({len(conflicts) - 1} more such settings)' if len(conflicts) > 1
                        else ''))
  if taken:
    console.say('fine-tuning with the export\'s network: ' + ', '.join(taken))
  return taken


def check_backbone(params: cfg.ExperimentConfig, metadata: manifest.Manifest) -> None:
  pretrained = _backbone_fields(metadata.encoder['backbone'])
  finetune = _backbone_fields(params.task.model.backbone.as_dict())
  if pretrained != finetune:
    raise ValueError(f'the checkpoint holds a {pretrained} backbone but the fine-tuning model '
                     f'builds {finetune}: set task.model.backbone to match')


def _fpn_fields(decoder: Dict[str, Any]) -> Dict[str, Any]:
  inner = decoder.get(decoder['type']) or {}
  return {'type': decoder['type'], **{k: inner.get(k) for k in FPN_FIELDS}}


def shared_decoder_levels(params: cfg.ExperimentConfig,
                          metadata: manifest.Manifest) -> Tuple[int, int]:
  """The FPN levels that the export's decoder and the fine-tuning decoder share; raises
  ValueError if their widths differ or they share none."""
  pretrained = metadata.decoder
  model = params.task.model
  if not _fpn_decoder(params) or _fpn_fields(pretrained['decoder']) != _fpn_fields(
      model.decoder.as_dict()):
    finetune = {'decoder': model.decoder.as_dict() if model.decoder else None,
                'min_level': model.min_level, 'max_level': model.max_level}
    raise ValueError(f'the checkpoint holds decoder {pretrained} but the fine-tuning model '
                     f'builds {finetune}: set task.model.decoder to match')
  low = max(pretrained['min_level'], model.min_level)
  high = min(pretrained['max_level'], model.max_level)
  if low > high:
    raise ValueError(f'the pretrained FPN has levels {pretrained["min_level"]}..'
                     f'{pretrained["max_level"]} and the fine-tuning FPN '
                     f'{model.min_level}..{model.max_level}: no level to load')
  return low, high


def copy_layers_by_name(source: tf_keras.Model, target: tf_keras.Model
                        ) -> Tuple[List[str], List[str], List[str]]:
  """Assigns every weighted layer of `target` the weights of `source`'s layer of the same name.
  Returns (copied, target layers absent from source, source layers absent from target)."""
  sources = {layer.name: layer for layer in source.layers if layer.weights}
  targets = {layer.name: layer for layer in target.layers if layer.weights}
  copied = []
  for name, layer in targets.items():
    if name in sources:
      for mine, theirs in zip(layer.weights, sources[name].weights):
        if mine.shape != theirs.shape:
          raise ValueError(f'decoder layer {name}: pretrained {theirs.shape}, '
                           f'fine-tuning {mine.shape}')
        mine.assign(theirs)
      copied.append(name)
  return (copied, sorted(set(targets) - set(sources)), sorted(set(sources) - set(targets)))


def describe_decoder_load(copied: List[str], fresh: List[str], unused: List[str],
                          trained: Optional[List[str]]) -> str:
  """One line saying which of the fine-tuning FPN's layers start pretrained: loaded and trained
  by the pretraining objective; loaded but never trained there (`trained`: the export's record;
  None for exports written before it, which say only what loaded); at this task's
  initialisation; and pretrained layers this FPN has no place for."""
  copied = sorted(copied)
  if trained is None:
    parts = [f'loaded the pretrained FPN\'s {", ".join(copied)}']
  else:
    parts = [f'pretrained FPN layers loaded: {", ".join(n for n in copied if n in trained) or "none"}',
             'loaded but untrained in pretraining (at their pretraining initialisation): '
             + (', '.join(n for n in copied if n not in trained) or 'none')]
  parts.append(f'not pretrained, at this task\'s initialisation: {", ".join(fresh) or "none"}')
  parts.append(f'pretrained but not in this FPN: {", ".join(unused) or "none"}')
  return '; '.join(parts)


def initialize_with_decoder(task: base_task.Task, model: tf_keras.Model,
                            metadata: manifest.Manifest) -> None:
  """`task.initialize` when the export's FPN loads: the backbone as Model Garden loads it, then
  the pretrained FPN rebuilt at its own levels by Model Garden's decoder factory, restored, and
  copied into the task's FPN layer by layer (Model Garden names them by level: lateral_L,
  post_hoc_L, coarser_L, norm_L, so a layer of a level both FPNs have computes the same function
  in both). One line says which layers start pretrained (`describe_decoder_load`)."""
  config = task.task_config
  path = config.init_checkpoint
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
  tf.train.Checkpoint(backbone=model.backbone).read(path).expect_partial(
  ).assert_existing_objects_matched()
  pretrained_config = config.model.as_dict()
  pretrained_config.update(min_level=metadata.decoder['min_level'],
                           max_level=metadata.decoder['max_level'])
  pretrained = decoder_factory.build_decoder(
      input_specs=model.backbone.output_specs,
      model_config=type(config.model)(pretrained_config))
  tf.train.Checkpoint(decoder=pretrained).read(path).expect_partial(
  ).assert_existing_objects_matched()
  copied, fresh, unused = copy_layers_by_name(pretrained, model.decoder)
  logging.info('%s', describe_decoder_load(copied, fresh, unused,
                                           metadata.decoder.get('trained_layers')))
  logging.info('Finished loading pretrained checkpoint from %s', path)


def build_task(params: cfg.ExperimentConfig, model_dir: Optional[str] = None) -> base_task.Task:
  """Model Garden's task for the config; when the export's FPN loads, its `initialize` is
  `initialize_with_decoder`, which loads the levels both FPNs share and names them."""
  task = task_factory.get_task(params.task, logging_dir=model_dir)
  metadata = (read_export_metadata(params.task.init_checkpoint)
              if params.task.init_checkpoint else None)
  if metadata is not None and 'decoder' in _as_list(params.task.init_checkpoint_modules):
    task.initialize = lambda model: initialize_with_decoder(task, model, metadata)
  return task


def deterministic_inputs(task: base_task.Task) -> None:
  """The task's input pipelines in a deterministic order, on one tf.data thread: Model Garden's
  parsers draw their augmentation from stateful random ops inside parallel map functions, so
  with more threads which example gets which draw depends on thread timing. (TF's deterministic
  ops would run those maps in order, but its rewrite of them fails on Model Garden's parsers in
  TF 2.20: "input[0] == '^args_3', is not found".)"""
  build_inputs = task.build_inputs

  def in_order(*args, **kwargs) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = 1
    return build_inputs(*args, **kwargs).with_options(options)

  task.build_inputs = in_order


def seed_everything(seed: int) -> None:
  """Python's, NumPy's and TF's global seeds: Model Garden's initialisers and its parsers'
  random ops (whose op seeds are fixed) derive from TF's."""
  tf_keras.utils.set_random_seed(seed)


def run(params: cfg.ExperimentConfig, model_dir: str, mode: str,
        seed: Optional[int] = None) -> Any:
  """Model Garden's own train/eval loop (as official/vision/train.py runs it); with `seed`,
  repeatable (`seed_everything`; the data order is task.train_data.seed's)."""
  if seed is not None:
    seed_everything(seed)
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  strategy = distribute_utils.get_distribution_strategy(
      distribution_strategy=params.runtime.distribution_strategy,
      all_reduce_alg=params.runtime.all_reduce_alg, num_gpus=params.runtime.num_gpus,
      tpu_address=params.runtime.tpu)
  with strategy.scope():
    task = build_task(params, model_dir)
  if seed is not None:
    deterministic_inputs(task)
  return train_lib.run_experiment(distribution_strategy=strategy, task=task, mode=mode,
                                  params=params, model_dir=model_dir)
