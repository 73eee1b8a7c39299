"""Tests for tf_detcon.finetuning.transfer and launch/finetune.py: Model Garden loads our
exports."""

import gc
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import yaml

from official.core import exp_factory
from official.core import task_factory
from official.modeling import hyperparams
from official.vision import registry_imports  # pylint: disable=unused-import
from tests.conftest import REPO_ROOT
from tf_detcon.finetuning import segmentation
from tf_detcon.finetuning import transfer

FINETUNE = os.path.join(REPO_ROOT, 'official_configs', 'finetune')
TINY_BACKBONE = {'type': 'resnet', 'resnet': {'model_id': 10, 'depth_multiplier': 0.25}}
# Mask R-CNN's heads and samplers at a size a CPU step takes a fraction of a second with: the
# recipe's 4conv1fc head over 512 sampled RoIs and its mask head take ~20 s a step here, and the
# tests are about what the backbone and decoder load, not about the heads.
TINY_MASKRCNN_HEADS = {
    'rpn_head': {'num_filters': 32},
    'detection_head': {'num_filters': 32, 'fc_dims': 64},
    'mask_head': {'num_filters': 32},
    'roi_sampler': {'num_sampled_rois': 64},
    'mask_sampler': {'num_sampled_masks': 16},
    'roi_generator': {'num_proposals': 100, 'pre_nms_top_k': 200, 'test_num_proposals': 100,
                      'test_pre_nms_top_k': 200},
    'detection_generator': {'pre_nms_top_k': 200, 'max_num_detections': 20}}


