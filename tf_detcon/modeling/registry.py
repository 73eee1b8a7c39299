"""The method registry: `task.method.type` → the model class that implements it.

Methods register themselves with a decorator, as Model Garden's backbones and tasks do:

  @registry.register_method('detcon')
  class DetConModel(base.PretrainModel): ...

`tf_detcon/registry_imports.py` imports every method's module (the launchers and the trainer
import it), as Model Garden's `registry_imports.py` does.
"""

from typing import Callable, Dict, Type

from official.core import registry

from tf_detcon.configs import pretrain as pretrain_config
from tf_detcon.modeling import base

_METHODS: Dict[str, Type[base.PretrainModel]] = {}


def register_method(name: str) -> Callable[[Type[base.PretrainModel]], Type[base.PretrainModel]]:
  """Class decorator: registers a `PretrainModel` subclass as method `name`."""
  return registry.register(_METHODS, name)


def lookup(name: str) -> Type[base.PretrainModel]:
  if name not in _METHODS:
    raise ValueError(f'no model is registered for task.method.type {name!r}; known: '
                     f'{", ".join(sorted(_METHODS))} (tf_detcon/registry_imports.py imports '
                     'the methods\' modules)')
  return _METHODS[name]


def build_model(task: pretrain_config.PretrainTask, total_steps: int) -> base.PretrainModel:
  """The model of `task.method.type` (build it under the strategy's scope)."""
  return lookup(task.method.type)(task, total_steps)
