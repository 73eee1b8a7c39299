"""Checks docs/paper_settings.md row by row against the registered experiments and our YAMLs.

A changed default, or a new experiment that contradicts a paper, fails here.
"""

import fnmatch
import functools
import importlib
import math
import os
import re
from typing import Any, Dict, List, NamedTuple

import pytest
import yaml

from official.core import exp_factory
from official.modeling import hyperparams
from official.vision import registry_imports  # pylint: disable=unused-import
from tests.conftest import REPO_ROOT
from tf_detcon.finetuning import segmentation  # pylint: disable=unused-import
from tf_detcon.configs import experiments  # pylint: disable=unused-import
from tf_detcon.configs import pretrain

TABLE = os.path.join(REPO_ROOT, 'docs', 'paper_settings.md')
CONFIGS = os.path.join(REPO_ROOT, 'official_configs')


class Row(NamedTuple):
  setting: str
  source: str
  experiments: List[str]
  field: str
  value: Any


def _cells(line: str) -> List[str]:
  """The cells of a markdown table line; '\\|' is a literal bar inside a cell."""
  cells = re.split(r'(?<!\\)\|', line.strip())[1:-1]
  return [c.strip().replace('\\|', '|') for c in cells]


def read_rows() -> List[Row]:
  rows = []
  with open(TABLE, encoding='utf-8') as f:
    for line in f:
      if not line.startswith('|') or line.startswith('| Setting') or line.startswith('| ---'):
        continue
      setting, source, _, experiments, field, value = _cells(line)
      assert value.startswith('`') and value.endswith('`'), line
      rows.append(Row(setting, source, experiments.split(), field, yaml.safe_load(value[1:-1])))
  return rows


ROWS = read_rows()


def _registered() -> List[str]:
  return sorted(exp_factory._REGISTERED_CONFIGS)  # pylint: disable=protected-access


def _pretraining() -> List[str]:
  return [n for n in _registered()
          if isinstance(exp_factory.get_exp_config(n), pretrain.PretrainExperiment)]


def expand(pattern: str) -> List[str]:
  """Registered names matching a pattern (tiny miniatures only for a pattern that names them)."""
  if pattern.startswith('py:') or '+' in pattern:
    return [pattern]
  names = [n for n in fnmatch.filter(_registered(), pattern)
           if 'tiny' in pattern or not n.endswith('_tiny')]
  assert names, f'{pattern!r} matches no registered experiment'
  return names


@functools.lru_cache(maxsize=None)
def config_of(source: str):
  if source.startswith('py:'):
    return importlib.import_module(source[3:])
  if '+' in source:
    name, path = source.split('+')
    return hyperparams.override_params_dict(exp_factory.get_exp_config(name),
                                            os.path.join(CONFIGS, path), is_strict=True)
  return exp_factory.get_exp_config(source)


def _plain(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def same(actual: Any, expected: Any) -> bool:
  actual, expected = _plain(actual), _plain(expected)
  if isinstance(expected, list):
    return (isinstance(actual, list) and len(actual) == len(expected) and
            all(same(a, e) for a, e in zip(actual, expected)))
  if isinstance(expected, float) and not isinstance(actual, bool):
    return isinstance(actual, (int, float)) and math.isclose(actual, expected, rel_tol=1e-12)
  return actual == expected and type(actual) is type(expected)


def resolve(config: Any, field: str) -> Any:
  """The value at a dotted path; `task.method.<m>` of a DeCon experiment is its base's."""
  parts = field.split('.')
  if (parts[:2] == ['task', 'method'] and parts[2] not in ('type', 'decon') and
      isinstance(config, pretrain.PretrainExperiment) and config.task.method.type == 'decon'):
    parts = ['task', 'method', 'decon', 'base'] + parts[2:]
  return functools.reduce(getattr, parts, config)


@pytest.mark.parametrize('row', ROWS, ids=[f'{r.setting} [{r.field}]' for r in ROWS])
def test_row_holds_for_every_matching_experiment(row):
  checked = 0
  for pattern in row.experiments:
    for name in expand(pattern):
      value = resolve(config_of(name), row.field)
      assert same(value, row.value), f'{name}: {row.field} is {value!r}, the paper says ' \
                                     f'{row.value!r} ({row.source})'
      checked += 1
  assert checked


def test_every_row_cites_a_paper_section_or_says_ours():
  for row in ROWS:
    assert re.search(r'(DetCon|DetCo|DeCon|BYOL|SimCLR|MoCo|ImageNet|COCO)|\*\*ours\*\*',
                     row.source), row


def test_every_pretraining_experiment_is_held_to_the_papers():
  """Each registered full-size experiment matches rows of every part of its recipe."""
  counts: Dict[str, int] = {}
  for row in ROWS:
    for pattern in row.experiments:
      for name in expand(pattern):
        counts[name] = counts.get(name, 0) + 1
  for name in _pretraining():
    if name.endswith('_tiny'):
      continue
    assert counts.get(name, 0) >= 20, f'{name} is checked by only {counts.get(name, 0)} rows'
