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
import sys

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


def decoder_norm_ratios(export: str) -> dict:
  """Each kernel of the export's pretrained FPN (DeCon) over Model Garden's random
  initialisation of it (seed 0); empty for an export without a decoder."""
  with open(os.path.join(export, export_lib.METADATA)) as f:
    metadata = json.load(f)
  backbone = frozen.backbone_from_metadata(metadata)
  decoder = frozen.decoder_from_metadata(metadata, backbone)
  if decoder is None:
    return {}
  tf.train.Checkpoint(decoder=decoder).read(tf.train.latest_checkpoint(
      os.path.join(export, 'checkpoint'))).expect_partial().assert_existing_objects_matched()
  tf_keras.utils.set_random_seed(0)
  fresh = frozen.decoder_from_metadata(metadata, backbone)
  return {mine.name.split('/')[0]: float(tf.norm(mine) / tf.norm(theirs))
          for mine, theirs in zip(decoder.weights, fresh.weights) if 'kernel' in mine.name}


def print_norms(mini_dir: str, seed: int) -> None:
  print(f'{"export":<14} {"stem":>6} {"res2":>6} {"res5":>6} {"all":>6} {"FPN":>11}   '
        'kernel norm / random-init norm (FPN: min-max)')
  for name in sorted({row.pretraining for row in transfer_table.ROWS.values() if row.pretraining}):
    export = os.path.join(mini_dir, f'runs-v{mini_table.RESULTS_VERSION}', f'{name}-seed{seed}',
                          'export')
    if not os.path.exists(os.path.join(export, export_lib.METADATA)):
      continue
    ratios = norm_ratios(export)
    group = lambda g: np.mean([r for n, r in ratios.items() if n.startswith(g)])
    fpn = list(decoder_norm_ratios(export).values())
    print(f'{name:<14} {ratios["stem/conv"]:6.2f} {group("g0/"):6.2f} {group("g3/"):6.2f} '
          f'{np.mean(list(ratios.values())):6.2f} '
          + (f'{min(fpn):.2f}-{max(fpn):.2f}' if fpn else '-').rjust(11))


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
  controllable = [n for n, r in transfer_table.ROWS.items() if r.pretraining and not r.decoder]
  rows = transfer_table.choose(parser, 'rows', args.rows, controllable)
  tasks = transfer_table.choose(parser, 'tasks', args.tasks, transfer_table.TASKS)
  if args.seed < 0:
    parser.error(f'--seed must be 0 or more, got {args.seed}')
  setup = transfer_table.Setup()
  mini_setup = dataclasses.replace(mini_table.Setup(), steps=args.pretrain_steps)
  mini_dir = os.path.join(args.work_dir, f'steps{mini_setup.steps}-scenes{mini_setup.scenes}')
  out_dir = os.path.join(mini_dir, f'transfer-v{transfer_table.VERSION}', 'controls')
  if args.norms:
    print_norms(mini_dir, args.seed)
    return
  data = transfer_table.labelled_data(args.work_dir, setup)
  mini = transfer_table.Pretrainings(mini_setup, mini_dir)
  for name in rows:
    row = transfer_table.ROWS[name]
    export = os.path.join(mini_dir, f'runs-v{mini_table.RESULTS_VERSION}',
                          f'{row.pretraining}-seed{args.seed}', 'export')
    rescaled = os.path.join(out_dir, 'exports', f'{name}-seed{args.seed}-rescaled')
    if not os.path.exists(os.path.join(export, export_lib.METADATA)):
      sys.exit(f'no export of {row.pretraining} seed {args.seed} in {export}: run '
               f'transfer_table.py (or mini_table.py) at --pretrain_steps={mini_setup.steps} first')
    if not os.path.exists(os.path.join(rescaled, export_lib.METADATA)):
      info = rescale(export, rescaled)
      print(f'{name} seed {args.seed}: kernel norm / random-init norm ' + ', '.join(
          f'{k} {a / b:.2f}' for k, (a, b) in list(info['norms'].items())[:4]) +
            f', …; features changed by {info["feature_change"]:.1g}', flush=True)
    results = [transfer_table.finetune(task, 'train', name, args.seed, setup, data, mini,
                                       out_dir, setup.steps, export=rescaled,
                                       label=f'{name}_rescaled')
               for task in tasks]
    print(f'{name} seed {args.seed}, rescaled: ' + ', '.join(
        f'{r["task"]} {r["metric"]} {r["value"]:.4f}' for r in results if r), flush=True)


if __name__ == '__main__':
  main()
