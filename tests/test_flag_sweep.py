"""Every launcher's every flag, and the config leaves users set, fed invalid values: each must
stop with one line naming the flag or setting, a non-zero exit and no traceback.

Values: wrong types, out of range, paths that do not exist, that are files where a folder is
needed (or the reverse), and folders that cannot be written (a path under a file: this runs as
root in CI, where permission bits do not stop writes). One process per launcher
(tests/flag_sweep.py).
"""

import json
import os
import subprocess
import sys
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
import pytest

from tests.conftest import REPO_ROOT, blocky_ids, palette

Case = Tuple[List[str], str]  # arguments, the flag or setting the error line must name


def _paths(root: str) -> Dict[str, str]:
  """A file, a folder, a missing path, an unwritable one and a folder of two images."""
  paths = {'file': os.path.join(root, 'file.txt'), 'dir': os.path.join(root, 'folder'),
           'missing': os.path.join(root, 'missing'), 'images': os.path.join(root, 'images'),
           'empty': os.path.join(root, 'empty.yaml'), 'nested': os.path.join(root, 'nested')}
  paths['unwritable'] = os.path.join(paths['file'], 'sub')
  for key in ('dir', 'images', 'nested'):
    os.makedirs(paths[key])
  os.makedirs(os.path.join(paths['nested'], 'sub'))
  with open(paths['file'], 'w') as f:
    f.write('not a folder')
  open(paths['empty'], 'w').close()
  for i in range(2):
    image = palette(5)[blocky_ids(64, 64, 5, 8, seed=i)].astype(np.uint8)
    Image.fromarray(image).save(os.path.join(paths['images'], f'{i}.png'))
  return paths


def _common(p: Dict[str, str], base: List[str]) -> List[Case]:
  """Model Garden's common flags (pretrain, finetune)."""
  return [
      (base[1:], 'experiment'),
      ([f'--experiment=nope', *base[1:]], 'experiment'),
      ([*base, '--mode=serve'], '--mode'),
      ([base[0]], '--model_dir'),
      ([base[0], f'--model_dir={p["unwritable"]}'], '--model_dir'),
      ([*base, f'--config_file={p["missing"]}'], '--config_file'),
      ([*base, f'--config_file={p["dir"]}'], '--config_file'),
      ([*base, f'--config_file={p["empty"]}'], '--config_file'),
      ([*base, '--params_override=a: ['], '--params_override'),
      ([*base, '--params_override=task.no_such_setting=1'], 'no_such_setting'),
      ([*base, 'stray_argument'], 'stray_argument'),
  ]


def pretrain_cases(p: Dict[str, str]) -> List[Case]:
  base = ['--experiment=simclr_tiny', f'--model_dir={p["dir"]}/pretrain']
  leaves = [
      ('trainer.train_steps', ['0', '-5', 'many']),
      ('task.train_data.global_batch_size', ['0', '-8', '2.5']),
      ('task.train_data.input_path', [p['missing']]),
      ('task.train_data.shuffle_buffer_size', ['-1']),
      ('task.method.detcon.temperature', ['0', '-0.1']),
      ('trainer.optimizer_config.learning_rate.cosine.initial_learning_rate', ['-1']),
      ('trainer.optimizer_config.warmup.linear.warmup_steps', ['-3']),
      ('trainer.checkpoint_interval', ['-2']),
      ('trainer.max_to_keep', ['0']),
      ('runtime.distribution_strategy', ['warp']),
      ('runtime.mixed_precision_dtype', ['float16']),
  ]
  cases = _common(p, base)
  for leaf, values in leaves:
    cases += [([*base, f'--params_override={leaf}={v}'], leaf) for v in values]
  cases += [
      ([*base, '--tpu=local'], '--tpu'),
      ([*base, '--tf_data_service=not an address'], '--tf_data_service'),
  ]
  return cases


def finetune_cases(p: Dict[str, str]) -> List[Case]:
  base = ['--experiment=retinanet_resnetfpn_coco', f'--model_dir={p["dir"]}/finetune']
  return _common(p, base) + [
      ([*base, f'--init_checkpoint={p["missing"]}'], '--init_checkpoint'),
      ([*base, f'--init_checkpoint={p["file"]}'], '--init_checkpoint'),
      ([*base, f'--init_checkpoint={p["dir"]}'], '--init_checkpoint'),
      ([*base, "--params_override=task.train_data.input_path=''"],
       'task.train_data.input_path'),
  ]


