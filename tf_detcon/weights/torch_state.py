"""PyTorch ResNet state dicts (torchvision's `resnet50()` layout, or detectron2's conversion of
it) read into `resnet`'s layout: MoCo v2 and DetCo (`encoder_q.`), DeCon's encoder, and
torchvision's own files.

torchvision names: conv1, bn1, layer<K>.<J>.conv<I>, .bn<I>, .downsample.{0,1}, fc (not imported).
detectron2 names:  stem.conv1(.norm), res<K>.<J>.conv<I>(.norm), .shortcut(.norm).
The file is read with `torch.load(weights_only=True)`, which unpickles tensors, plain
containers and (admitted here) argparse Namespaces only, so reading it cannot run code from it. Kernels go from OIHW to TF's HWIO.

PyTorch pads a strided convolution and the stem's max pool symmetrically, TF's SAME asymmetrically
(one more row and column at the bottom and right), so the imported network sees its input shifted
by a pixel at every stride-2 layer: the features do not agree exactly (docs/reference.md, "Use
released weights", gives the measured difference).
"""

import argparse
import pickle
import re
from typing import Any, Dict, Optional, Tuple

import numpy as np

from tf_detcon.weights import fpn_state
from tf_detcon.weights import resnet
from tf_detcon.weights import source_files

_BN = {'weight': 'gamma', 'bias': 'beta', 'running_mean': 'mean', 'running_var': 'var'}
_TORCHVISION = re.compile(r'^layer(\d)\.(\d+)\.(conv(\d)|bn(\d)|downsample\.0|downsample\.1)'
                          r'\.(\w+)$')
_DETECTRON2 = re.compile(r'^res(\d)\.(\d+)\.(conv(\d)|shortcut)(\.norm)?\.(\w+)$')
_BACKBONE_LIKE = re.compile(r'^(conv1|bn1|layer\d|stem|res\d)\.')
# The trained encoder of a file holding several: MoCo's/DetCo's query, BYOL-style online.
PREFERRED = ('encoder_q', 'online', 'student', 'query')
# SlotCon and DeCon (on SlotCon) transfer the teacher, `encoder_k` (and `decoder_k`), as their
# authors' conversions to detectron2 do; their files are told by the teacher's grouping slots or
# decoder.
TEACHER_MARKERS = ('grouping_k.', 'decoder_k.')
TEACHER = ('encoder_k',)


