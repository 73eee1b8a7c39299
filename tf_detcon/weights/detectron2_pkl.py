"""detectron2's `.pkl` weight files: a Python pickle of `{'model': {name: numpy array}, ...}`,
the format in which MoCo's `convert-pretrain-to-detectron2.py` publishes an encoder for
detectron2, and in which DetCo (Xie et al. 2021) released its ResNet-50s.

Names are detectron2's (`stem.conv1(.norm)`, `res<K>.<J>.conv<I>(.norm)`, `.shortcut(.norm)`),
mapped as `torch_state` maps them. A pickle can run code when it is read, so the file is read
only with `--allow_pickle`, and then by an unpickler that admits numpy's arrays and dtypes and
nothing else: a file that names any other Python object is refused before it is built.
"""

import pickle
from typing import Any

from tf_detcon.weights import source_files
from tf_detcon.weights import torch_state

# The globals a pickle of numpy arrays needs (numpy 1 and 2 name its core module differently).
_ALLOWED = {(module, name)
            for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
            for name in ('_reconstruct', 'scalar')} | {
                ('numpy', 'ndarray'), ('numpy', 'dtype'), ('collections', 'OrderedDict')}


class _ArraysOnly(pickle.Unpickler):
  """Unpickles containers, numbers, strings and numpy arrays; refuses every other global."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f'it names {module}.{name}')


def load(path: str, allow_pickle: bool) -> Any:
  """The unpickled file, numpy arrays and plain containers only; ValueError in one line
  otherwise."""
  source_files.check_file(path)
  if not allow_pickle:
    raise ValueError(f'--input {path!r} is a pickle (--format=detectron2), and reading a pickle '
                     'can run code from the file: pass --allow_pickle only for a file from a '
                     'source you trust (e.g. the DetCo release); it is then read admitting numpy '
                     'arrays only')
  source_files.check_not_other_format(path, 'detectron2', 'a detectron2 .pkl')
  with open(path, 'rb') as f:
    try:
      return _ArraysOnly(f, encoding='latin1').load()
    except pickle.UnpicklingError as e:
      reason = ' '.join(str(e).split())[:160]
      if reason.startswith('it names '):
        raise ValueError(f'--input {path!r} holds Python objects besides numpy arrays and plain '
                         f'containers ({reason}); it is not read, because building them could '
                         'run code from the file') from e
      raise ValueError(f'--input {path!r} is not a pickle, or is truncated or corrupt '
                       f'({reason})') from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
      reason = ' '.join(str(e).split())[:160] or type(e).__name__
      raise ValueError(f'--input {path!r} is truncated or corrupt ({reason})') from e


def read(path: str, allow_pickle: bool = False, scope: str = '') -> source_files.Source:
  """The ResNet of a detectron2 `.pkl`, in `resnet`'s layout."""
  content = load(path, allow_pickle)
  if isinstance(content, dict) and isinstance(content.get('model'), dict):
    content = content['model']
  if not isinstance(content, dict):
    raise ValueError(f'--input {path!r} holds a {type(content).__name__}, not a dict of '
                     'weights')
  return torch_state.from_flat(source_files.flatten(content, '.'), path, scope)
