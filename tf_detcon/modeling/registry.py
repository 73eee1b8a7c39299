"""The method registry: `task.method.type` → the builder of the model that implements it.

Methods register a builder, as Model Garden registers its backbone builders
(`factory.register_backbone_builder`):

  @registry.register_method('detcon')
  def build_detcon(cfg: DetConConfig, context: registry.BuildContext) -> DetConModel: ...

A builder reads its method's config block and the `BuildContext`, builds the parts (encoder,
target encoder, objective) and hands them, with plain values, to its model. A method that wraps
another (DeCon) builds its base with `build` and receives it built. `build_model`, what the
trainer calls, adds the train step's input preparation and coupled L2 from the task.

`tf_detcon/registry_imports.py` imports every method's module (the launchers and the trainer
import it), as Model Garden's `registry_imports.py` does.
"""

import dataclasses
from typing import Callable, Dict

from official.core import registry

from tf_detcon.configs import data as data_config
from tf_detcon.configs import methods as methods_config
from tf_detcon.configs import pretrain as pretrain_config
from tf_detcon.modeling import base


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """What a builder may read besides its own block.

  encoder:     the encoder's config (Model Garden's backbone and its norm_activation);
  train_data:  the training data's config, for what each example holds;
  total_steps: the schedule length, for step-dependent settings (the EMA's τ).
  """
  encoder: pretrain_config.EncoderConfig
  train_data: data_config.DataConfig
  total_steps: int


Builder = Callable[[methods_config.MethodBlock, BuildContext], base.PretrainModel]
_METHODS: Dict[str, Builder] = {}


def register_method(name: str) -> Callable[[Builder], Builder]:
  """Decorator: registers `builder(cfg, context) -> PretrainModel` as method `name`."""
  return registry.register(_METHODS, name)


def lookup(name: str) -> Builder:
  if name not in _METHODS:
    raise ValueError(f'no model is registered for task.method.type {name!r}; known: '
                     f'{", ".join(sorted(_METHODS))} (tf_detcon/registry_imports.py imports '
                     'the methods\' modules)')
  return _METHODS[name]


def build(method: methods_config.BaseMethodConfig, context: BuildContext) -> base.PretrainModel:
  """The model of the one-of `method` (its chosen block), built by its registered builder."""
  return lookup(method.type)(method.get(), context)


def build_model(task: pretrain_config.PretrainTask, total_steps: int) -> base.PretrainModel:
  """The model the trainer trains (build it under the strategy's scope): the method's model,
  with the train step's input preparation (colour, seeds) and MoCo's coupled L2 from the task."""
  model = build(task.method, BuildContext(task.encoder, task.train_data, total_steps))
  model.set_training(base.InputPreparation(task.train_data, task.method.get().view_recipe()),
                     task.losses.l2_weight_decay)
  return model
