"""Tests for tf_detcon.modeling.registry and the method contract of modeling.base: a toy method
registers itself and trains through the unchanged trainer; a method that breaks the contract
fails at construction, naming what is missing."""

import dataclasses
import json
import os
import re
import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.core import exp_factory
from tests.conftest import REPO_ROOT
from tests.conftest import tiny_params
from tf_detcon import registry_imports
from tf_detcon.modeling import losses
from tf_detcon.configs import checks
from tf_detcon.configs import experiments
from tf_detcon.configs import methods
from tf_detcon.configs import pretrain
from tf_detcon.configs import validation
from tf_detcon.modeling import base
from tf_detcon.modeling import registry
from tf_detcon.modeling.blocks import encoders
from tf_detcon.training import trainer


# The toy method, word for word as docs/architecture.md shows it ("How to add a method").
MethodBlock = methods.MethodBlock


# ---------------------------------------------------------------- the toy method's config ...
@dataclasses.dataclass
class ToyConfig(MethodBlock):
  """Global average pool → one linear layer → SimCLR's NT-Xent."""
  dim: int = 16
  temperature: float = 0.5

  def check(self, task, path):
    del task
    checks.positive(self.temperature, f'{path}.temperature')

  def tiny(self, task):
    del task
    self.dim = min(self.dim, 8)


@dataclasses.dataclass
class ToyMethodConfig(methods.MethodConfig):
  toy: ToyConfig = dataclasses.field(default_factory=ToyConfig)


# ------------------------------------------------------------------ ... and its module
class ToyObjective(base.Objective):
  """A linear head on the pooled res5 features; NT-Xent on one latent per view."""

  def __init__(self, channels, dim, temperature, **kwargs):
    super().__init__(**kwargs)
    self.temperature = temperature
    self.head = tf_keras.layers.Dense(dim, name='head')
    self.head.build((None, channels))

  def call(self, encoded, inputs, training=True):
    z1, z2 = (self.head(tf.reduce_mean(f['5'], axis=[1, 2]))[:, None]
              for f in encoded.online.views)
    ids = tf.zeros(tf.shape(z1)[:2], tf.int32)  # one global latent per view: SimCLR
    loss, stats = losses.detcon_loss_with_stats(z1, z2, z1, z2, ids, ids, ids, ids,
                                                temperature=self.temperature)
    return base.ObjectiveOutput(loss, stats)


class ToyModel(base.PretrainModel):

  def __init__(self, encoder, objective, **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.objective = objective

  def features(self, inputs, training):
    return base.Encoded(online=base.Branch(
        views=[self.encoder(v, training=training) for v in inputs.views]))


@registry.register_method('toy')
def build_toy(cfg, context):
  encoder = encoders.build_backbone(context.encoder)
  objective = ToyObjective(encoders.level_channels(encoder)['5'], cfg.dim, cfg.temperature)
  return ToyModel(encoder, objective)


def toy_experiment():
  params = experiments.simclr_imagenet_1000ep()
  params.task.method = ToyMethodConfig(type='toy')
  return params


def toy_params(**trainer_overrides):
  params = tiny_params('simclr_tiny', **trainer_overrides)
  params.task.method = ToyMethodConfig(type='toy')
  return params


def test_a_new_method_registers_itself_and_trains_without_touching_the_trainer(
    tmp_path, embedded_files):
  del embedded_files
  params = toy_params(train_steps=2, steps_per_loop=1)
  run = trainer.Run(params, str(tmp_path / 'toy'))
  assert isinstance(run.model, ToyModel)
  before = [v.numpy().copy() for v in run.model.encoder.trainable_variables]
  run.train()
  assert run.step == 2
  assert any(not np.array_equal(b, v.numpy())
             for b, v in zip(before, run.model.encoder.trainable_variables))
  export = run.export()
  with open(os.path.join(export, 'metadata.json')) as f:
    metadata = json.load(f)
  assert metadata['method'] == 'toy' and metadata['init_checkpoint_modules'] == ['backbone']
  assert metadata['config']['task']['method'] == {'type': 'toy',
                                                  'toy': {'dim': 16, 'temperature': 0.5}}


def test_a_new_methods_own_checks_run_in_the_validation_pass():
  params = toy_params()
  params.task.method.toy.temperature = -1.0
  with pytest.raises(validation.ConfigError,
                     match=r'^task.method.toy.temperature must be > 0, got -1.0$'):
    validation.validate(params)


def test_the_miniature_and_the_replica_checks_are_the_methods_own():
  """`experiments.tiny` and `validation.validate_replicas` ask the method's block, so a new
  method needs no branch in either; `inner()` is the method itself unless it wraps one."""
  params = toy_experiment()
  params.task.method.toy.dim = 64
  experiments.tiny(params)
  assert params.task.method.toy.dim == 8 and params.trainer.train_steps == 20
  validation.validate_replicas(params, 2)
  assert params.task.method.inner() is params.task.method
  decon = exp_factory.get_exp_config('decon_sl_detco_tiny').task.method
  assert decon.inner() is decon.decon.base and decon.inner().type == 'detco'


def test_registered_methods_and_an_unknown_one():
  assert {'detcon', 'detco', 'decon'} <= set(registry._METHODS)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="no model is registered for task.method.type 'swav'"):
    registry.lookup('swav')


