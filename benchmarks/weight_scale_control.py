r"""A control for the transfer table: is a pretraining's fine-tuning deficit its features, or the
scale its weights grew to?

  .venv/bin/python benchmarks/weight_scale_control.py --rows=detco,mocov2 --seed=0
  .venv/bin/python benchmarks/weight_scale_control.py --norms --seed=0   # every export's norms

Every convolution of Model Garden's ResNet feeds a batch norm, so multiplying a kernel by c (and
its BN's moving mean by c, its moving variance by c²) leaves the network's function unchanged
(to BN's epsilon), while SGD's effective step on that kernel scales as 1/c² (the update of a
scale-invariant weight is orthogonal to it and shrinks with its norm). A pretraining whose
kernels grew large therefore fine-tunes with smaller effective steps than random init does.
This script rescales every kernel of a mini-table export to the norm of Model Garden's random
initialisation of that layer, checks that the features are unchanged, and fine-tunes the
rescaled export exactly as `transfer_table.py` does. Results are cached beside the table's, under
`controls/`.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tf_detcon import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf
import tf_keras
import mini_table
import transfer_table
from tf_detcon.evaluation import frozen
from tf_detcon.training import export as export_lib
from tf_detcon.weights import resnet
# pylint: enable=g-import-not-at-top,wrong-import-position


def _norm_of(name: str):
  """The BN (layout name) that a kernel's output feeds; None for what is not a kernel."""
  last = name.split('/')[-1]
  if last == 'shortcut':
    return f'{name}_bn'
  if last.startswith('conv'):
    return name[:-len(last)] + last.replace('conv', 'bn')
  return None


def _restored_and_fresh(export: str):
  """(metadata, the export's backbone, Model Garden's random init of it from seed 0)."""
  with open(os.path.join(export, export_lib.METADATA)) as f:
    metadata = json.load(f)
  backbone = frozen.backbone_from_metadata(metadata)
  tf.train.Checkpoint(backbone=backbone).read(tf.train.latest_checkpoint(
      os.path.join(export, 'checkpoint'))).expect_partial().assert_existing_objects_matched()
  tf_keras.utils.set_random_seed(0)
  return metadata, backbone, frozen.backbone_from_metadata(metadata)


def rescale(export: str, out: str) -> dict:
  """Writes `out`, the export with every kernel at its random-init norm; returns the norms."""
  metadata, backbone, fresh_backbone = _restored_and_fresh(export)
  fresh = dict(resnet.targets(fresh_backbone))
  variables = dict(resnet.targets(backbone))
  images = tf.random.stateless_uniform([4, 96, 96, 3], seed=[1, 2])
  before = backbone(images, training=False)
  norms = {}
  for name, kernel in list(variables.items()):
    bn = _norm_of(name)
    if bn is None:
      continue
    norm, target = float(tf.norm(kernel)), float(tf.norm(fresh[name]))
    c = target / norm
    kernel.assign(kernel * c)
    variables[f'{bn}/mean'].assign(variables[f'{bn}/mean'] * c)
    variables[f'{bn}/var'].assign(variables[f'{bn}/var'] * c * c)
    norms[name] = (norm, target)
  after = backbone(images, training=False)
  change = max(float(tf.reduce_max(tf.abs(after[k] - before[k])) /
                     tf.reduce_max(tf.abs(before[k]))) for k in before)
  if change > 1e-3:
    raise RuntimeError(f'rescaling changed the features by {change:.2g}')
  metadata['rescaled'] = {'from': export, 'norms': norms, 'feature_change': change}
  export_lib.write(out, {'backbone': backbone}, metadata)
  return metadata['rescaled']


def norm_ratios(export: str) -> dict:
  """Each kernel's norm over Model Garden's random initialisation of it (seed 0)."""
  _, backbone, fresh_backbone = _restored_and_fresh(export)
  fresh = dict(resnet.targets(fresh_backbone))
  return {name: float(tf.norm(v) / tf.norm(fresh[name]))
          for name, v in resnet.targets(backbone) if _norm_of(name)}


