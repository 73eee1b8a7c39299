"""DeepMind's `.npy` releases (DetCon, Hénaff et al. 2021; BYOL): a pickled dict of the haiku
parameters and BN state of their ResNet torso (`hk.nets.ResNet` blocks, DetCon's
`utils/networks.py`), read into `resnet`'s layout.

Haiku names, under the torso's module (e.g. `res_net50/~/`):
  initial_conv/w, initial_batchnorm/{scale,offset}, initial_batchnorm/~/{mean,var}_ema/average
  block_group_<G>/~/block_<B>/~/conv_<i>/w, .../batchnorm_<i>/..., .../shortcut_{conv,batchnorm}
Haiku's convolution kernels are HWIO as TF's, and its SAME padding is TF's, so the imported
network computes the same function (to float tolerance). Parameters and state may sit in one
dict or under separate keys (`params`/`state`, `online_params`/`online_state`); EMA `hidden`
and `counter` are not needed for inference.
"""

import pickle
import re
from typing import Dict, Tuple

import numpy as np

from tf_detcon.weights import resnet
from tf_detcon.weights import source_files

_TORSO = re.compile(r'^(?P<outer>(?:.*/)?)(?P<module>[^/]+)/~/(?P<rest>(?:initial_conv|'
                    r'initial_batchnorm|block_group_\d+|final_batchnorm|logits)(?:/.*)?)$')
_BN = {'scale': 'gamma', 'offset': 'beta', '~/mean_ema/average': 'mean',
       '~/var_ema/average': 'var'}
_BN_IGNORED = ('~/mean_ema/hidden', '~/mean_ema/counter', '~/var_ema/hidden', '~/var_ema/counter')
_LAYER = re.compile(r'^block_group_(\d+)/~/block_(\d+)/~/(conv_(\d)|batchnorm_(\d)|shortcut_conv|'
                    r'shortcut_batchnorm)(?:/(.*))?$')
_NOT_TORSO_WORDS = ('params', 'state')
# What a haiku release's pickled objects may need (the `import` extra installs them).
SOURCE_FRAMEWORKS = ('jax', 'jaxlib', 'haiku')


def load_pickled_dict(path: str, allow_pickle: bool) -> dict:
  """The dict inside a `.npy` file; ValueError in one line for anything else."""
  source_files.check_file(path)
  source_files.check_not_other_format(path, 'haiku', 'a .npy file')
  with open(path, 'rb') as f:
    magic = f.read(len(source_files.NPY_MAGIC))
  if magic != source_files.NPY_MAGIC:
    raise ValueError(f'--input {path!r} is not a .npy file (it does not start with numpy\'s '
                     'magic bytes)')
  try:
    with open(path, 'rb') as f:
      version = np.lib.format.read_magic(f)
      header = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                else np.lib.format.read_array_header_2_0(f))
  except ValueError as e:
    raise ValueError(f'--input {path!r} has a broken .npy header ({e})') from e
  dtype = header[2]
  if dtype.hasobject and not allow_pickle:
    raise ValueError(f'--input {path!r} holds pickled Python objects, and reading a pickle can run '
                     'code from the file: pass --allow_pickle only for a file from a source you '
                     'trust (e.g. the DetCon release)')
  try:
    array = np.load(path, allow_pickle=allow_pickle)
  except ModuleNotFoundError as e:
    missing = (e.name or '').split('.')[0]
    if missing in SOURCE_FRAMEWORKS:
      raise ValueError(f'--input {path!r} holds {missing} objects, and {missing} is not '
                       "installed: pip install -e '.[import]' (jax and haiku)") from e
    raise ValueError(f'--input {path!r} holds objects of module {e.name!r}, which is not '
                     'installed; a haiku release needs only numpy, jax and haiku') from e
  except (ValueError, EOFError, OSError, pickle.UnpicklingError, AttributeError) as e:
    reason = ' '.join(str(e).split())[:160] or type(e).__name__
    raise ValueError(f'--input {path!r} is truncated or corrupt ({reason})') from e
  if not dtype.hasobject:
    raise ValueError(f'--input {path!r} holds one {array.dtype} array of shape '
                     f'{list(array.shape)}, not a dict of haiku parameters')
  value = array.item() if array.shape == () else None
  if not isinstance(value, dict):
    raise ValueError(f'--input {path!r} holds a {type(value).__name__}, not a dict of haiku '
                     'parameters')
  return value


