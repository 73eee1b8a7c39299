"""The building blocks of config checks: one-line `ConfigError`s that name the setting.

`configs/validation.py` runs every check in one pass before anything is built; method configs
carry their own checks (`check(task, path)`) beside their fields, so a new method brings its
checks with its config.
"""

import dataclasses
from typing import Any, Iterable, Optional, Sequence

# Feature levels of Model Garden's ResNets ('2'..'5', strides 4..32); other backbones are not
# checked.
RESNET_LEVELS = ('2', '3', '4', '5')


class ConfigError(ValueError):
  """A setting that cannot work, in one line naming it."""


def require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def one_of(value: Any, allowed: Iterable[Any], path: str) -> None:
  allowed = tuple(allowed)
  require(value in allowed,
          f'{path} must be one of {", ".join(repr(a) for a in allowed)}, got {value!r}')


def probability(value: float, path: str) -> None:
  require(0.0 <= value <= 1.0, f'{path} must be in [0, 1], got {value}')


def positive(value: float, path: str) -> None:
  require(value > 0, f'{path} must be > 0, got {value}')


def encoder_levels(task: Any) -> Optional[Sequence[str]]:
  """The feature levels of the task's encoder, when known."""
  if task.encoder.backbone.type in ('resnet', 'dilated_resnet'):
    return RESNET_LEVELS
  return None


def one_of_config(config: Any, path: str) -> Any:
  """The chosen block of a Model Garden `OneOfConfig`, after checking that `type` names one of
  its blocks and that no other block is set (it would be accepted and ignored)."""
  names = [f.name for f in dataclasses.fields(config) if f.name != 'type']
  one_of(config.type, names, f'{path}.type')
  for name in names:
    block = getattr(config, name)
    if name != config.type and block.as_dict() != type(block)().as_dict():
      raise ConfigError(f'{path}.{name} is set but {path}.type is {config.type!r}: remove it')
  return config.get()
