"""A released ResNet file -> an export of ours (SavedModel, Model Garden checkpoint, metadata),
which `launch/finetune.py --init_checkpoint`, `launch/evaluate.py --export` and
`launch/visualize.py` take as they take a pretraining's export.

BN: the moving mean and variance are imported with gamma and beta. Epsilon is not a weight but
decides the function: the export records the sources' epsilon, 1e-5 (haiku's and torchvision's),
under which the imported network computes what the source network computes, and fine-tuning
takes it from there (`tf_detcon.finetuning.transfer.carry_network`) rather than Model
Garden's 1e-3/1e-4.
"""

import os
from typing import Any, Dict, Optional, Tuple

from absl import logging
import tensorflow as tf
import tf_keras

from official.vision.configs import decoders as decoders_config

from tf_detcon import __version__
from tf_detcon.configs import pretrain
from tf_detcon.modeling.blocks import decoders
from tf_detcon.modeling.blocks import encoders
from tf_detcon.exports import manifest
from tf_detcon.modeling.blocks import padding as padding_lib
from tf_detcon.training import export as export_lib
from tf_detcon.weights import detectron2_pkl
from tf_detcon.weights import fpn_state
from tf_detcon.weights import haiku_npy
from tf_detcon.weights import resnet
from tf_detcon.weights import source_files
from tf_detcon.weights import torch_state

FORMATS = ('haiku', 'torchvision', 'detectron2')
# Formats of networks trained in PyTorch (symmetric padding); and those read from a pickle.
PYTORCH_FORMATS = ('torchvision', 'detectron2')
PICKLE_FORMATS = ('haiku', 'detectron2')
PADDINGS = ('same', 'symmetric')


def check_settings(fmt: str, padding: str = 'same', allow_pickle: bool = False) -> None:
  """One line for a format, padding or pickle setting that is unknown or means nothing here."""
  if fmt not in FORMATS:
    raise ValueError(f'--format must be one of {", ".join(FORMATS)}, got {fmt!r}')
  if padding not in PADDINGS:
    raise ValueError(f'--padding must be one of {", ".join(PADDINGS)}, got {padding!r}')
  if padding == 'symmetric' and fmt not in PYTORCH_FORMATS:
    raise ValueError('--padding=symmetric applies only with --format=torchvision or detectron2 '
                     '(haiku pads as TF does)')
  if allow_pickle and fmt not in PICKLE_FORMATS:
    raise ValueError('--allow_pickle applies only with --format=haiku or detectron2 (PyTorch '
                     'files are read with weights_only=True, which unpickles no code)')


def read(fmt: str, path: str, allow_pickle: bool = False, scope: str = '') -> source_files.Source:
  if fmt == 'haiku':
    return haiku_npy.read(path, allow_pickle=allow_pickle, scope=scope)
  if fmt == 'detectron2':
    return detectron2_pkl.read(path, allow_pickle=allow_pickle, scope=scope)
  return torch_state.read(path, scope=scope)


def encoder_config(model_id: int, epsilon: float) -> pretrain.EncoderConfig:
  cfg = pretrain.EncoderConfig()
  cfg.backbone.resnet.model_id = model_id
  cfg.norm_activation.use_sync_bn = False
  cfg.norm_activation.norm_epsilon = epsilon
  return cfg


def existing_import(output_dir: str) -> Optional[manifest.Manifest]:
  """The manifest of an import already in `output_dir`; None if it is absent or empty;
  ValueError if it holds something else."""
  if not tf.io.gfile.exists(output_dir):
    return None
  if not tf.io.gfile.isdir(output_dir):
    raise ValueError(f'--output_dir {output_dir!r} is a file')
  if not tf.io.gfile.listdir(output_dir):
    return None
  try:
    record = manifest.read(output_dir)
  except ValueError:
    record = None
  if record is not None and record.source:
    return record
  raise ValueError(f'--output_dir {output_dir!r} is not empty and holds no import: choose '
                   'another directory')


