"""Tests for tf_detcon.configs.fields: no inherited Model Garden field is accepted and ignored."""

import dataclasses
import os
import re
import subprocess
import sys
import typing

import pytest

from official.modeling import hyperparams
from tests.conftest import REPO_ROOT, tiny_params
from tf_detcon.configs import fields
from tf_detcon.configs import pretrain
from tf_detcon.configs import validation
from tf_detcon.training import distribute

TESTS = os.path.join(REPO_ROOT, 'tests')


def _owner(path: str):
  parent, name = path.rsplit('.', 1)
  owner = pretrain.PretrainExperiment()
  for part in parent.split('.'):
    owner = getattr(owner, part)
  return owner, name


def _non_default(path: str):
  """A value of the field's declared type that differs from its default."""
  owner, name = _owner(path)
  default = getattr(owner, name)
  kind = typing.get_type_hints(type(owner))[name]
  options = [a for a in getattr(kind, '__args__', (kind,)) if a is not type(None)]
  kind = options[0]
  if isinstance(kind, type) and issubclass(kind, hyperparams.Config):
    return kind()
  if kind is bool:
    return not default if default is not None else True
  if kind is int:
    return default + 1
  if kind is str:
    return 'lower' if default == 'higher' else (default or '') + 'x'
  raise AssertionError(f'no sample value for {path}: {kind}')


def test_every_inherited_field_is_supported_refused_or_ours():
  paths = [path for path, _ in fields.leaves(pretrain.PretrainExperiment())]
  assert len(paths) > 100
  assert not set(fields.SUPPORTED) & set(fields.REFUSED)
  unclassified = [p for p in paths if p not in fields.SUPPORTED and p not in fields.REFUSED
                  and not any(p == o or p.startswith(o + '.') for o in fields.OURS)]
  assert not unclassified, unclassified
  stale = (set(fields.SUPPORTED) | set(fields.REFUSED)) - set(paths)
  assert not stale, stale
  for module in fields.OURS.values():
    assert os.path.exists(os.path.join(REPO_ROOT, module)), module


def test_each_supported_field_names_a_test_that_exists():
  for path, test in fields.SUPPORTED.items():
    module, name = test.split('::')
    with open(os.path.join(TESTS, module)) as f:
      assert re.search(rf'^def {name}\(', f.read(), re.M), f'{path}: {test} does not exist'


@pytest.mark.parametrize('path', sorted(fields.REFUSED))
def test_each_refused_field_is_a_one_line_error_naming_it(path):
  params = pretrain.PretrainExperiment()
  owner, name = _owner(path)
  del owner
  value = _non_default(path)
  parent = params
  for part in path.split('.')[:-1]:
    parent = getattr(parent, part)
  setattr(parent, name, value)
  with pytest.raises(validation.ConfigError) as error:
    validation.validate(params)
  message = str(error.value)
  assert message.startswith(path + ' is not supported') and '\n' not in message


def test_runtime_settings_that_cannot_apply_here_are_refused():
  params = tiny_params('simclr_tiny')
  params.runtime.tpu = 'local'
  with pytest.raises(validation.ConfigError, match="runtime.tpu is 'local' but runtime."
                     "distribution_strategy is 'mirrored'"):
    validation.validate(params)
  runtime = pretrain.PretrainExperiment().runtime
  runtime.num_gpus = 2
  with pytest.raises(ValueError, match='runtime.num_gpus is 2 but this machine has 0 GPUs'):
    distribute.build_strategy(runtime)
  runtime = pretrain.PretrainExperiment().runtime
  runtime.distribution_strategy = 'tpu'
  with pytest.raises(ValueError, match='needs --tpu'):
    distribute.build_strategy(runtime)


def test_cross_device_settings_reach_the_strategy():
  """all_reduce_alg and num_packs build the Mirrored strategy's cross-device ops (in a fresh
  process: one strategy instance per process)."""
  script = (
      'from tf_detcon.configs import pretrain\n'
      'from tf_detcon.training import distribute\n'
      'runtime = pretrain.PretrainExperiment().runtime\n'
      "runtime.override({'all_reduce_alg': 'hierarchical_copy', 'num_packs': 3})\n"
      'ops = distribute.build_strategy(runtime).extended._cross_device_ops\n'
      'print(type(ops).__name__, ops._num_packs)\n')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split()[-2:] == ['HierarchicalCopyAllReduce', '3']


def test_leaves_treat_model_gardens_optimizer_config_as_one_field():
  paths = dict(fields.leaves(pretrain.PretrainExperiment()))
  assert 'trainer.optimizer_config' in paths
  assert not any(p.startswith('trainer.optimizer_config.') for p in paths)
  assert dataclasses.is_dataclass(paths['trainer.optimizer_config'])


def test_reference_lists_the_fields_as_they_are():
  with open(os.path.join(REPO_ROOT, 'docs', 'reference.md')) as f:
    readme = f.read()
  listed = readme.split('<!-- fields:begin -->\n')[1].split('\n<!-- fields:end -->')[0]
  assert listed == fields.markdown(), 'regenerate: python -m tf_detcon.configs.fields'