def _torso_id(outer: str, module: str) -> str:
  """The torso a key belongs to, the same for its parameters and its state."""
  words = [w for w in outer.strip('/').split('/') if w]
  for word in _NOT_TORSO_WORDS:
    words = [w.replace(f'_{word}', '').replace(word, '') for w in words]
  return '/'.join([w for w in words if w] + [module])


def _layout_name(rest: str) -> Tuple[str, bool]:
  """(layout name, known): '' for tensors inference does not need."""
  if rest == 'initial_conv/w':
    return 'stem/conv', True
  if rest.startswith('initial_batchnorm/'):
    field = rest[len('initial_batchnorm/'):]
    if field in _BN:
      return f'stem/bn/{_BN[field]}', True
    return '', field in _BN_IGNORED
  if rest.startswith('logits/'):
    return '', True  # the classifier
  match = _LAYER.match(rest)
  if not match:
    return '', False
  group, block, layer, conv, norm, field = match.groups()
  prefix = f'g{group}/b{block}'
  if layer.startswith('conv_') or layer == 'shortcut_conv':
    target = f'{prefix}/conv{int(conv) + 1}' if conv is not None else f'{prefix}/shortcut'
    return (target, True) if field == 'w' else ('', False)
  target = f'{prefix}/bn{int(norm) + 1}' if norm is not None else f'{prefix}/shortcut_bn'
  if field in _BN:
    return f'{target}/{_BN[field]}', True
  return '', field in _BN_IGNORED


def _haiku_name(prefix: str, name: str) -> str:
  """The haiku key a layout name would have under the torso's `prefix` (e.g. 'res_net50/~/')."""
  fields = {v: k for k, v in _BN.items()}
  parts = name.split('/')
  if parts[0] == 'stem':
    return prefix + ('initial_conv/w' if parts[1] == 'conv' else
                     f'initial_batchnorm/{fields[parts[2]]}')
  block = f'block_group_{parts[0][1:]}/~/block_{parts[1][1:]}/~/'
  layer = parts[2]
  if layer == 'shortcut':
    return f'{prefix}{block}shortcut_conv/w'
  if layer == 'shortcut_bn':
    return f'{prefix}{block}shortcut_batchnorm/{fields[parts[3]]}'
  if layer.startswith('conv'):
    return f'{prefix}{block}conv_{int(layer[4:]) - 1}/w'
  return f'{prefix}{block}batchnorm_{int(layer[2:]) - 1}/{fields[parts[3]]}'


def read(path: str, allow_pickle: bool = False, scope: str = '') -> source_files.Source:
  """The ResNet torso of a DeepMind `.npy` release, in `resnet`'s layout."""
  flat = source_files.flatten(load_pickled_dict(path, allow_pickle), '/')
  torsos: Dict[str, list] = {}
  for key in flat:
    match = _TORSO.match(key)
    if match:
      torsos.setdefault(_torso_id(match['outer'], match['module']), []).append(key)
  with_stem = [t for t, keys in torsos.items() if any(k.endswith('initial_conv/w') for k in keys)]
  if not with_stem:
    raise ValueError(f'--input {path!r} holds no haiku ResNet (no "<module>/~/initial_conv/w" '
                     f'among its {len(flat)} tensors, e.g. {source_files.first(flat)})')
  torso = source_files.choose_scope(with_stem, scope, preferred=('online',))
  tensors, names, unknown = {}, {}, []
  for key in torsos[torso]:
    rest = _TORSO.match(key)['rest']
    if rest.startswith('final_batchnorm'):
      raise ValueError(f'--input {path!r} holds a ResNet v2 ({key}); Model Garden\'s ResNet is v1')
    name, known = _layout_name(rest)
    if name:
      value = np.asarray(flat[key], np.float32)
      tensors[name] = value.reshape(-1) if name.rsplit('/', 1)[-1] in resnet.BN_FIELDS else value
      names[name] = key
    elif not known:
      unknown.append(key)
  if unknown:
    raise ValueError(f'--input {path!r}: {len(unknown)} tensors of the ResNet {torso!r} are not '
                     f'in haiku\'s ResNet layout: {", ".join(sorted(unknown)[:3])}')
  inside = set(torsos[torso])
  others = sorted({key.split('/~/')[0] for key in flat if key not in inside})
  prefix = names['stem/conv'][:-len('initial_conv/w')] if 'stem/conv' in names else ''
  return source_files.Source(tensors, names, torso, others,
                        expected=lambda name: _haiku_name(prefix, name))