def maskrcnn_params(records: str = '', backbone=None):
  params = exp_factory.get_exp_config('maskrcnn_resnetfpn_coco')
  for name in ('maskrcnn_detcon_coco_1x', 'cpu_offline', 'maskrcnn_cpu_offline'):
    params = hyperparams.override_params_dict(params, os.path.join(FINETUNE, f'{name}.yaml'),
                                              is_strict=True)
  params.override({
      'task': {'model': {'input_size': [128, 128, 3], 'num_classes': 4,
                         'backbone': backbone or TINY_BACKBONE, **TINY_MASKRCNN_HEADS},
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
  # cpu_offline.yaml serves every task the docs fine-tune on a CPU: float32 throughout.
  for experiment in ('maskrcnn_resnetfpn_coco', 'retinanet_resnetfpn_coco', 'seg_resnetfpn_pascal',
                     segmentation.EXPERIMENT):
    params = hyperparams.override_params_dict(exp_factory.get_exp_config(experiment),
                                              os.path.join(FINETUNE, 'cpu_offline.yaml'),
                                              is_strict=True)
    assert params.runtime.mixed_precision_dtype == 'float32', experiment
    assert params.task.train_data.dtype == params.task.validation_data.dtype == 'float32'


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
  with pytest.raises(ValueError, match=r"task.model.backbone.resnet.model_id is set to 18 but "
                                       r"the export was pretrained with 10"):
    transfer.resolve_init_checkpoint(params, os.path.join(tiny_run.model_dir, 'export'),
                                     explicit={'task.model.backbone.resnet.model_id'})
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
  """DeCon's P2–P5 FPN into the task's P3–P7 FPN: levels 3–5 load, P6's and P7's layers keep
  the task's initialisation, and one line names each kind, with DeCon-SL's P3–P5 output
  convolutions loaded but never called pretrained."""
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
      assert layer.name in ('coarser_6', 'norm_6', 'coarser_7', 'norm_7'), layer.name
      for w, value in zip(layer.weights, before[layer.name]):
        np.testing.assert_array_equal(w.numpy(), value, err_msg=w.name)
      continue
    shared.append(layer.name)
    for w, value in zip(layer.weights, source.weights):
      np.testing.assert_array_equal(w.numpy(), value.numpy(), err_msg=w.name)
  assert sorted(shared) == sorted(
      [f'lateral_{l}' for l in (3, 4, 5)] + [f'post_hoc_{l}' for l in (3, 4, 5)]
      + [f'norm_{l}' for l in (3, 4, 5)])
  for a, b in zip(model.backbone.weights, tiny_decon_run.model.encoder.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
  line, = [r.getMessage() for r in caplog.records if 'pretrained FPN' in r.getMessage()]
  assert line == ('pretrained FPN layers loaded: lateral_3, lateral_4, lateral_5; loaded but '
                  'untrained in pretraining (at their pretraining initialisation): norm_3, '
                  'norm_4, norm_5, post_hoc_3, post_hoc_4, post_hoc_5; not pretrained, at this '
                  "task's initialisation: coarser_6, coarser_7, norm_6, norm_7; pretrained but "
                  'not in this FPN: lateral_2, norm_2, post_hoc_2'), line


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


def test_unset_backbone_fields_are_the_exports_and_say_so(tiny_run, capsys):
  params = _function_params('maskrcnn_resnetfpn_coco')  # ResNet-50, ReLU, epsilon 1e-4
  transfer.resolve_init_checkpoint(params, os.path.join(tiny_run.model_dir, 'export'))
  resnet = params.task.model.backbone.resnet
  assert (resnet.model_id, resnet.depth_multiplier) == (10, 0.25)
  line, = [l for l in capsys.readouterr().out.splitlines() if 'export\'s network' in l]
  assert ("task.model.backbone.resnet.model_id=10 (the experiment's: 50)" in line
          and "task.model.norm_activation.norm_epsilon=1e-05 (the experiment's: 0.0001)" in line)


FUNCTION_TASKS = {'retinanet_resnetfpn_coco': (3, 7), 'maskrcnn_resnetfpn_coco': (2, 6),
                  'seg_resnetfpn_pascal': (3, 7)}


def _function_params(experiment: str):
  """Model Garden's experiment as a user runs it on CPU, sized for the tiny export: its own
  levels, activation and BN epsilon (RetinaNet: ReLU, 1e-3; Mask R-CNN: ReLU, 1e-4; the FPN
  segmenter: swish, 1e-3)."""
  params = hyperparams.override_params_dict(exp_factory.get_exp_config(experiment),
                                            os.path.join(FINETUNE, 'cpu_offline.yaml'),
                                            is_strict=True)
  params.override({'task': {'model': {'input_size': [64, 64, 3], 'num_classes': 6}}},
                  is_strict=True)
  return params


def _pretrained_function(run, images):
  """What pretraining computes: the online encoder and FPN of the DeCon run, in inference mode."""
  backbone = run.model.encoder(images, training=False)
  return backbone, run.model.decoder(backbone, training=False)


@pytest.mark.parametrize('experiment', sorted(FUNCTION_TASKS))
def test_model_garden_tasks_start_from_the_pretrained_function(tiny_decon_run, experiment):
  """A Model Garden task initialised from a DeCon export computes, before any update (learning
  rate 0, frozen statistics: inference mode), the pretrained encoder's and FPN's features, level
  by level. Without the carried activation and epsilon it does not (the control below)."""
  export = os.path.join(tiny_decon_run.model_dir, 'export')
  images = tf.random.stateless_uniform([2, 64, 64, 3], seed=[5, 6]) * 4 - 2

  def features(params):
    task = transfer.build_task(params)
    model = task.build_model()
    task.initialize(model)
    backbone = model.backbone(images, training=False)
    return backbone, model.decoder(backbone, training=False)

  params = _function_params(experiment)
  default_norm = params.task.model.norm_activation.as_dict()
  transfer.resolve_init_checkpoint(params, export)
  assert list(params.task.init_checkpoint_modules) == ['backbone', 'decoder']
  norm = params.task.model.norm_activation
  assert (norm.activation, norm.norm_epsilon) == ('relu', 1e-5)
  got_backbone, got_decoder = features(params)
  want_backbone, want_decoder = _pretrained_function(tiny_decon_run, images)
  low, high = FUNCTION_TASKS[experiment]
  assert sorted(got_backbone) == ['2', '3', '4', '5']
  for level in want_backbone:
    np.testing.assert_allclose(got_backbone[level].numpy(), want_backbone[level].numpy(),
                               rtol=1e-5, atol=1e-5, err_msg=f'{experiment} backbone {level}')
  shared = [str(l) for l in range(max(2, low), min(5, high) + 1)]
  for level in shared:
    np.testing.assert_allclose(got_decoder[level].numpy(), want_decoder[level].numpy(),
                               rtol=1e-5, atol=1e-5, err_msg=f'{experiment} FPN P{level}')
  # The control: the same weights at the experiment's own activation and epsilon differ far
  # beyond the tolerance above (Mask R-CNN's 1e-4 least: about 4e-4 here).
  params.task.model.norm_activation.override(default_norm)
  other_backbone, other_decoder = features(params)
  change = max(float(np.max(np.abs(got[l].numpy() - want[l].numpy())) /
                     np.max(np.abs(want[l].numpy())))
               for got, want, levels in ((other_backbone, want_backbone, want_backbone),
                                         (other_decoder, want_decoder, shared))
               for l in levels)
  assert change > 1e-4, change


def test_a_conflicting_norm_setting_is_refused_naming_both_values(tiny_run):
  params = _function_params('seg_resnetfpn_pascal')
  params.override({'task': {'model': {'backbone': TINY_BACKBONE}}})
  with pytest.raises(ValueError, match=r"^task.model.norm_activation.activation is set to 'swish' "
                                       r"but the export was pretrained with 'relu': "):
    transfer.resolve_init_checkpoint(params, os.path.join(tiny_run.model_dir, 'export'),
                                     explicit={'task.model.norm_activation.activation'})


def test_the_launcher_refuses_an_override_that_conflicts_with_the_export(tiny_run, tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'launch', 'finetune.py'),
       '--experiment=retinanet_resnetfpn_coco', f'--model_dir={tmp_path / "run"}',
       f'--config_file={os.path.join(FINETUNE, "cpu_offline.yaml")}',
       f'--init_checkpoint={tiny_run.model_dir}/export',
       '--params_override=task.model.norm_activation.norm_epsilon=0.001'],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'finetune.py: error: task.model.norm_activation.norm_epsilon is set to 0.001 but the '
      'export was pretrained with 1e-05: fine-tuning would start from another function than the '
      "pretrained one; remove the setting to take the export's")
  assert not os.path.exists(tmp_path / 'run')


def _seeded_finetune(tiny_run, tiny_coco, model_dir, seed):
  overrides = {'task': {'model': {'input_size': [64, 64, 3], 'num_classes': 4,
                                  'min_level': 3, 'max_level': 5},
                        'train_data': {'input_path': tiny_coco, 'global_batch_size': 2,
                                       'shuffle_buffer_size': 4, 'dtype': 'float32'}},
               'trainer': {'train_steps': 3, 'steps_per_loop': 1, 'summary_interval': 1,
                           'checkpoint_interval': 3}}
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'launch', 'finetune.py'),
       '--experiment=retinanet_resnetfpn_coco', f'--model_dir={model_dir}', '--mode=train',
       f'--config_file={os.path.join(FINETUNE, "cpu_offline.yaml")}',
       f'--init_checkpoint={tiny_run.model_dir}/export', f'--seed={seed}',
       f'--params_override={json.dumps(overrides)}'],
      capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr[-3000:]
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  weights = {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(
      tf.train.latest_checkpoint(model_dir)) if name != '_CHECKPOINTABLE_OBJECT_GRAPH'}
  import common  # pylint: disable=g-import-not-at-top
  losses = common.read_curve(os.path.join(model_dir, 'train'), 'total_loss')
  with open(os.path.join(model_dir, 'params.yaml')) as f:
    recorded = yaml.safe_load(f)['task']['train_data']['seed']
  return weights, losses, recorded


def test_a_fine_tuning_seed_fixes_the_new_layers_the_batches_and_the_result(
    tiny_run, tiny_coco, tmp_path):
  """Two fine-tunings with one seed end with the same weights (every variable, the new head's
  and the loaded backbone's) and the same losses at every step; another seed gives others."""
  first = _seeded_finetune(tiny_run, tiny_coco, str(tmp_path / 'a'), 1)
  again = _seeded_finetune(tiny_run, tiny_coco, str(tmp_path / 'b'), 1)
  other = _seeded_finetune(tiny_run, tiny_coco, str(tmp_path / 'c'), 2)
  assert first[2] == again[2] == 1 and other[2] == 2
  assert len(first[1]) == 3 and first[1] == again[1]
  assert sorted(first[0]) == sorted(again[0]) and len(first[0]) > 20
  for name, value in first[0].items():
    np.testing.assert_array_equal(value, again[0][name], err_msg=name)
  assert first[1] != other[1]
  heads = [n for n in first[0]
           if n.startswith('head/') and 'kernel' in n and 'OPTIMIZER_SLOT' not in n]
  assert heads and all(not np.array_equal(first[0][n], other[0][n]) for n in heads)
