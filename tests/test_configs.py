"""Tests for tf_detcon.configs: the registered experiments, paper settings, YAML files."""

import glob
import os

import numpy as np
import pytest
import yaml

from official.core import exp_factory
from official.modeling import hyperparams
from tests.conftest import REPO_ROOT
from tests.conftest import method_types
from tf_detcon.configs import data as data_config
from tf_detcon.configs import experiments
from tf_detcon.configs import optimization
from tf_detcon.configs import pretrain
from tf_detcon.configs import validation
from tf_detcon import registry_imports  # pylint: disable=unused-import  (the models register)
from tf_detcon.modeling import registry

YAMLS = sorted(glob.glob(os.path.join(REPO_ROOT, 'official_configs', 'pretrain', '*.yaml')))


EXPERIMENTS = sorted(
    n for n in exp_factory._REGISTERED_CONFIGS  # pylint: disable=protected-access
    if isinstance(exp_factory.get_exp_config(n), pretrain.PretrainExperiment))
EXPECTED = ['detcon_b_imagenet', 'detcon_s_imagenet', 'byol_imagenet', 'simclr_imagenet',
            'detcon_s_coco', 'detcon_b_tiny', 'detcon_b_global_imagenet_1000ep',
            'detcon_b_global_tiny', 'detcon_s_tiny', 'byol_tiny', 'simclr_tiny',
            'detco_imagenet_200ep', 'mocov2_imagenet_200ep', 'detco_tiny', 'mocov2_tiny',
            'decon_sl_detcon_b_coco', 'decon_ml_detcon_b_coco', 'decon_sl_detcon_s_coco',
            'decon_ml_detcon_b_imagenet', 'decon_sl_detco_imagenet_200ep', 'decon_sl_detcon_b_tiny',
            'decon_ml_detcon_b_tiny', 'decon_sl_detco_tiny']


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_experiments_are_registered_and_valid(name):
  params = exp_factory.get_exp_config(name)
  assert isinstance(params, pretrain.PretrainExperiment)
  params.validate()
  validation.validate(params)


def test_the_expected_experiments_are_all_there():
  assert set(EXPECTED) <= set(EXPERIMENTS)


def test_every_method_has_a_model_and_a_tiny_twin():
  """Every block of the `task.method` one-of has a registered model and a CPU experiment."""
  tiny_methods = {exp_factory.get_exp_config(name).task.method.type
                  for name in EXPERIMENTS if name.endswith('_tiny')}
  for kind in method_types():
    registry.lookup(kind)
    assert kind in tiny_methods, kind


def test_every_tiny_experiment_is_the_miniature_of_a_full_size_one():
  """`<name>_tiny` is `experiments.tiny` of a registered `<name>_...` experiment: the miniature
  changes size, never the method."""
  for name in EXPERIMENTS:
    if not name.endswith('_tiny'):
      continue
    tiny = exp_factory.get_exp_config(name).as_dict()
    sources = [full for full in EXPERIMENTS
               if full.startswith(name[:-len('tiny')]) and not full.endswith('_tiny')]
    assert any(experiments.tiny(exp_factory.get_exp_config(full)).as_dict() == tiny
               for full in sources), (name, sources)


def test_each_experiment_is_one_factory_named_as_it():
  """`grep -n "def <name>" tf_detcon/configs/experiments.py` finds every experiment."""
  with open(experiments.__file__, encoding='utf-8') as f:
    source = f.read()
  for name in EXPERIMENTS:
    assert f"@exp_factory.register_config_factory('{name}')\ndef {name}() ->" in source, name


def _lars(task_params):
  return task_params.trainer.optimizer_config.optimizer.lars


def _peak(task_params):
  return optimization.peak_learning_rate(task_params.trainer.optimizer_config)