def _toy_encoder():
  return encoders.build_backbone(toy_params().task.encoder)


class NoEncoder(base.PretrainModel):

  def __init__(self):
    super().__init__()
    self.objective = ToyObjective(8, 16, 0.5)

  def features(self, inputs, training):
    raise NotImplementedError


class NoFeatures(base.PretrainModel):

  def __init__(self):
    super().__init__()
    self.encoder = _toy_encoder()
    self.objective = ToyObjective(128, 16, 0.5)


class TargetWithoutDecay(ToyModel):

  def __init__(self):
    encoder = _toy_encoder()
    super().__init__(encoder, ToyObjective(encoders.level_channels(encoder)['5'], 16, 0.5))
    self.target_encoder = _toy_encoder()


@pytest.mark.parametrize('cls,message', [
    (NoEncoder, 'NoEncoder must set self.encoder'),
    (NoFeatures, "Can't instantiate abstract class NoFeatures with abstract method features"),
    (TargetWithoutDecay, 'TargetWithoutDecay has a target network but does not define '
                         r'ema_decay\(step\)'),
])
def test_a_broken_contract_fails_at_construction(cls, message):
  with pytest.raises(TypeError, match=message):
    cls()


def architecture_diffs():
  """{file: its added lines} of the diff blocks of docs/architecture.md."""
  with open(os.path.join(REPO_ROOT, 'docs', 'architecture.md'), encoding='utf-8') as f:
    text = f.read()
  out = {}
  for block in re.findall(r'```diff\n(.*?)```', text, re.S):
    lines = block.splitlines()
    path = next(line[len('+++ b/'):] for line in lines if line.startswith('+++ '))
    out[path] = [line[1:] for line in lines if line.startswith('+') and
                 not line.startswith('+++')]
  return out


def test_the_architecture_page_shows_the_toy_methods_whole_diff_word_for_word():
  """docs/architecture.md's "How to add a method" is this module's toy, line for line; its
  registration line is the package's own form; its experiments run as written."""
  diffs = architecture_diffs()
  assert sorted(diffs) == ['tf_detcon/configs/experiments.py', 'tf_detcon/configs/methods.py',
                           'tf_detcon/modeling/methods/toy.py', 'tf_detcon/registry_imports.py']
  with open(__file__, encoding='utf-8') as f:
    source = f.read().splitlines()
  for path in ('tf_detcon/configs/methods.py', 'tf_detcon/modeling/methods/toy.py'):
    missing = [line for line in diffs[path] if line.strip() and line not in source]
    assert not missing, (path, missing)
  [registration] = diffs['tf_detcon/registry_imports.py']
  with open(registry_imports.__file__, encoding='utf-8') as f:
    assert registration.replace('toy', 'detcon') in f.read().splitlines()
  namespace = dict(
      exp_factory=types.SimpleNamespace(register_config_factory=lambda name: lambda fn: fn),
      PretrainExperiment=pretrain.PretrainExperiment, tiny=experiments.tiny,
      simclr_imagenet_1000ep=experiments.simclr_imagenet_1000ep,
      methods=types.SimpleNamespace(MethodConfig=ToyMethodConfig))
  exec('\n'.join(diffs['tf_detcon/configs/experiments.py']), namespace)  # pylint: disable=exec-used
  params = namespace['toy_tiny']()
  assert params.task.method.type == 'toy' and params.task.method.toy.dim == 8
  validation.validate(params)
