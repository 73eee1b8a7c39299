"""What every reader hands to the importer: the tensors in `resnet`'s layout (its names, TF's
axis order), and where in the file they came from."""

import dataclasses
import hashlib
import os
import zipfile
from typing import Any, Callable, Dict, Iterable, List, Mapping

import numpy as np

Tensors = Dict[str, np.ndarray]


@dataclasses.dataclass
class Source:
  tensors: Tensors  # `resnet`'s layout name -> value in TF's axis order
  names: Dict[str, str]  # layout name -> the file's own name, for messages
  scope: str  # the part of the file that held the ResNet, e.g. 'module.encoder_q.'
  skipped: List[str]  # the file's other top-level entries, not imported (heads, targets, ...)
  # layout name -> the name the file would give it, for tensors it lacks
  expected: Callable[[str], str] = lambda name: name
  epsilon: float = 1e-5  # the source's BN epsilon (both sources use 1e-5)
  # A detectron2 FPN beside the ResNet (DeCon's decoder): its local names -> OIHW arrays.
  decoder: Tensors = dataclasses.field(default_factory=dict)
  decoder_scope: str = ''
  note: str = ''  # why this ResNet of several was taken, when a rule chose it


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def check_file(path: str, flag: str = '--input') -> None:
  if not os.path.exists(path):
    raise ValueError(f'{flag} {path!r} does not exist')
  if os.path.isdir(path):
    raise ValueError(f'{flag} {path!r} is a directory; give the weights file')
  if os.path.getsize(path) == 0:
    raise ValueError(f'{flag} {path!r} is empty')


NPY_MAGIC = b'\x93NUMPY'


def check_not_other_format(path: str, fmt: str, described: str) -> None:
  """One line naming the right --format when the file at `path` is plainly another format's:
  a .npy (haiku) or a zip archive (PyTorch's own files); `described` says what `fmt` reads."""
  with open(path, 'rb') as f:
    is_npy = f.read(len(NPY_MAGIC)) == NPY_MAGIC
  if fmt != 'haiku' and is_npy:
    raise ValueError(f'--input {path!r} is a .npy file, not {described}: use --format=haiku')
  if fmt != 'torchvision' and zipfile.is_zipfile(path):
    raise ValueError(f'--input {path!r} is a zip archive (a PyTorch file?), not {described}: '
                     'use --format=torchvision')


def flatten(tree: Any, separator: str, prefix: str = '',
            leaf: Callable[[Any], bool] = lambda x: hasattr(x, 'shape')) -> Dict[str, Any]:
  """Nested mappings (and named tuples) -> {'a<sep>b<sep>c': leaf}."""
  if hasattr(tree, '_asdict'):
    tree = tree._asdict()
  if isinstance(tree, Mapping):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, separator, f'{prefix}{key}{separator}', leaf))
    return out
  return {prefix[:-len(separator)]: tree} if leaf(tree) and prefix else {}


def choose_scope(candidates: Iterable[str], given: str, preferred: Iterable[str],
                 flag: str = '--source_scope') -> str:
  """The one ResNet to import when a file holds several (MoCo's query and key encoders, BYOL's
  online and target networks): the one named by `given`, else the single one whose name has a
  preferred word (the trained encoder), else the single one with a momentum twin named as it
  plus '_k', else ValueError naming them."""
  candidates = sorted(set(candidates))
  if given:
    candidates = [c for c in candidates if given in c]
    if not candidates:
      raise ValueError(f'{flag}={given!r} matches none of the file\'s ResNets')
  if len(candidates) == 1:
    return candidates[0]
  liked = [c for c in candidates if any(word in c for word in preferred)]
  if len(liked) == 1:
    return liked[0]
  # A momentum twin is named as the trained encoder plus '_k' (PixPro's encoder / encoder_k).
  trained = [c for c in candidates if f'{c.rstrip(".")}_k.' in candidates]
  if len(trained) == 1:
    return trained[0]
  raise ValueError(f'the file holds {len(candidates)} ResNets ({", ".join(map(repr, candidates))})'
                   f': choose one with {flag}')


def first(names: Iterable[str], count: int = 3) -> str:
  """The first `count` names, sorted, and how many more."""
  names = sorted(names)
  more = f' and {len(names) - count} more' if len(names) > count else ''
  return (', '.join(names[:count]) + more) or 'none'
