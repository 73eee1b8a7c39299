"""The manifest of an export (`metadata.json`): what it holds and the function its network
computes, in one typed record (docs/reference.md, "Fine-tuning with Model Garden").

Pretraining's export and the weight importer write it; fine-tuning (`finetuning/transfer.py`),
evaluation, visualisation and the benchmarks read it. It is plain JSON, so that a user (or Model
Garden's side of a pipeline) can read it without this package, and an export written by an older
version reads back: its function record is then derived from the recorded encoder config.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf

FILE = 'metadata.json'

# The fields of Model Garden's ResNet config that decide the function it computes (its variables
# and their use), besides `norm_activation`'s NORM_FUNCTION_FIELDS. The others (use_sync_bn,
# norm_momentum, bn_trainable, stochastic_depth_drop_rate) change only how it trains. Activation
# and epsilon are applied by every block of the ResNet.
BACKBONE_FUNCTION_FIELDS = ('model_id', 'depth_multiplier', 'stem_type', 'resnetd_shortcut',
                            'replace_stem_max_pool', 'se_ratio', 'scale_stem')
NORM_FUNCTION_FIELDS = ('activation', 'norm_epsilon')
# Model Garden's FPN: besides its levels and NORM_FUNCTION_FIELDS (epsilon in its norms, the
# activation between its coarser levels); `use_keras_layer` only picks an equal upsampling op.
FPN_FUNCTION_FIELDS = ('num_filters', 'fusion_type', 'use_separable_conv')


@dataclasses.dataclass
class Manifest:
  """An export's record.

  Attributes:
    config: the pretraining experiment's config as a dict (an import: its encoder's alone);
      `encoder` is its `task.encoder`.
    init_checkpoint_modules: the checkpoint's modules ('backbone', and 'decoder' for DeCon).
    levels: the backbone's output levels, {'2': 2, ...}.
    network: the fields that decide the network's function (`network_fields`).
    method: the method that pretrained it ('imported' for an import).
    step: the pretraining step exported (None for an import).
    padding: 'symmetric' for a PyTorch import whose frozen uses pad as PyTorch does.
    decoder: DeCon's pretrained decoder: its config, levels and trained layers.
    source: an import's source file, format and checksum.
    extra: every other entry, kept as written (e.g. the package version, a benchmark's note).
  """
  config: Dict[str, Any]
  init_checkpoint_modules: List[str] = dataclasses.field(default_factory=list)
  levels: Dict[str, int] = dataclasses.field(default_factory=dict)
  network: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
  method: Optional[str] = None
  step: Optional[int] = None
  padding: str = 'same'
  decoder: Optional[Dict[str, Any]] = None
  source: Optional[Dict[str, Any]] = None
  extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def encoder(self) -> Dict[str, Any]:
    """The recorded encoder config (`task.encoder`: backbone and norm_activation)."""
    return self.config['task']['encoder']

  @property
  def has_decoder(self) -> bool:
    return 'decoder' in self.init_checkpoint_modules

  @property
  def function(self) -> Dict[str, Dict[str, Any]]:
    """`network`, or for an export written before it was recorded, derived from the config."""
    return self.network or network_fields(self.encoder, self.decoder)

  def as_dict(self) -> Dict[str, Any]:
    out = dict(self.extra)
    for field in dataclasses.fields(self):
      if field.name != 'extra':
        out[field.name] = getattr(self, field.name)
    for optional in ('decoder', 'source'):
      if out[optional] is None:
        del out[optional]
    if not out['network']:
      del out['network']
    return out

  @classmethod
  def from_dict(cls, record: Dict[str, Any]) -> 'Manifest':
    known = {f.name for f in dataclasses.fields(cls)} - {'extra'}
    if not isinstance(record, dict) or not isinstance(record.get('config'), dict):
      raise ValueError('it has no config record')
    return cls(**{k: v for k, v in record.items() if k in known},
               extra={k: v for k, v in record.items() if k not in known})


def network_fields(encoder: Dict[str, Any], decoder: Optional[Dict[str, Any]] = None
                   ) -> Dict[str, Dict[str, Any]]:
  """{'backbone': {type, BACKBONE_FUNCTION_FIELDS}, 'norm_activation': {NORM_FUNCTION_FIELDS},
  and with a decoder 'decoder': {type, FPN_FUNCTION_FIELDS}}: what decides the function of a
  network, from its encoder config (a dict) and DeCon's decoder record. Imports record their
  source's activation and epsilon (ReLU, 1e-5)."""
  kind = encoder['backbone']['type']
  inner = encoder['backbone'].get(kind) or {}
  norm = encoder.get('norm_activation') or {}
  out = {'backbone': {'type': kind, **{k: inner[k] for k in BACKBONE_FUNCTION_FIELDS
                                       if k in inner}},
         'norm_activation': {'activation': norm.get('activation', 'relu'),
                             'norm_epsilon': norm.get('norm_epsilon', 1e-5)}}
  if decoder:
    config = decoder['decoder']
    inner = config.get(config['type']) or {}
    out['decoder'] = {'type': config['type'],
                      **{k: inner[k] for k in FPN_FUNCTION_FIELDS if k in inner}}
  return out


def path_in(directory: str) -> str:
  return os.path.join(directory, FILE)


def exists(directory: str) -> bool:
  return tf.io.gfile.exists(path_in(directory))


def read(directory: str) -> Optional[Manifest]:
  """The manifest of the export in `directory`; None if it has none; ValueError in one line if
  it cannot be read or is not a manifest."""
  path = path_in(directory)
  try:
    if not tf.io.gfile.exists(path):
      return None
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
  except tf.errors.OpError as e:  # e.g. a gs:// path without network or credentials
    reason = ' '.join((e.message or str(e)).split())[:200]
    raise ValueError(f'{path} cannot be read ({reason})') from e
  try:
    return Manifest.from_dict(json.loads(data.decode('utf-8')))
  except (ValueError, TypeError) as e:
    raise ValueError(f'{path} is not an export manifest ({str(e).splitlines()[0][:120]}): '
                     'export or import again') from e


def write(directory: str, manifest: Manifest) -> None:
  with tf.io.gfile.GFile(path_in(directory), 'w') as f:
    json.dump(manifest.as_dict(), f, indent=2, sort_keys=True, default=str)