def evaluate_cases(p: Dict[str, str]) -> List[Case]:
  base = ['--export=random:simclr_tiny', '--synthetic', '--synthetic_train=2',
          '--synthetic_eval=2', f'--output_dir={p["dir"]}/evaluate']
  folders = [f'--{k}={p["images"]}' for k in ('train_images', 'eval_images')]
  return [
      (base[1:], '--export'),
      ([f'--export={p["missing"]}', *base[1:]], '--export'),
      ([f'--export={p["file"]}', *base[1:]], '--export'),
      ([f'--export={p["dir"]}', *base[1:]], '--export'),
      (['--export=random:nope', *base[1:]], 'nope'),
      ([*base[:-1], f'--output_dir={p["unwritable"]}'], '--output_dir'),
      ([*base[:-1], f'--output_dir={p["file"]}'], '--output_dir'),
      ([*base, '--synthetic_train=0'], '--synthetic_train'),
      ([*base, '--synthetic_eval=-1'], '--synthetic_eval'),
      ([*base, '--image_size=0'], '--image_size'),
      ([*base, '--image_size=big'], '--image_size'),
      ([*base, '--probe_stride=0'], '--probe_stride'),
      ([*base, '--knn_k=0'], '--knn_k'),
      ([*base, '--probe_steps=0'], '--probe_steps'),
      ([*base, '--max_train_images=-1'], '--max_train_images'),
      ([*base, '--max_eval_images=-1'], '--max_eval_images'),
      ([*base, '--ignore_label=-1'], '--ignore_label'),
      ([*base, '--seed=-1'], '--seed'),
      ([*base, '--probe=svm'], '--probe'),
      ([*base, '--probe='], '--probe'),
      ([*base, '--level=9'], '--level'),
      ([*base, '--level='], '--level'),
      ([*base, '--num_classes=4'], '--num_classes'),
      ([*base[:2], f'--input_path={p["missing"]}', f'--eval_input_path={p["missing"]}',
        '--num_classes=3', base[-1]], '--synthetic'),
      ([base[0], f'--input_path={p["missing"]}', f'--eval_input_path={p["missing"]}',
        '--num_classes=3', base[-1]], 'input_path'),
      ([base[0], f'--input_path={p["missing"]}', '--num_classes=3', base[-1]],
       '--eval_input_path'),
      ([base[0], f'--input_path={p["file"]}', f'--eval_input_path={p["file"]}',
        '--num_classes=1', base[-1]], '--num_classes'),
      ([base[0], *folders, base[-1], '--num_classes=3'], '--train_labels'),
      ([base[0], *folders, f'--train_labels={p["missing"]}', f'--eval_labels={p["missing"]}',
        '--num_classes=3', base[-1]], 'labels'),
      ([base[0], *folders, f'--train_labels={p["images"]}', f'--eval_labels={p["images"]}',
        base[-1]], '--num_classes'),
      ([*base, '--name=a/b'], '--name'),
  ]


def visualize_cases(p: Dict[str, str]) -> List[Case]:
  base = [f'--output_dir={p["dir"]}/visualize']
  return [
      ([], '--output_dir'),
      ([f'--output_dir={p["file"]}'], '--output_dir'),
      ([f'--output_dir={p["unwritable"]}'], '--output_dir'),
      ([*base, '--experiment=nope'], 'nope'),
      ([*base, '--experiment=retinanet_resnetfpn_coco'], 'retinanet_resnetfpn_coco'),
      ([*base, f'--export={p["missing"]}'], '--export'),
      ([*base, f'--export={p["file"]}'], '--export'),
      ([*base, f'--input_path={p["missing"]}'], 'input_path'),
      ([*base, f'--image_dir={p["missing"]}'], '--image_dir'),
      ([*base, f'--image_dir={p["file"]}'], '--image_dir'),
      ([*base, f'--image_dir={p["nested"]}'], '--image_dir'),
      ([*base, '--num_examples=0'], '--num_examples'),
      ([*base, '--image_size=0'], '--image_size'),
      ([*base, '--image_size=x'], '--image_size'),
      ([*base, '--level=9'], '--level'),
      ([*base, '--seed=-1'], '--seed'),
  ]