def test_paper_settings():
  b = exp_factory.get_exp_config('detcon_b_imagenet_1000ep')
  b_detcon = b.task.method.detcon
  assert (b_detcon.projector.hidden_dim, b_detcon.projector.output_dim) == (4096, 256)
  assert (b_detcon.ema_tau_base, _lars(b).weight_decay_rate) == (0.996, 1.5e-6)
  assert _peak(b) == 0.2 * 4096 / 256 and b_detcon.num_samples == 16
  b300 = exp_factory.get_exp_config('detcon_b_imagenet_300ep')
  assert (b300.task.method.detcon.ema_tau_base, _lars(b300).weight_decay_rate) == (0.99, 1e-6)
  assert _peak(b300) == 0.3 * 4096 / 256
  byol = exp_factory.get_exp_config('byol_imagenet_300ep')
  assert (byol.task.method.detcon.loss, byol.task.method.detcon.num_samples, _peak(byol)) == (
      'regression', 1, 0.3 * 4096 / 256)
  s = exp_factory.get_exp_config('detcon_s_imagenet')
  assert (s.task.method.detcon.projector.hidden_dim, s.task.method.detcon.projector.output_dim) == (
      2048, 128)
  assert _peak(s) == 0.3 * 4096 / 256
  assert exp_factory.get_exp_config('byol_imagenet').task.train_data.masks.type == 'grid'
  coco = exp_factory.get_exp_config('detcon_b_coco').trainer
  assert coco.optimizer_config.learning_rate.type == 'stepwise'
  assert coco.optimizer_config.learning_rate.stepwise.boundaries == [
      int(0.96 * coco.train_steps), int(0.98 * coco.train_steps)]
  detco = exp_factory.get_exp_config('detco_imagenet_200ep')
  assert (detco.task.method.detco.level_weights, detco.task.method.detco.queue_size) == (
      [0.1, 0.4, 0.7, 1.0], 65536)
  assert detco.trainer.optimizer_config.optimizer.type == 'sgd'
  assert _peak(detco) == pytest.approx(0.06) and detco.task.losses.l2_weight_decay == 1e-4
  assert detco.task.method.detco.key_bn == 'shuffle'
  mocov2 = exp_factory.get_exp_config('mocov2_imagenet_200ep')
  assert _peak(mocov2) == pytest.approx(0.03)
  assert detco.task.train_data.view1.crop_area_min == 0.2
  assert detco.task.method.detco.view_recipe().grid_size == 3
  assert mocov2.task.method.detco.view_recipe() is None
  assert exp_factory.get_exp_config('detcon_b_imagenet').trainer.train_steps == (
      1000 * pretrain.IMAGENET_TRAIN_EXAMPLES // 4096)


@pytest.mark.parametrize('path', YAMLS, ids=[os.path.basename(p) for p in YAMLS])
def test_yaml_files_override_their_experiment_strictly(path):
  name = os.path.splitext(os.path.basename(path))[0]
  params = exp_factory.get_exp_config(name)
  params = hyperparams.override_params_dict(params, path, is_strict=True)
  params.validate()
  registered = exp_factory.get_exp_config(name)
  # The YAML spells out the registered settings (with a real input path).
  validation.validate(params)
  for key in ('method', 'encoder', 'losses'):
    yaml_value = getattr(params.task, key).as_dict()
    registered_value = getattr(registered.task, key).as_dict()
    assert yaml_value == registered_value, key
  assert (params.trainer.optimizer_config.as_dict() ==
          registered.trainer.optimizer_config.as_dict())
  assert params.trainer.train_steps == registered.trainer.train_steps


@pytest.mark.parametrize('preset', ['byol_views', 'simclr_views', 'mocov2_views'])
def test_presets_follow_the_papers(preset):
  views_cfg = getattr(data_config, preset)(224)
  v1, v2 = views_cfg['view1'], views_cfg['view2']
  if preset == 'byol_views':
    assert (v1.color.blur_prob, v2.color.blur_prob) == (1.0, 0.1)
    assert (v1.color.solarize_prob, v2.color.solarize_prob) == (0.0, 0.2)
  elif preset == 'simclr_views':
    assert (v1.color.brightness, v1.color.hue, v2.color.blur_prob) == (0.8, 0.2, 0.0)
  else:
    assert v1.crop_area_min == 0.2 and v2.color.blur_prob == 0.5


COCO_FINETUNE_YAMLS = sorted(glob.glob(
    os.path.join(REPO_ROOT, 'official_configs', 'finetune', 'maskrcnn_*coco*.yaml')))


@pytest.mark.parametrize('path', COCO_FINETUNE_YAMLS,
                         ids=[os.path.basename(p) for p in COCO_FINETUNE_YAMLS])
def test_coco_finetuning_rate_is_the_base_rate_scaled_to_the_batch(path):
  """DetCon A.3: base rate 0.3 (ResNet-50) per 256 images, scaled linearly, ÷10 twice."""
  with open(path, encoding='utf-8') as f:
    recipe = yaml.safe_load(f)
  batch = recipe['task']['train_data']['global_batch_size']
  assert recipe['task']['model']['backbone']['resnet']['model_id'] == 50
  values = recipe['trainer']['optimizer_config']['learning_rate']['stepwise']['values']
  first = 0.3 * batch / 256
  np.testing.assert_allclose(values, [first, first / 10, first / 100], rtol=1e-12)
  assert batch == 64 and abs(values[0] - 0.075) < 1e-12