def import_decoder(source: source_files.Source, cfg: pretrain.EncoderConfig,
                   backbone: tf_keras.Model) -> Tuple[tf_keras.Model, Dict[str, Any]]:
  """DeCon's detectron2 FPN (`source.decoder`) as Model Garden's FPN over its levels, built as
  pretraining's DeCon builds its decoder, and the manifest's decoder record: the layers set from
  the file are its `trained_layers` (`weights/fpn_state.py` says how each maps)."""
  levels = fpn_state.levels(source.decoder)
  decoder = decoders_config.Decoder(type='fpn', fpn=decoders_config.FPN(
      num_filters=fpn_state.num_filters(source.decoder), fusion_type='sum',
      use_separable_conv=False))
  fpn = decoders.build_decoder(decoder, levels[0], levels[-1], cfg.norm_activation,
                               backbone.output_specs)
  trained = fpn_state.assign(fpn, source.decoder, source.epsilon)
  return fpn, {'decoder': decoder.as_dict(), 'min_level': levels[0], 'max_level': levels[-1],
               'trained_layers': trained}


def run(fmt: str, path: str, output_dir: str, model_id: Optional[int] = None,
        allow_pickle: bool = False, scope: str = '', padding: str = 'same') -> str:
  """Imports `path` into the export directory `output_dir`; returns it. A rerun of the same
  import finds it done; another file into the same directory is refused.

  `padding='symmetric'` (PyTorch files): the export's frozen uses (its SavedModel, evaluate.py,
  visualize.py) pad every stride-2 layer as PyTorch does (`modeling/blocks/padding.py`), and so
  compute the source network's function; Model Garden's fine-tuning pads as TF does.
  """
  check_settings(fmt, padding, allow_pickle)
  previous = existing_import(output_dir)
  checksum = source_files.sha256(path) if os.path.isfile(path) else ''
  if previous is not None:
    source = previous.source
    same = (source.get('sha256') == checksum and source.get('format') == fmt and
            (model_id is None or source.get('model_id') == model_id) and
            source.get('scope_given', '') == scope and previous.padding == padding)
    if same:
      print(f'{output_dir} already holds this import of {path}; nothing to do', flush=True)
      return output_dir
    raise ValueError(f'--output_dir {output_dir!r} already holds an import of '
                     f'{source.get("file")} ({source.get("format")}, sha256 '
                     f'{str(source.get("sha256"))[:12]}…): choose another directory')
  source = read(fmt, path, allow_pickle=allow_pickle, scope=scope)
  inferred = resnet.infer_model_id(source.tensors)
  model_id = model_id or inferred
  identity = resnet.identity_shortcut(source.tensors, model_id, source.epsilon)
  cfg = encoder_config(model_id, source.epsilon)
  backbone = encoders.build_backbone(cfg)
  count = resnet.assign(backbone, source)  # names a misfit of model_id
  if padding == 'symmetric':
    padding_lib.symmetric(backbone)
  modules, decoder_record = {'backbone': backbone}, None
  if source.decoder:
    modules['decoder'], decoder_record = import_decoder(source, cfg, backbone)
  record = manifest.Manifest(
      method='imported', step=None, extra={'tf_detcon_version': __version__},
      source={'file': os.path.abspath(path), 'format': fmt, 'sha256': checksum,
              'model_id': model_id, 'scope': source.scope, 'scope_given': scope,
              'not_imported': source.skipped, 'identity_shortcuts': identity},
      config={'task': {'encoder': cfg.as_dict()}}, padding=padding, decoder=decoder_record)
  export_lib.write(output_dir, modules, record)
  scope_text = f' at {source.scope!r}' if source.scope else ''
  print(f'imported the ResNet-{model_id}{scope_text} of {path} ({count} tensors) into '
        f'{output_dir}', flush=True)
  if source.note:
    print(f'took the ResNet at {source.note}', flush=True)
  if decoder_record:
    print(f'imported its FPN decoder at {source.decoder_scope!r} into Model Garden\'s FPN '
          f'(levels {decoder_record["min_level"]}-{decoder_record["max_level"]}, '
          f'{decoder_record["decoder"]["fpn"]["num_filters"]} filters; from the file: '
          f'{", ".join(decoder_record["trained_layers"])})', flush=True)
  if source.skipped:
    print(f'not imported (not part of the ResNet): {source_files.first(source.skipped, 6)}', flush=True)
  if identity:
    print('identity shortcut (the source has none, Model Garden projects): '
          + ', '.join(identity), flush=True)
  logging.info('import of %s: %s', path, record.source)
  return output_dir