def make_masks_cases(p: Dict[str, str]) -> List[Case]:
  base = [f'--image_dir={p["images"]}', f'--output_dir={p["dir"]}/masks']
  return [
      (base[1:], '--image_dir'),
      ([base[0]], '--output_dir'),
      ([f'--image_dir={p["missing"]}', base[1]], '--image_dir'),
      ([f'--image_dir={p["file"]}', base[1]], '--image_dir'),
      ([f'--image_dir={p["dir"]}', base[1]], '--image_dir'),
      ([base[0], f'--output_dir={p["file"]}'], '--output_dir'),
      ([base[0], f'--output_dir={p["unwritable"]}'], '--output_dir'),
      ([*base, '--num_shards=0'], '--num_shards'),
      ([*base, '--num_shards=5'], 'num_shards'),
      ([*base, '--num_shards=two'], '--num_shards'),
      ([*base, '--num_workers=0'], '--num_workers'),
      ([*base, '--worker_index=3', '--num_workers=2'], '--worker_index'),
      ([*base, '--worker_index=-1'], '--worker_index'),
      ([*base, '--num_processes=0'], '--num_processes'),
      ([*base, '--fh_setting=0:0.8:50'], '--fh_setting'),
      ([*base, '--fh_setting=-100:0.8:50'], '--fh_setting'),
      ([*base, '--fh_setting=100:-0.8:50'], '--fh_setting'),
      ([*base, '--fh_setting=100:0.8:0'], '--fh_setting'),
      ([*base, '--fh_setting=100:0.8'], '--fh_setting'),
      ([*base, '--fh_downscale=0'], '--fh_downscale'),
      ([*base, '--fh_downscale=1.5'], '--fh_downscale'),
      ([*base, '--fh_min_working_side=0'], '--fh_min_working_side'),
      ([*base, '--max_segments=-1'], '--max_segments'),
      ([*base, '--max_segments=1'], '--max_segments'),
      ([*base, '--min_image_side=0'], '--min_image_side'),
      ([*base, '--min_segments=0'], '--min_segments'),
      ([*base, '--mask_kind=cloud'], '--mask_kind'),
      ([*base, '--mask_kind=file'], '--mask_dir'),
      ([*base, '--mask_kind=file', f'--mask_dir={p["missing"]}'], '--mask_dir'),
      ([*base, '--mask_kind=gt'], '--coco_annotations'),
      ([*base, '--preset=ade'], '--preset'),
      ([*base, '--on_bad_example=ignore'], '--on_bad_example'),
      ([*base, '--runner=spark'], '--runner'),
      ([*base, '--beam_pipeline_options=runner=DataflowRunner'], '--beam_pipeline_options'),
      ([*base, '--mask_dir=x'], '--mask_dir'),
      ([*base, '--prefix=a/b'], '--prefix'),
      ([*base, '--prefix='], '--prefix'),
      ([f'--tfds_name=no_such_dataset', f'--data_dir={p["dir"]}', base[1]], 'no_such_dataset'),
      ([f'--coco_annotations={p["missing"]}', f'--coco_image_dir={p["dir"]}', base[1],
        '--mask_kind=gt'], 'coco_annotations'),
      ([f'--coco_annotations={p["file"]}', f'--coco_image_dir={p["dir"]}', base[1],
        '--mask_kind=gt'], 'coco_annotations'),
      ([*base, '--report_only'], '--report_only'),
      ([*base, '--report', f'--report_instances={p["missing"]}'], '--report_instances'),
  ]


