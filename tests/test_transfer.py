"""Tests for tf_detcon.transfer and launch/finetune.py: Model Garden loads our exports."""

import gc
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.core import exp_factory
from official.core import task_factory
from official.modeling import hyperparams
from official.vision import registry_imports  # pylint: disable=unused-import
from tests.conftest import REPO_ROOT
from tf_detcon import segmentation
from tf_detcon import transfer

FINETUNE = os.path.join(REPO_ROOT, 'official_configs', 'finetune')
TINY_BACKBONE = {'type': 'resnet', 'resnet': {'model_id': 10, 'depth_multiplier': 0.25}}


def maskrcnn_params(records: str = '', backbone=None):
  params = exp_factory.get_exp_config('maskrcnn_resnetfpn_coco')
  for name in ('maskrcnn_detcon_coco_1x', 'cpu_offline', 'maskrcnn_cpu_offline'):
    params = hyperparams.override_params_dict(params, os.path.join(FINETUNE, f'{name}.yaml'),
                                              is_strict=True)
  params.override({
      'task': {'model': {'input_size': [128, 128, 3], 'num_classes': 4,
                         'backbone': backbone or TINY_BACKBONE},
               'train_data': {'input_path': records, 'global_batch_size': 2},
               'validation_data': {'input_path': records, 'global_batch_size': 2,
                                   'num_examples': 4}},
      'trainer': {'train_steps': 2, 'steps_per_loop': 1, 'summary_interval': 1,
                  'checkpoint_interval': 2, 'validation_steps': 1, 'validation_interval': 2}},
      is_strict=True)
  return params


def test_yaml_recipes_follow_the_paper():
  params = exp_factory.get_exp_config('maskrcnn_resnetfpn_coco')
  params = hyperparams.override_params_dict(
      params, os.path.join(FINETUNE, 'maskrcnn_detcon_coco_1x.yaml'), is_strict=True)
  stepwise = params.trainer.optimizer_config.learning_rate.stepwise
  assert stepwise.values == [0.075, 0.0075, 0.00075]
  assert [b / params.trainer.train_steps for b in stepwise.boundaries] == [2 / 3, 8 / 9]
  assert params.task.model.norm_activation.use_sync_bn
  assert params.task.train_data.global_batch_size == 64
  assert (params.task.train_data.parser.aug_scale_min,
          params.task.train_data.parser.aug_scale_max) == (0.8, 1.25)
  assert params.trainer.optimizer_config.warmup.linear.warmup_steps == 500
  frozen = hyperparams.override_params_dict(
      exp_factory.get_exp_config('maskrcnn_resnetfpn_coco'),
      os.path.join(FINETUNE, 'maskrcnn_detcon_coco_frozen.yaml'), is_strict=True)
  assert frozen.task.freeze_backbone
  twice = hyperparams.override_params_dict(
      exp_factory.get_exp_config('maskrcnn_resnetfpn_coco'),
      os.path.join(FINETUNE, 'maskrcnn_detcon_coco_2x.yaml'), is_strict=True)
  assert twice.trainer.train_steps == 2 * params.trainer.train_steps
  decon = hyperparams.override_params_dict(
      exp_factory.get_exp_config('maskrcnn_resnetfpn_coco'),
      os.path.join(FINETUNE, 'maskrcnn_decon_coco_1x.yaml'), is_strict=True)
  assert list(decon.task.init_checkpoint_modules) == ['backbone', 'decoder']
  assert (decon.task.model.min_level, decon.task.model.max_level) == (2, 6)
  assert decon.task.model.decoder.fpn.num_filters == 256


FINETUNE_YAMLS = {'maskrcnn_detcon_coco_1x.yaml': 'maskrcnn_resnetfpn_coco',
                  'maskrcnn_detcon_coco_2x.yaml': 'maskrcnn_resnetfpn_coco',
                  'maskrcnn_detcon_coco_frozen.yaml': 'maskrcnn_resnetfpn_coco',
                  'maskrcnn_decon_coco_1x.yaml': 'maskrcnn_resnetfpn_coco',
                  'maskrcnn_cpu_offline.yaml': 'maskrcnn_resnetfpn_coco',
                  'cpu_offline.yaml': 'maskrcnn_resnetfpn_coco',
                  'seg_detcon_pascal_fcn.yaml': segmentation.EXPERIMENT}


