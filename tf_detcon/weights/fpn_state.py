"""A detectron2 FPN's tensors (DeCon's pretrained decoder) into Model Garden's FPN.

DeCon's decoder is detectron2's `FPN` (Quetin et al. 2025, §3; their `FPNDecoder`), saved beside
its encoder as `decoder_k.` / `decoder_q.` (on SlotCon) or `decoder.` (on DenseCL). Per level L:
  fpn_lateralL   1×1 convolution, with a bias, or without one and followed by `.norm` (BN);
  fpn_outputL    3×3 convolution, the same; DeCon keeps only the finest level's
                 (`only_keep_last_output_conv`), the others are not in the file.
Model Garden's FPN has, per level, `lateral_L` (1×1 with a bias), `post_hoc_L` (3×3 with a
bias) and `norm_L` (BN after post_hoc_L). In inference mode the mapping is exact:
  - a lateral's BN is folded into its convolution: kernel·s and bias β − μ·s, s = γ / √(σ² + ε);
  - an output convolution goes to post_hoc_L (its bias, or 0 under a norm) and its BN to norm_L;
    without a BN, norm_L is the identity (γ 1, β 0, μ 0, σ² 1 − ε).
Both top-down paths add each lateral to the coarser level upsampled 2× by nearest neighbour.
"""

import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tf_keras

_KEY = re.compile(r'^fpn_(lateral|output)(\d)\.(weight|bias|norm\.(weight|bias|running_mean|'
                  r'running_var|num_batches_tracked))$')
# Where a file keeps the decoder of the encoder it holds at `scope`.
_DECODER_OF = (('encoder', 'decoder'), ('backbone', 'decoder'))


def decoder_scope(keys: List[str], encoder_scope: str) -> Optional[str]:
  """The scope of the detectron2 FPN beside the encoder at `encoder_scope`: its twin named
  'decoder' (`encoder_k.` → `decoder_k.`, `backbone.` → `decoder.`), or the encoder's own scope
  in a detectron2 conversion that holds both (`fpn_lateral2.weight` beside `stem.conv1.weight`);
  None if there is none."""
  scopes = [encoder_scope.replace(old, new) for old, new in _DECODER_OF if old in encoder_scope]
  for scope in scopes + [encoder_scope]:
    if any(is_decoder_key(k, scope) for k in keys):
      return scope
  return None


def is_decoder_key(key: str, scope: Optional[str]) -> bool:
  return scope is not None and key.startswith(scope) and bool(_KEY.match(key[len(scope):]))


def read(flat: Dict[str, Any], scope: Optional[str], to_numpy) -> Dict[str, np.ndarray]:
  """{local name: array} of the FPN at `scope` (e.g. 'fpn_lateral2.norm.weight'); {} for None."""
  return {key[len(scope):]: to_numpy(value) for key, value in flat.items()
          if is_decoder_key(key, scope) and not key.endswith('num_batches_tracked')}


def levels(tensors: Dict[str, np.ndarray]) -> List[int]:
  """The levels that have a lateral convolution."""
  return sorted({int(_KEY.match(k).group(2)) for k in tensors if k.startswith('fpn_lateral')})


def num_filters(tensors: Dict[str, np.ndarray]) -> int:
  return int(tensors[f'fpn_lateral{levels(tensors)[-1]}.weight'].shape[0])


def _kernel(value: np.ndarray) -> np.ndarray:
  return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO


def _bn(tensors: Dict[str, np.ndarray], name: str) -> Tuple[np.ndarray, ...]:
  return tuple(tensors[f'{name}.norm.{field}']
               for field in ('weight', 'bias', 'running_mean', 'running_var'))


def _layer(fpn: tf_keras.Model, name: str) -> tf_keras.layers.Layer:
  try:
    return fpn.get_layer(name)
  except ValueError as e:
    raise ValueError(f'the file\'s FPN has {name}, which the Model Garden FPN built for it '
                     'lacks') from e


def assign(fpn: tf_keras.Model, tensors: Dict[str, np.ndarray], epsilon: float) -> List[str]:
  """Sets `fpn`'s layers from the detectron2 FPN `tensors` (BN ε `epsilon`); returns the names
  of the layers set from the file (the others keep their initialisation)."""
  assigned = []
  for level in levels(tensors):
    name = f'fpn_lateral{level}'
    kernel = _kernel(tensors[f'{name}.weight'])
    if f'{name}.norm.weight' in tensors:
      gamma, beta, mean, var = _bn(tensors, name)
      scale = gamma / np.sqrt(var + epsilon)
      kernel, bias = kernel * scale, beta - mean * scale
    else:
      bias = tensors.get(f'{name}.bias', np.zeros(kernel.shape[-1], np.float32))
    _layer(fpn, f'lateral_{level}').set_weights([kernel, bias])
    assigned.append(f'lateral_{level}')
    name = f'fpn_output{level}'
    if f'{name}.weight' not in tensors:
      continue
    kernel = _kernel(tensors[f'{name}.weight'])
    width = kernel.shape[-1]
    bias = tensors.get(f'{name}.bias', np.zeros(width, np.float32))
    _layer(fpn, f'post_hoc_{level}').set_weights([kernel, bias])
    if f'{name}.norm.weight' in tensors:
      norm = list(_bn(tensors, name))
    else:
      norm = [np.ones(width), np.zeros(width), np.zeros(width), np.full(width, 1.0 - epsilon)]
    _layer(fpn, f'norm_{level}').set_weights([np.asarray(v, np.float32) for v in norm])
    assigned += [f'post_hoc_{level}', f'norm_{level}']
  return sorted(assigned)