def import_weights_cases(p: Dict[str, str]) -> List[Case]:
  out = f'--output_dir={p["dir"]}/imported'
  npy = os.path.join(p['dir'], 'weights.npy')
  np.save(npy, np.zeros(3, np.float32))
  base = ['--format=haiku', f'--input={npy}', out]
  return [
      (base[1:], '--format'),
      (['--format=onnx', *base[1:]], '--format'),
      ([base[0], out], '--input'),
      ([base[0], f'--input={p["missing"]}', out], '--input'),
      ([base[0], f'--input={p["dir"]}', out], '--input'),
      ([base[0], f'--input={p["empty"]}', out], '--input'),
      ([base[0], f'--input={p["file"]}', out], '--input'),  # not a .npy
      (base, '--input'),  # a .npy of one array, not a dict of parameters
      (base[:2], '--output_dir'),
      ([*base[:2], f'--output_dir={p["file"]}'], '--output_dir'),
      ([*base[:2], f'--output_dir={p["unwritable"]}'], '--output_dir'),
      ([*base[:2], f'--output_dir={p["images"]}'], '--output_dir'),  # holds other files
      ([*base, '--model_id=0'], '--model_id'),
      ([*base, '--model_id=x'], '--model_id'),
      (['--format=torchvision', *base[1:], '--allow_pickle'], '--allow_pickle'),
      (['--format=torchvision', f'--input={p["file"]}', out], '--input'),
      ([*base, '--padding=symmetric'], '--padding'),
      ([*base, '--padding=valid'], '--padding'),
      ([*base, 'stray_argument'], 'stray_argument'),
  ]


def export_keras_cases(p: Dict[str, str]) -> List[Case]:
  out = f'--output_dir={p["dir"]}/preset'
  base = [f'--export={p["dir"]}', out]
  return [
      (base[1:], '--export'),
      (base[:1], '--output_dir'),
      ([f'--export={p["missing"]}', out], '--export'),
      ([f'--export={p["file"]}', out], '--export'),
      (base, '--export'),  # a folder with neither checkpoint nor manifest
      ([base[0], f'--output_dir={p["file"]}'], '--output_dir'),
      ([base[0], f'--output_dir={p["unwritable"]}'], '--output_dir'),
      ([base[0], f'--output_dir={p["images"]}'], '--output_dir'),  # holds other files
      ([base[0], '--output_dir=gs://bucket/preset'], '--output_dir'),
      ([*base, '--check_backends=paddle'], '--check_backends'),
      ([*base, '--check_backends='], '--check_backends'),
      ([*base, 'stray_argument'], 'stray_argument'),
  ]


LAUNCHERS = {'pretrain': pretrain_cases, 'finetune': finetune_cases,
             'evaluate': evaluate_cases, 'visualize': visualize_cases,
             'make_masks': make_masks_cases, 'import_weights': import_weights_cases,
             'export_keras': export_keras_cases}


@pytest.mark.parametrize('launcher', sorted(LAUNCHERS))
def test_every_flag_given_an_invalid_value_stops_with_one_line_naming_it(launcher, tmp_path):
  paths = _paths(str(tmp_path))
  cases = LAUNCHERS[launcher](paths)
  cases_path, results_path = str(tmp_path / 'cases.json'), str(tmp_path / 'results.json')
  with open(cases_path, 'w') as f:
    json.dump([argv for argv, _ in cases], f)
  done = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'tests', 'flag_sweep.py'), launcher, cases_path,
       results_path], capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert done.returncode == 0, done.stderr[-3000:]
  with open(results_path) as f:
    results = json.load(f)
  failures = []
  for (argv, name), result in zip(cases, results):
    lines = result['stderr'].strip().splitlines()
    last = lines[-1] if lines else ''
    ok = (result['code'] not in (0, None, 'traceback') and 'Traceback' not in result['stderr']
          and (last.startswith(f'{launcher}.py: error: ')
               or last.startswith('FATAL Flags parsing error: '))
          and name in last)
    # No work before the refusal: evaluate checks its output before fitting any probe.
    ok = ok and 'fitting on' not in result['stdout']
    if not ok:
      failures.append(f'{" ".join(argv)}\n    exit {result["code"]}: '
                      f'{result["stderr"].strip()[-600:]}')
  assert not failures, f'{len(failures)} of {len(cases)}:\n' + '\n'.join(failures)
  if launcher == 'pretrain':  # a few lines word for word
    last = {' '.join(argv): result['stderr'].strip().splitlines()[-1]
            for (argv, _), result in zip(cases, results)}
    serve = next(line for argv, line in last.items() if argv.endswith('--mode=serve'))
    assert serve == "pretrain.py: error: --mode must be one of train, export, got 'serve'"
    unknown = next(line for argv, line in last.items() if argv.startswith('--experiment=nope'))
    assert unknown.startswith("pretrain.py: error: unknown experiment 'nope'; known: ")
    assert 'detcon_b_tiny' in unknown, unknown