def test_every_finetune_yaml_overrides_its_experiment_strictly():
  assert sorted(FINETUNE_YAMLS) == sorted(os.listdir(FINETUNE))
  for name, experiment in FINETUNE_YAMLS.items():
    params = hyperparams.override_params_dict(exp_factory.get_exp_config(experiment),
                                              os.path.join(FINETUNE, name), is_strict=True)
    params.validate()


def test_maskrcnn_initialize_loads_every_backbone_weight_from_the_export(tiny_run):
  params = maskrcnn_params()
  transfer.resolve_init_checkpoint(params, os.path.join(tiny_run.model_dir, 'export'))
  assert params.task.init_checkpoint.endswith(os.path.join('export', 'checkpoint'))
  assert params.task.init_checkpoint_modules == 'backbone'
  task = task_factory.get_task(params.task)
  model = task.build_model()
  exported = tiny_run.model.encoder.weights
  assert len(model.backbone.weights) == len(exported)
  assert not all(np.array_equal(a.numpy(), b.numpy())
                 for a, b in zip(model.backbone.weights, exported))
  task.initialize(model)
  for loaded, trained in zip(model.backbone.weights, exported):
    np.testing.assert_array_equal(loaded.numpy(), trained.numpy(), err_msg=loaded.name)


def test_a_checkpoint_of_another_backbone_fails_to_load(tiny_run):
  other = {'type': 'resnet', 'resnet': {'model_id': 18, 'depth_multiplier': 0.25}}
  params = maskrcnn_params(backbone=other)
  with pytest.raises(ValueError, match="model_id': 10.*model_id': 18"):
    transfer.resolve_init_checkpoint(params, os.path.join(tiny_run.model_dir, 'export'))
  # Model Garden's own check fails as well when pointed at it directly.
  params.task.init_checkpoint = os.path.join(tiny_run.model_dir, 'export', 'checkpoint')
  task = task_factory.get_task(params.task)
  with pytest.raises((AssertionError, ValueError)) as failure:
    task.initialize(task.build_model())
  # The failed restore's status lives in the traceback; free it now, not at interpreter exit
  # (where TF would print its unmatched-value warnings after the test summary).
  del failure
  gc.collect()


@pytest.fixture(scope='module')
def resnet50_export(tmp_path_factory):
  """A ResNet-50 pretraining run exported at step 0 (random weights), by the trainer's own path."""
  from tests.conftest import tiny_params  # pylint: disable=g-import-not-at-top
  from tf_detcon.training import trainer  # pylint: disable=g-import-not-at-top
  params = tiny_params('detcon_s_tiny')
  params.task.encoder.backbone.resnet.override({'model_id': 50, 'depth_multiplier': 1.0})
  run = trainer.Run(params, str(tmp_path_factory.mktemp('resnet50')))
  run.export()
  return run


def pascal_fcn_params():
  params = exp_factory.get_exp_config(segmentation.EXPERIMENT)
  for name in ('seg_detcon_pascal_fcn', 'cpu_offline'):
    params = hyperparams.override_params_dict(params, os.path.join(FINETUNE, f'{name}.yaml'),
                                              is_strict=True)
  return params