def load(path: str) -> Any:
  """The unpickled file, tensors and plain containers only; ValueError in one line otherwise."""
  source_files.check_file(path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("--format=torchvision needs PyTorch: pip install -e '.[import]'") from e
  source_files.check_not_other_format(path, 'torchvision', 'a PyTorch file')
  try:
    # Training files keep their argparse settings beside the weights (PixPro's 'opt', SlotCon's
    # and DeCon's 'args'): a Namespace only holds attributes, so it is admitted too.
    with torch.serialization.safe_globals([argparse.Namespace]):
      return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    reason = ' '.join(str(e).split('\n')[0].split())[:160]
    if 'weights_only' in str(e) or 'Unsupported global' in str(e):
      raise ValueError(f'--input {path!r} holds Python objects besides tensors and plain '
                       f'containers; it is not read, because unpickling them could run code '
                       f'from the file ({reason})') from e
    raise ValueError(f'--input {path!r} is not a PyTorch file or is corrupt ({reason})') from e
  except (RuntimeError, EOFError, OSError, ValueError) as e:
    reason = ' '.join(str(e).split('\n')[0].split())[:160] or type(e).__name__
    raise ValueError(f'--input {path!r} is truncated or corrupt ({reason})') from e


def _numpy(value: Any) -> np.ndarray:
  return value.detach().cpu().float().numpy() if hasattr(value, 'detach') else np.asarray(value)


def _conv(value: np.ndarray) -> np.ndarray:
  return np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value  # OIHW -> HWIO


def _bn(name: str, field: str) -> Tuple[Optional[str], bool]:
  """A BN tensor's layout name (None for its batch counter, which inference does not need)."""
  return (f'{name}/{_BN[field]}' if field in _BN else None), field in _BN or (
      field == 'num_batches_tracked')


def _weight(name: str, field: str) -> Tuple[Optional[str], bool]:
  return (name if field == 'weight' else None), field == 'weight'


def _torchvision_name(key: str) -> Tuple[Optional[str], bool]:
  """(layout name or None, whether the key belongs to the layout)."""
  if key == 'conv1.weight':
    return 'stem/conv', True
  if key.startswith('bn1.'):
    return _bn('stem/bn', key[len('bn1.'):])
  match = _TORCHVISION.match(key)
  if not match:
    return None, False
  group, block, layer, conv, norm, field = match.groups()
  prefix = f'g{int(group) - 1}/b{block}'
  if layer == 'downsample.0' or conv is not None:
    return _weight(f'{prefix}/shortcut' if conv is None else f'{prefix}/conv{conv}', field)
  return _bn(f'{prefix}/shortcut_bn' if norm is None else f'{prefix}/bn{norm}', field)


def _detectron2_name(key: str) -> Tuple[Optional[str], bool]:
  if key.startswith('stem.conv1.'):
    rest = key[len('stem.conv1.'):]
    if rest == 'weight':
      return 'stem/conv', True
    return _bn('stem/bn', rest[len('norm.'):] if rest.startswith('norm.') else '')
  match = _DETECTRON2.match(key)
  if not match:
    return None, False
  group, block, _, conv, norm, field = match.groups()
  prefix = f'g{int(group) - 2}/b{block}'
  if norm is None:
    return _weight(f'{prefix}/shortcut' if conv is None else f'{prefix}/conv{conv}', field)
  return _bn(f'{prefix}/shortcut_bn' if conv is None else f'{prefix}/bn{conv}', field)


def _torch_name(layout: str, scope: str, name: str) -> str:
  """The key a layout name would have in the file, under `scope`."""
  fields = {v: k for k, v in _BN.items()}
  parts = name.split('/')
  d2 = layout == 'detectron2'
  if parts[0] == 'stem':
    if parts[1] == 'conv':
      return scope + ('stem.conv1.weight' if d2 else 'conv1.weight')
    return scope + ('stem.conv1.norm.' if d2 else 'bn1.') + fields[parts[2]]
  group, block, layer = int(parts[0][1:]), parts[1][1:], parts[2]
  stage = f'res{group + 2}.{block}.' if d2 else f'layer{group + 1}.{block}.'
  if layer == 'shortcut':
    return scope + stage + ('shortcut.weight' if d2 else 'downsample.0.weight')
  if layer == 'shortcut_bn':
    return scope + stage + ('shortcut.norm.' if d2 else 'downsample.1.') + fields[parts[3]]
  if layer.startswith('conv'):
    return f'{scope}{stage}{layer}.weight'
  index = layer[2:]
  return scope + stage + (f'conv{index}.norm.' if d2 else f'bn{index}.') + fields[parts[3]]


def _stems(flat: Dict[str, Any]) -> Dict[str, str]:
  """{scope: 'torchvision' | 'detectron2'} for every 7x7 RGB stem convolution in the file."""
  found = {}
  for key, value in flat.items():
    shape = tuple(getattr(value, 'shape', ()))
    if len(shape) != 4 or shape[1] != 3:
      continue
    if key.endswith('stem.conv1.weight'):
      found[key[:-len('stem.conv1.weight')]] = 'detectron2'
    elif key == 'conv1.weight' or key.endswith('.conv1.weight'):
      found[key[:-len('conv1.weight')]] = 'torchvision'
  return found


def read(path: str, scope: str = '') -> source_files.Source:
  """The ResNet of a PyTorch file, in `resnet`'s layout."""
  return from_flat(source_files.flatten(load(path), '.'), path, scope)


def from_flat(flat: Dict[str, Any], path: str, scope: str = '') -> source_files.Source:
  """The ResNet among a file's tensors by dotted name (torchvision or detectron2 names; torch
  tensors or numpy arrays), in `resnet`'s layout."""
  if not flat:
    raise ValueError(f'--input {path!r} holds no tensors')
  stems = _stems(flat)
  if not stems:
    raise ValueError(f'--input {path!r} holds no ResNet in torchvision or detectron2 layout (no '
                     f'"conv1.weight" of 3 input channels among its {len(flat)} tensors, e.g. '
                     f'{source_files.first(flat)})')
  teacher = not scope and any(marker in key for key in flat for marker in TEACHER_MARKERS) and (
      sum(any(word in s for word in TEACHER) for s in stems) == 1)
  chosen = source_files.choose_scope(stems, scope, TEACHER if teacher else PREFERRED)
  rename = _detectron2_name if stems[chosen] == 'detectron2' else _torchvision_name
  decoder = fpn_state.decoder_scope(list(flat), chosen)
  tensors, names, unknown, heads = {}, {}, [], set()
  for key, value in flat.items():
    if not key.startswith(chosen) or fpn_state.is_decoder_key(key, decoder):
      continue
    local = key[len(chosen):]
    name, known = rename(local)
    if name:
      array = _numpy(value)
      tensors[name] = array.reshape(-1) if name.rsplit('/', 1)[-1] in resnet.BN_FIELDS else (
          _conv(array))
      names[name] = key
    elif not known:
      if _BACKBONE_LIKE.match(local):
        unknown.append(key)
      else:
        heads.add(chosen + local.split('.')[0])
  if unknown:
    raise ValueError(f'--input {path!r}: {len(unknown)} tensors of the ResNet at {chosen!r} are '
                     f'not in {stems[chosen]} layout: {source_files.first(unknown)}')
  depth = chosen.count('.')
  others = sorted(heads | {'.'.join(key.split('.')[:max(depth, 1)]) for key in flat
                           if not key.startswith(chosen)
                           and not fpn_state.is_decoder_key(key, decoder)})
  note = (f'{chosen!r}: the teacher, which SlotCon and DeCon transfer (--source_scope chooses '
          'another)' if teacher else '')
  return source_files.Source(tensors, names, chosen, others,
                             expected=lambda name: _torch_name(stems[chosen], chosen, name),
                             decoder=fpn_state.read(flat, decoder, _numpy),
                             decoder_scope=decoder or '', note=note)
