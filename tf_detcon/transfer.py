"""Fine-tuning glue for Model Garden: point its tasks at our exports, run its trainer.

Nothing of the detector or segmenter is ours: Model Garden builds, trains and evaluates them
(`official/vision/train.py`'s path). We resolve `--init_checkpoint` (an export directory, its
`checkpoint/` folder or a checkpoint prefix), set `init_checkpoint_modules` from the export's
metadata (backbone, plus decoder for DeCon), and check, before any graph is built, that the
fine-tuning backbone is the architecture that was pretrained.
"""

import json
import os
from typing import Any, Dict, Optional

from absl import logging
import tensorflow as tf

from official.common import distribute_utils
from official.core import config_definitions as cfg
from official.core import task_factory
from official.core import train_lib
from official.modeling import performance
from official.vision import registry_imports  # pylint: disable=unused-import

METADATA = 'metadata.json'
# Backbone fields that change the variables; a mismatch means the checkpoint cannot load.
ARCHITECTURE_FIELDS = ('model_id', 'depth_multiplier', 'stem_type', 'resnetd_shortcut',
                       'replace_stem_max_pool', 'se_ratio', 'scale_stem')


def read_export_metadata(path: str) -> Optional[Dict[str, Any]]:
  """The metadata of an export given its directory or its checkpoint/ folder, else None."""
  for directory in (path, os.path.dirname(path.rstrip('/'))):
    candidate = os.path.join(directory, METADATA)
    if tf.io.gfile.exists(candidate):
      with tf.io.gfile.GFile(candidate) as f:
        return json.load(f)
  return None


def resolve_init_checkpoint(params: cfg.ExperimentConfig, init_checkpoint: str) -> None:
  """Sets task.init_checkpoint(_modules) from an export; raises ValueError on a mismatch."""
  path = init_checkpoint
  if tf.io.gfile.isdir(os.path.join(path, 'checkpoint')) and tf.io.gfile.exists(
      os.path.join(path, METADATA)):
    path = os.path.join(path, 'checkpoint')
  if tf.io.gfile.isdir(path):
    if tf.train.latest_checkpoint(path) is None:
      raise ValueError(f'no checkpoint in {path!r}')
  elif not tf.io.gfile.exists(path + '.index'):
    raise ValueError(f'--init_checkpoint {init_checkpoint!r} is neither an export, a '
                     'checkpoint directory nor a checkpoint prefix')
  metadata = read_export_metadata(path)
  params.task.init_checkpoint = path
  if metadata is None:
    logging.warning('%s has no %s: modules and architecture are not checked', path, METADATA)
    return
  modules = metadata['init_checkpoint_modules']
  if 'decoder' in modules and getattr(params.task.model, 'decoder', None) is None:
    modules = [m for m in modules if m != 'decoder']
  params.task.init_checkpoint_modules = modules if len(modules) > 1 else modules[0]
  check_backbone(params, metadata)


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


def check_backbone(params: cfg.ExperimentConfig, metadata: Dict[str, Any]) -> None:
  pretrained = _backbone_fields(metadata['config']['task']['encoder']['backbone'])
  finetune = _backbone_fields(params.task.model.backbone.as_dict())
  if pretrained != finetune:
    raise ValueError(f'the checkpoint holds a {pretrained} backbone but the fine-tuning model '
                     f'builds {finetune}: set task.model.backbone to match')
  if 'decoder' in metadata['init_checkpoint_modules'] and 'decoder' in str(
      params.task.init_checkpoint_modules):
    model = params.task.model
    finetune = {'decoder': model.decoder.as_dict(), 'min_level': model.min_level,
                'max_level': model.max_level}
    if metadata['decoder'] != finetune:
      raise ValueError(f'the checkpoint holds decoder {metadata["decoder"]} but the fine-tuning '
                       f'model builds {finetune}: set task.model.decoder/min_level/max_level')


def run(params: cfg.ExperimentConfig, model_dir: str, mode: str) -> Any:
  """Model Garden's own train/eval loop (as official/vision/train.py runs it)."""
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  strategy = distribute_utils.get_distribution_strategy(
      distribution_strategy=params.runtime.distribution_strategy,
      all_reduce_alg=params.runtime.all_reduce_alg, num_gpus=params.runtime.num_gpus,
      tpu_address=params.runtime.tpu)
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
  return train_lib.run_experiment(distribution_strategy=strategy, task=task, mode=mode,
                                  params=params, model_dir=model_dir)