def test_pascal_fcn_is_mocos_dilated_fcn_and_loads_the_export_by_value(resnet50_export):
  """DetCon §3.3 / MoCo's VOC FCN: res5 dilated (output stride 16), two 3×3 convs of 256 with
  dilation 6, a 1×1 classifier; the pretrained ResNet-50 loads into the dilated ResNet."""
  params = pascal_fcn_params()
  transfer.resolve_init_checkpoint(params, os.path.join(resnet50_export.model_dir, 'export'))
  assert params.task.init_checkpoint_modules == 'backbone'
  task = task_factory.get_task(params.task)
  model = task.build_model()
  exported = resnet50_export.model.encoder.weights
  assert len(model.backbone.weights) == len(exported)
  assert not all(np.array_equal(a.numpy(), b.numpy())
                 for a, b in zip(model.backbone.weights, exported))
  task.initialize(model)
  for loaded, trained in zip(model.backbone.weights, exported):
    assert loaded.shape == trained.shape, loaded.name
    np.testing.assert_array_equal(loaded.numpy(), trained.numpy(), err_msg=loaded.name)
  dilations = sorted({layer.dilation_rate for layer in model.backbone.submodules
                      if isinstance(layer, tf_keras.layers.Conv2D)})
  assert dilations == [(1, 1), (2, 2)]
  assert [(c.dilation_rate, c.filters, c.kernel_size) for c in model.decoder._convs] == (  # pylint: disable=protected-access
      [((6, 6), 256, (3, 3))] * 2)
  outputs = model(tf.zeros([1, 64, 64, 3]), training=False)
  assert outputs['logits'].shape == (1, 4, 4, 21)  # output stride 16


def test_pascal_fcn_refuses_a_backbone_of_another_depth_or_width(tiny_run):
  with pytest.raises(ValueError, match='the checkpoint holds a .* backbone but the fine-tuning'):
    transfer.resolve_init_checkpoint(pascal_fcn_params(),
                                     os.path.join(tiny_run.model_dir, 'export'))


def test_bad_init_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match='neither an export'):
    transfer.resolve_init_checkpoint(maskrcnn_params(), str(tmp_path / 'nothing'))


def test_finetune_launcher_trains_two_steps_and_evaluates_with_coco_metrics(
    tiny_run, tiny_coco, tmp_path):
  model_dir = str(tmp_path / 'maskrcnn')
  overrides = maskrcnn_params(tiny_coco).as_dict()
  override_file = tmp_path / 'tiny.yaml'
  hyperparams.save_params_dict_to_yaml(hyperparams.ParamsDict(
      {'task': {k: overrides['task'][k] for k in ('model', 'train_data', 'validation_data')},
       'trainer': {k: overrides['trainer'][k] for k in (
           'train_steps', 'steps_per_loop', 'summary_interval', 'checkpoint_interval',
           'validation_steps', 'validation_interval')}}), str(override_file))
  args = ['--experiment=maskrcnn_resnetfpn_coco', f'--model_dir={model_dir}',
          '--mode=train_and_eval', f'--init_checkpoint={tiny_run.model_dir}/export']
  for name in ('maskrcnn_detcon_coco_1x.yaml', 'cpu_offline.yaml', 'maskrcnn_cpu_offline.yaml'):
    args.append(f'--config_file={os.path.join(FINETUNE, name)}')
  args.append(f'--config_file={override_file}')
  result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'launch', 'finetune.py'),
                           *args], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  log = result.stdout + result.stderr
  assert result.returncode == 0, log[-4000:]
  assert 'Finished loading pretrained checkpoint' in log
  assert tf.train.latest_checkpoint(model_dir).endswith('ckpt-2')
  # pycocotools' summary of the box and mask evaluation ran on the tiny validation set.
  summaries = re.findall(r'Average Precision +\(AP\) @\[ IoU=0.50:0.95 \| area= +all .*= (-?[0-9.]+)',
                         log)
  assert len(summaries) >= 2, log[-3000:]  # boxes and masks
  assert os.path.exists(os.path.join(model_dir, 'annotation.json'))


def finetune_fpn_params(experiment: str, export_filters: int = 32):
  """RetinaNet or the FPN segmenter at P3–P7 (Model Garden's levels), sized for the tiny runs."""
  params = hyperparams.override_params_dict(exp_factory.get_exp_config(experiment),
                                            os.path.join(FINETUNE, 'cpu_offline.yaml'),
                                            is_strict=True)
  params.override({'task': {'model': {
      'input_size': [128, 128, 3], 'num_classes': 6, 'backbone': TINY_BACKBONE,
      'min_level': 3, 'max_level': 7,
      'decoder': {'type': 'fpn', 'fpn': {'num_filters': export_filters}}}}}, is_strict=True)
  return params