def print_norms(mini_dir: str, seed: int) -> None:
  print(f'{"export":<14} {"stem":>6} {"res2":>6} {"res5":>6} {"all":>6}   kernel norm / random-init norm')
  for name in sorted({row.pretraining for row in transfer_table.ROWS.values() if row.pretraining}):
    export = os.path.join(mini_dir, f'runs-v{mini_table.RESULTS_VERSION}', f'{name}-seed{seed}',
                          'export')
    if not os.path.exists(os.path.join(export, export_lib.METADATA)):
      continue
    ratios = norm_ratios(export)
    group = lambda g: np.mean([r for n, r in ratios.items() if n.startswith(g)])
    print(f'{name:<14} {ratios["stem/conv"]:6.2f} {group("g0/"):6.2f} {group("g3/"):6.2f} '
          f'{np.mean(list(ratios.values())):6.2f}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--work_dir', default=mini_table.WORK_DIR)
  parser.add_argument('--rows', default='detco,mocov2')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--tasks', default='retinanet,segmentation')
  parser.add_argument('--pretrain_steps', type=int, default=2000)
  parser.add_argument('--norms', action='store_true',
                      help='only print every export\'s kernel norms against random init')
  args = parser.parse_args()
  setup = transfer_table.Setup()
  mini_setup = dataclasses.replace(mini_table.Setup(), steps=args.pretrain_steps)
  mini_dir = os.path.join(args.work_dir, f'steps{mini_setup.steps}-scenes{mini_setup.scenes}')
  out_dir = os.path.join(mini_dir, f'transfer-v{transfer_table.VERSION}', 'controls')
  if args.norms:
    print_norms(mini_dir, args.seed)
    return
  data = transfer_table.labelled_data(args.work_dir, setup)
  for name in args.rows.split(','):
    row = transfer_table.ROWS[name]
    export = os.path.join(mini_dir, f'runs-v{mini_table.RESULTS_VERSION}',
                          f'{row.pretraining}-seed{args.seed}', 'export')
    rescaled = os.path.join(out_dir, 'exports', f'{name}-seed{args.seed}-rescaled')
    if not os.path.exists(os.path.join(rescaled, export_lib.METADATA)):
      info = rescale(export, rescaled)
      print(f'{name} seed {args.seed}: kernel norm / random-init norm ' + ', '.join(
          f'{k} {a / b:.2f}' for k, (a, b) in list(info['norms'].items())[:4]) +
            f', …; features changed by {info["feature_change"]:.1g}', flush=True)
    for task in args.tasks.split(','):
      key = f'{task}-train-{name}_rescaled-seed{args.seed}'
      path = os.path.join(out_dir, 'results', f'{key}.json')
      if os.path.exists(path):
        with open(path) as f:
          print(f'{key}: {json.load(f)["value"]:.4f} (cached)')
        continue
      model_dir = os.path.join(out_dir, 'runs', key)
      shutil.rmtree(model_dir, ignore_errors=True)
      os.makedirs(model_dir)
      backbone = {'type': 'resnet', 'resnet': {'model_id': 10,
                                               'depth_multiplier': mini_setup.width}}
      overrides = transfer_table.finetune_overrides(task, 'train', setup, data, backbone,
                                                    ['backbone'], setup.steps)
      override_file = os.path.join(model_dir, 'overrides.yaml')
      with open(override_file, 'w') as f:
        json.dump(overrides, f)
      experiment, tag = transfer_table.TASKS[task]
      begin = time.time()
      transfer_table._run(  # pylint: disable=protected-access
          [sys.executable, os.path.join(transfer_table.REPO, 'launch', 'finetune.py'),
           f'--experiment={experiment}', f'--config_file={transfer_table.CPU_OFFLINE}',
           f'--config_file={override_file}', f'--model_dir={model_dir}',
           '--mode=train_and_eval', f'--init_checkpoint={rescaled}'],
          os.path.join(model_dir, 'finetune.log'))
      curve = transfer_table.read_metric(model_dir, tag)
      out = {'task': task, 'row': f'{name}_rescaled', 'seed': args.seed, 'metric': tag,
             'value': curve[-1][1], 'curve': curve, 'seconds': time.time() - begin}
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w') as f:
        json.dump(out, f, indent=2)
      print(f'{key}: {tag} {out["value"]:.4f} ({out["seconds"] / 60:.1f} min)', flush=True)


if __name__ == '__main__':
  main()