@pytest.mark.parametrize('experiment', ['retinanet_resnetfpn_coco', 'seg_resnetfpn_pascal'])
def test_the_fpn_levels_a_decon_export_shares_with_the_task_load_by_value(
    tiny_decon_run, experiment, caplog):
  """DeCon's P2–P6 FPN into the task's P3–P7 FPN: levels 3–6 are the pretrained ones, P7's
  layers keep the task's initialisation, and one line names both."""
  params = finetune_fpn_params(experiment)
  transfer.resolve_init_checkpoint(params, os.path.join(tiny_decon_run.model_dir, 'export'))
  assert list(params.task.init_checkpoint_modules) == ['backbone', 'decoder']
  task = transfer.build_task(params)
  model = task.build_model()
  before = {layer.name: [w.numpy() for w in layer.weights] for layer in model.decoder.layers}
  with caplog.at_level('INFO', logger='absl'):
    task.initialize(model)
  pretrained = tiny_decon_run.model.decoder
  shared = []
  for layer in model.decoder.layers:
    if not layer.weights:
      continue
    try:
      source = pretrained.get_layer(layer.name)
    except ValueError:  # not in the pretrained FPN: left as the task initialised it
      assert layer.name in ('coarser_7', 'norm_7'), layer.name
      for w, value in zip(layer.weights, before[layer.name]):
        np.testing.assert_array_equal(w.numpy(), value, err_msg=w.name)
      continue
    shared.append(layer.name)
    for w, value in zip(layer.weights, source.weights):
      np.testing.assert_array_equal(w.numpy(), value.numpy(), err_msg=w.name)
  assert sorted(shared) == sorted(
      [f'lateral_{l}' for l in (3, 4, 5)] + [f'post_hoc_{l}' for l in (3, 4, 5)]
      + ['coarser_6'] + [f'norm_{l}' for l in (3, 4, 5, 6)])
  for a, b in zip(model.backbone.weights, tiny_decon_run.model.encoder.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
  line, = [r.getMessage() for r in caplog.records if 'pretrained FPN' in r.getMessage()]
  assert 'coarser_7, norm_7' in line and 'lateral_2, norm_2, post_hoc_2' in line


def test_explicit_modules_win_over_the_export_metadata(tiny_decon_run, tiny_run):
  params = finetune_fpn_params('retinanet_resnetfpn_coco', export_filters=256)
  params.task.init_checkpoint_modules = 'backbone'
  transfer.resolve_init_checkpoint(params, os.path.join(tiny_decon_run.model_dir, 'export'),
                                   modules_given=True)
  assert params.task.init_checkpoint_modules == 'backbone'  # another FPN width: not refused
  params = finetune_fpn_params('retinanet_resnetfpn_coco')
  params.task.init_checkpoint_modules = ['backbone', 'decoder']
  with pytest.raises(ValueError, match=r"asks for \['decoder'\] but the export holds"):
    transfer.resolve_init_checkpoint(params, os.path.join(tiny_run.model_dir, 'export'),
                                     modules_given=True)


def test_a_decon_export_into_the_fcn_loads_its_backbone_and_says_the_decoder_is_not_loaded(
    tiny_decon_run, caplog):
  params = pascal_fcn_params()
  params.override({'task': {'model': {'backbone': {
      'type': 'resnet', 'resnet': {'model_id': 10, 'depth_multiplier': 0.25}}}}})
  with caplog.at_level('WARNING', logger='absl'):
    transfer.resolve_init_checkpoint(params, os.path.join(tiny_decon_run.model_dir, 'export'))
  assert params.task.init_checkpoint_modules == 'backbone'
  assert any('decoder is not loaded' in r.getMessage() and 'fcn' in r.getMessage()
             for r in caplog.records)


def test_a_pretraining_runs_training_checkpoint_is_refused_naming_its_export(tiny_run):
  export = os.path.join(tiny_run.model_dir, 'export')
  checkpoints = os.path.join(tiny_run.model_dir, 'checkpoints')
  for given in (tiny_run.model_dir, checkpoints, tf.train.latest_checkpoint(checkpoints)):
    with pytest.raises(ValueError, match=re.escape(f'use its export, --init_checkpoint={export}')):
      transfer.resolve_init_checkpoint(maskrcnn_params(), given)
