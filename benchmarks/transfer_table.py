r"""The miniature transfer table: every pretraining of the mini table fine-tuned end to end through
Model Garden's own tasks, by `launch/finetune.py`, the path a COCO user takes, scaled down.

  .venv/bin/python benchmarks/transfer_table.py --budget                      # the budget rule
  .venv/bin/python benchmarks/transfer_table.py                               # pass 1: 3 pairs
  .venv/bin/python benchmarks/transfer_table.py --passes=2                    # 6 pairs
  .venv/bin/python benchmarks/transfer_table.py --smoke                       # CI's check

The papers make their claims after fine-tuning: DetCon (§4.2, Table 2) and DetCo (§4.2, Table 5)
on COCO detection, DetCon (§3.3) on PASCAL VOC segmentation, DeCon (§4) with its pretrained FPN
decoder transferred as well, and on small fine-tuning sets. In miniature:

- detection: Model Garden's `retinanet_resnetfpn_coco` (one stage, as DetCo Table 5), box AP by
  pycocotools on held-out scenes;
- semantic segmentation: Model Garden's `seg_resnetfpn_pascal` (an FPN decoder, so that DeCon's
  decoder transfers), mean IoU on held-out scenes;
- both on every labelled fine-tuning image, and on 10% of them (DeCon's small-data setting);
- both FPNs from P2, where DeCon's pretrained FPN (P2–P5, as its authors') has its trained output
  convolution; DeCon in two rows, its encoder alone and with its FPN.

The protocol (benchmarks/README.md says why each part):
- every row runs the same network: ReLU and BN ε = 1e-5, the pretrained encoders' own (set for
  random init too; `tf_detcon.finetuning.transfer` carries them from an export);
- every export fine-tunes from its kernels at random-init norms (`rescale.py`), so that no row
  starts with smaller effective SGD steps than another;
- DetCon A.3's COCO recipe: SGD, 0.3 per 256 images, ÷10 at 2/3 and 8/9, weight decay 4e-5;
- the budget is chosen by a rule fixed before any pretrained row was fine-tuned (`--budget`);
- seeded, paired runs: pass k fine-tunes pretraining seed p with fine-tuning seed p + 3k
  (`launch/finetune.py --seed`), so every row of a pair sees the same new layers and batches, and
  random init gets a fine-tuning seed of its own per pair; each paper ordering is the mean paired
  difference with its 95% interval (`paired.py`), and holds where the interval is above 0.

The labelled scenes (objects with classes, instance masks and boxes) are disjoint from the
pretraining and probe scenes; they are written in COCO format and converted with Model Garden's
`create_coco_tf_record`, and the segmentation records with Model Garden's `TfExampleBuilder`.
Each fine-tuning's result is kept in the repository (`benchmarks/results/transfer-v<VERSION>/`),
its run in `<work_dir>` (a cache), so the table resumes over several sessions; the pretrainings are
the mini table's (`mini_table.ensure_export`), computed first when missing.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import common
import mini_table
import paired
from tf_detcon.data.offline import scenes
from tf_detcon.exports import manifest
# pylint: enable=g-import-not-at-top,wrong-import-position

# 2: the network carried (ReLU, ε 1e-5 for every row), P2 levels, every export rescaled to
# random-init kernel norms, weight decay 4e-5, seeded pairs, results kept in the repository.
VERSION = 2
# Pass k fine-tunes pretraining seed p with fine-tuning seed p + PRETRAIN_SEEDS · k.
PRETRAIN_SEEDS = 3
CPU_OFFLINE = os.path.join(common.REPO, 'official_configs', 'finetune', 'cpu_offline.yaml')


@dataclasses.dataclass
class Row:
  label: str
  pretraining: Optional[str]  # a mini_table method; None: Model Garden's random init
  decoder: bool = False  # also load the pretrained FPN decoder
  base: Optional[str] = None  # the row whose mean it must beat (besides random init)


ROWS = {
    'random': Row('random init', None),
    'simclr': Row('SimCLR', 'simclr'),
    'detcon_s_fh': Row('DetCon_S (FH)', 'detcon_s_fh', base='simclr'),
    'detcon_s_gt': Row('DetCon_S (GT)', 'detcon_s_gt', base='simclr'),
    'byol': Row('BYOL', 'byol'),
    'detcon_b': Row('DetCon_B (FH)', 'detcon_b', base='byol'),
    'mocov2': Row('MoCo v2', 'mocov2'),
    'detco': Row('DetCo', 'detco', base='mocov2'),
    'decon_sl': Row('DeCon-SL (encoder)', 'decon_sl', base='detcon_s_fh'),
    'decon_sl_fpn': Row('DeCon-SL (encoder + FPN)', 'decon_sl', True, base='decon_sl'),
    'decon_ml': Row('DeCon-ML (encoder)', 'decon_ml', base='detcon_s_fh'),
    'decon_ml_fpn': Row('DeCon-ML (encoder + FPN)', 'decon_ml', True, base='decon_ml'),
}


@dataclasses.dataclass
class Setup:
  """The fine-tuning miniature (benchmarks/README.md says how its budget was chosen)."""
  image_size: int = 128
  train_images: int = 1000
  eval_images: int = 200
  small_fraction: float = 0.1
  # DetCo §6.1 fine-tunes on 1–10% of COCO for 12k iterations instead of 1×'s 90k, "to avoid
  # overfitting": the small set gets that share of the steps.
  small_steps_ratio: float = 12 / 90
  batch: int = 16
  # Chosen by the budget rule (`budget_rule`; `--budget`, benchmarks/README.md) before any
  # pretrained row was fine-tuned: random init's segmentation was not within 0.02 of its
  # 2400-step result at any candidate, so the largest.
  steps: int = 1800
  eval_batch: int = 20
  fpn_filters: int = 32  # the mini table's DeCon FPN: pretrained and fine-tuned FPNs must match
  head_filters: int = 32
  # DetCon A.3's COCO recipe: 0.3 per 256 images scaled to the batch, warmup, then /10 at 2/3
  # and 8/9 of training, weight decay 4e-5 (as official_configs/finetune's COCO recipes).
  base_lr: float = 0.3
  warmup_fraction: float = 0.05
  weight_decay: float = 4e-5
  # From P2, where DeCon's pretrained FPN has its trained output convolution (its SL variant
  # trains only P2's); RetinaNet keeps Model Garden's P7, the segmenter's head reads P2.
  min_level: int = 2
  max_levels: Dict[str, int] = dataclasses.field(
      default_factory=lambda: {'retinanet': 7, 'segmentation': 5})
  # The pretrained encoders' network (docs/paper_settings.md), for every row alike.
  activation: str = 'relu'
  norm_epsilon: float = 1e-5


SMOKE = Setup(train_images=8, eval_images=4, batch=2, steps=2, eval_batch=2, small_fraction=0.5)

TASKS = {'retinanet': ('retinanet_resnetfpn_coco', 'AP'),
         'segmentation': ('seg_resnetfpn_pascal', 'mean_iou')}


def _polygons(mask: np.ndarray) -> List[List[float]]:
  """COCO polygons of a binary mask's outer contours, traced around pixel corners (on the mask
  upsampled 2×), so that pycocotools draws the mask back exactly; holes, which a COCO polygon
  cannot hold, are filled."""
  import cv2  # pylint: disable=g-import-not-at-top
  doubled = np.pad(np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8)), 1)
  contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
  return [((c.reshape(-1).astype(float) - 0.5) / 2).tolist() for c in contours if len(c) >= 3]


def write_coco(root: str, split: str, count: int, size: int) -> str:
  """The labelled scenes of `split` as COCO instances (boxes, polygons, classes); returns the
  annotation file. Classes are the scenes' textures, ids 1..5 (0 is background)."""
  os.makedirs(os.path.join(root, 'images'), exist_ok=True)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images, annotations = [], []
  for seed, s in scenes.scenes(split, count, size):
    name = f'{seed}.png'
    Image.fromarray(s.image).save(os.path.join(root, 'images', name))
    images.append({'id': seed, 'file_name': name, 'height': size, 'width': size})
    for instance in range(1, int(s.instances.max()) + 1):
      mask = s.instances == instance
      polygons = _polygons(mask)
      if not polygons:
        continue
      ys, xs = np.nonzero(mask)
      x0, y0 = float(xs.min()), float(ys.min())
      annotations.append({
          'id': len(annotations) + 1, 'image_id': seed, 'iscrowd': 0,
          'category_id': int(np.bincount(s.semantic[mask]).argmax()),
          'area': float(mask.sum()), 'segmentation': polygons,
          'bbox': [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0]})
  path = os.path.join(root, 'instances.json')
  with open(path, 'w') as f:
    json.dump({'images': images, 'annotations': annotations,
               'categories': [{'id': i, 'name': n} for i, n in enumerate(scenes.CLASS_NAMES)
                              if i]}, f)
  return path


def write_segmentation(path: str, split: str, count: int, size: int) -> None:
  """Model Garden segmentation records (image and class map) of the labelled scenes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from official.vision.data import tf_example_builder  # pylint: disable=g-import-not-at-top
  with tf.io.TFRecordWriter(path) as writer:
    for _, s in scenes.scenes(split, count, size):
      builder = tf_example_builder.TfExampleBuilder()
      builder.add_image_matrix_feature(s.image).add_semantic_mask_matrix_feature(
          s.semantic[..., None].astype(np.uint8))
      writer.write(builder.example.SerializeToString())


def labelled_data(work_dir: str, setup: Setup) -> Dict[str, str]:
  """Paths of the fine-tuning data, written once: detection records of the full and the small
  training set and of the evaluation set, their COCO annotations, and segmentation records."""
  root = os.path.join(work_dir, f'labelled-{setup.train_images}-{setup.eval_images}x'
                                f'{setup.image_size}')
  small = max(1, int(round(setup.train_images * setup.small_fraction)))
  sets = {'train': ('transfer_train', setup.train_images),
          'small': ('transfer_train', small),
          'eval': ('transfer_eval', setup.eval_images)}
  paths = {}
  for name, (split, count) in sets.items():
    folder = os.path.join(root, name)
    done = os.path.join(folder, 'done')
    if not os.path.exists(done):
      print(f'writing {count} labelled scenes ({name}) to {folder}', flush=True)
      shutil.rmtree(folder, ignore_errors=True)
      annotations = write_coco(folder, split, count, setup.image_size)
      common.run_logged([sys.executable, '-m', 'official.vision.data.create_coco_tf_record',
            f'--image_dir={folder}/images', f'--object_annotations_file={annotations}',
            f'--output_file_prefix={folder}/coco', '--num_shards=1', '--include_masks'],
           os.path.join(folder, 'convert.log'))
      write_segmentation(os.path.join(folder, 'segmentation.tfrecord'), split, count,
                         setup.image_size)
      open(done, 'w').close()
    paths[f'{name}/coco'] = os.path.join(folder, 'coco*')
    paths[f'{name}/annotations'] = os.path.join(folder, 'instances.json')
    paths[f'{name}/segmentation'] = os.path.join(folder, 'segmentation.tfrecord')
  return paths


def steps_for(setup: Setup, labels: str) -> int:
  """Fine-tuning steps on every label ('train') or on the small set."""
  if labels == 'small':
    return max(1, int(round(setup.steps * setup.small_steps_ratio)))
  return setup.steps


def _schedule(setup: Setup, steps: int) -> Dict:
  lr = setup.base_lr * setup.batch / 256
  return {'optimizer': {'type': 'sgd', 'sgd': {'momentum': 0.9}},
          'learning_rate': {'type': 'stepwise', 'stepwise': {
              'boundaries': [int(steps * 2 / 3), int(steps * 8 / 9)],
              'values': [lr, lr / 10, lr / 100]}},
          'warmup': {'type': 'linear', 'linear': {
              'warmup_steps': max(1, int(steps * setup.warmup_fraction)),
              'warmup_learning_rate': 0.0}}}


def finetune_overrides(task: str, labels: str, setup: Setup, data: Dict[str, str],
                       backbone: Dict, modules: List[str], steps: int,
                       eval_every: Optional[int] = None) -> Dict:
  """The YAML overrides of one fine-tuning, on top of the task's Model Garden experiment and
  official_configs/finetune/cpu_offline.yaml."""
  model = {'input_size': [setup.image_size, setup.image_size, 3],
           'num_classes': scenes.NUM_CLASSES,  # COCO ids 1..5; 0 background
           'min_level': setup.min_level, 'max_level': setup.max_levels[task],
           'backbone': backbone,
           'decoder': {'type': 'fpn', 'fpn': {'num_filters': setup.fpn_filters}},
           'norm_activation': {'use_sync_bn': False, 'activation': setup.activation,
                               'norm_epsilon': setup.norm_epsilon}}
  trainer = {'train_steps': steps, 'steps_per_loop': eval_every or steps,
             'summary_interval': eval_every or steps, 'checkpoint_interval': eval_every or steps,
             'validation_interval': eval_every or steps,
             'validation_steps': -(-setup.eval_images // setup.eval_batch),
             'max_to_keep': 1, 'optimizer_config': _schedule(setup, steps)}
  losses = {'l2_weight_decay': setup.weight_decay}
  if task == 'retinanet':
    model['head'] = {'num_convs': 2, 'num_filters': setup.head_filters}
    out = {'task': {
        'model': model, 'annotation_file': data['eval/annotations'], 'losses': losses,
        'init_checkpoint_modules': modules,
        'train_data': {'input_path': data[f'{labels}/coco'], 'global_batch_size': setup.batch,
                       'dtype': 'float32', 'shuffle_buffer_size': 1000},
        'validation_data': {'input_path': data['eval/coco'],
                            'global_batch_size': setup.eval_batch, 'dtype': 'float32'}}}
  else:
    model['head'] = {'level': setup.min_level, 'num_convs': 1,
                     'num_filters': setup.head_filters}
    size = [setup.image_size, setup.image_size]
    out = {'task': {
        'model': model, 'init_checkpoint_modules': modules, 'losses': losses,
        'allow_image_summary': False,  # Model Garden's summaries refuse its own pictures
        'train_data': {'input_path': data[f'{labels}/segmentation'], 'output_size': size,
                       'global_batch_size': setup.batch, 'aug_scale_min': 0.8,
                       'aug_scale_max': 1.25},
        'validation_data': {'input_path': data['eval/segmentation'], 'output_size': size,
                            'global_batch_size': setup.eval_batch,
                            'groundtruth_padded_size': size, 'resize_eval_groundtruth': True,
                            'drop_remainder': False}}}
  out['trainer'] = trainer
  return out


class Pretrainings:
  """The mini table's pretrainings at one budget, as the table fine-tunes them: each export with
  its kernels at random-init norms (`rescale.py`), computed when missing."""

  def __init__(self, setup: 'mini_table.Setup', work_dir: str,
               results_dir: Optional[str] = None):
    self.setup = setup
    self.work_dir = work_dir
    self.results_dir = results_dir
    self._inputs = None

  def export(self, row: Row, seed: int) -> Optional[str]:
    """The rescaled export of the row's pretraining at `seed`, pretraining it first if it is not
    cached (None while another process pretrains it)."""
    if row.pretraining is None:
      return None
    if self._inputs is None:  # the pretraining scenes and probe sets, built on first use
      from tf_detcon.evaluation import labelled_sets  # pylint: disable=g-import-not-at-top
      self._inputs = (mini_table.scene_data(self.work_dir, self.setup),
                      (labelled_sets.synthetic('train', self.setup.probe_train,
                                               self.setup.probe_size),
                       labelled_sets.synthetic('eval', self.setup.probe_eval,
                                               self.setup.probe_size)))
    data, probe_sets = self._inputs
    export = mini_table.ensure_export(row.pretraining, seed, data, probe_sets, self.setup,
                                      self.work_dir, self.results_dir)
    if export is None:
      return None
    rescaled = export + '-rescaled'
    if not manifest.exists(rescaled):
      with common.claimed(rescaled) as mine:
        if not mine:
          return None
        import rescale  # pylint: disable=g-import-not-at-top  (beside this script)
        rescale.rescale(export, rescaled)
    return rescaled


def read_metric(model_dir: str, tag: str) -> List[List[float]]:
  """[[step, value], ...] of the validation metric Model Garden's trainer wrote."""
  return common.read_curve(os.path.join(model_dir, 'validation'), tag)


def norm_summary(export: Optional[str]) -> Optional[Dict[str, float]]:
  """The stem's and the mean kernel-norm ratio (against random init) of a rescaled export before
  its rescale; None for random init."""
  if export is None:
    return None
  record = manifest.read(export).extra.get('rescaled')
  if not record:
    return None
  import rescale  # pylint: disable=g-import-not-at-top  (beside this script)
  return rescale.summary(record['norms'])


def result_key(task: str, labels: str, label: str, pretrain_seed: Optional[int],
               finetune_seed: int, eval_every: Optional[int] = None) -> str:
  seeds = (f'p{pretrain_seed}-' if pretrain_seed is not None else '') + f'f{finetune_seed}'
  return f'{task}-{labels}-{label}-{seeds}' + (f'-curve{eval_every}' if eval_every else '')


def finetune(task: str, labels: str, name: str, pretrain_seed: int, finetune_seed: int,
             setup: Setup, data: Dict[str, str], mini: Pretrainings, out_dir: str,
             results_dir: str, steps: int, eval_every: Optional[int] = None,
             export: Optional[str] = None, label: Optional[str] = None) -> Optional[Dict]:
  """The kept result of one fine-tuning, computing it if nobody else is. By default it
  fine-tunes the row's pretraining (random init has none: `pretrain_seed` is ignored); a control
  passes its own `export` and names it `label`."""
  label = label or name
  row = ROWS[name]
  if row.pretraining is None and export is None:
    pretrain_seed = None
  key = result_key(task, labels, label, pretrain_seed, finetune_seed, eval_every)
  path = os.path.join(results_dir, f'{key}.json')
  kept = common.read_result(path)
  if kept is not None:
    return kept
  os.makedirs(results_dir, exist_ok=True)
  begin = time.time()
  if export is None and row.pretraining is not None:
    export = mini.export(row, pretrain_seed)
    if export is None:
      print(f'{key}: its pretraining is being computed by another run', flush=True)
      return None
  with common.claimed(path) as mine:
    if not mine:
      print(f'{key}: being computed by another run', flush=True)
      return None
    pretrain_seconds = time.time() - begin
    begin = time.time()
    model_dir = os.path.join(out_dir, 'runs', key)
    shutil.rmtree(model_dir, ignore_errors=True)  # an interrupted run restarts from scratch
    os.makedirs(model_dir)
    backbone = {'type': 'resnet', 'resnet': {'model_id': 10,
                                             'depth_multiplier': mini.setup.width}}
    modules = ['backbone', 'decoder'] if row.decoder else ['backbone']
    overrides = finetune_overrides(task, labels, setup, data, backbone, modules, steps,
                                   eval_every)
    override_file = os.path.join(model_dir, 'overrides.yaml')
    with open(override_file, 'w') as f:
      json.dump(overrides, f)  # JSON is YAML
    experiment, tag = TASKS[task]
    command = [sys.executable, os.path.join(common.REPO, 'launch', 'finetune.py'),
               f'--experiment={experiment}', f'--config_file={CPU_OFFLINE}',
               f'--config_file={override_file}', f'--model_dir={model_dir}',
               '--mode=train_and_eval', f'--seed={finetune_seed}']
    if export:
      command.append(f'--init_checkpoint={export}')
    common.run_logged(command, os.path.join(model_dir, 'finetune.log'))
    curve = read_metric(model_dir, tag)
    if not curve or curve[-1][0] != steps:
      raise RuntimeError(f'{key}: no {tag} at step {steps} in {model_dir}/validation')
    out = {'task': task, 'labels': labels, 'row': label, 'pretrain_seed': pretrain_seed,
           'finetune_seed': finetune_seed, 'steps': steps, 'metric': tag,
           'value': curve[-1][1], 'curve': curve, 'export': export,
           'norm_ratio': norm_summary(export), 'seconds': time.time() - begin,
           'pretrain_seconds': pretrain_seconds}
    common.write_result(path, out)
    print(f'{key}: {tag} {out["value"]:.4f} ({out["seconds"] / 60:.1f} min)', flush=True)
    return out


def _columns(results: List[Dict]) -> List[tuple]:
  """(task, labels) pairs present in the results: tasks in TASKS' order, every label first."""
  present = {(r['task'], r['labels']) for r in results}
  return [(t, l) for t in TASKS for l in ('train', 'small') if (t, l) in present]


def _cells(results: List[Dict]) -> Dict[tuple, Dict[tuple, float]]:
  """{(row, task, labels): {(pretraining seed, fine-tuning seed): value}}."""
  cells = {}
  for r in results:
    cells.setdefault((r['row'], r['task'], r['labels']), {})[
        (r['pretrain_seed'], r['finetune_seed'])] = r['value']
  return cells


def comparison(cells: Dict[tuple, Dict[tuple, float]], name: str, other: str, task: str,
               labels: str) -> Optional[paired.Interval]:
  """`name` − `other` over their pairs: the same (pretraining, fine-tuning) seeds, or against
  random init, which has no pretraining, the same fine-tuning seed."""
  mine = cells.get((name, task, labels), {})
  theirs = cells.get((other, task, labels), {})
  if ROWS[other].pretraining is None:
    theirs = {(p, f): theirs[(None, f)] for p, f in mine if (None, f) in theirs}
  return paired.compare(mine, theirs)


def _label(task: str, labels: str) -> str:
  return f'{task} {TASKS[task][1]} ({labels})'


def table(results: List[Dict], names: List[str]) -> str:
  """Mean ± std (ddof 1) over pairs per row, one column per (task, labels), with each export's
  kernel-norm ratio before its rescale; then, per column, each row's paired margin over its base
  and over random init with their 95% intervals."""
  columns = _columns(results)
  cells = _cells(results)
  norms = {}
  for r in results:
    if r.get('norm_ratio'):
      norms.setdefault(r['row'], {})[r['pretrain_seed']] = r['norm_ratio']
  header = f'{"pretraining":<26} {"norm stem/all":>13} ' + ' '.join(
      f'{_label(task, labels):>26}' for task, labels in columns)
  lines = [header, '-' * len(header)]
  for name in names:
    values = [list(cells.get((name, task, labels), {}).values()) for task, labels in columns]
    if not any(values):
      continue
    ratios = list(norms.get(name, {}).values())
    ratio = (f'{np.mean([x["stem"] for x in ratios]):.2f}/'
             f'{np.mean([x["all"] for x in ratios]):.2f}' if ratios else '-')
    lines.append(f'{ROWS[name].label:<26} {ratio:>13} ' + ' '.join(
        (f'{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f} ({len(v)})'
         if v else '-').rjust(26) for v in values))
  minutes = sum(r['seconds'] for r in results) / 60
  lines.append(f'{len(results)} fine-tunings took {minutes:.1f} min in all '
               f'({minutes / max(1, len(results)):.1f} min each); norm: kernel norm over random '
               'init before the rescale, mean over seeds')
  lines.append('')
  lines.append('paired margins, mean [95% interval] (pairs): over its base | over random init; '
               'an ordering holds where its interval is above 0')
  for task, labels in columns:
    lines.append(f'{_label(task, labels)}:')
    for name in names:
      if name == 'random' or not cells.get((name, task, labels)):
        continue
      parts = []
      for other in ([ROWS[name].base] if ROWS[name].base else []) + ['random']:
        found = comparison(cells, name, other, task, labels)
        parts.append(f'vs {ROWS[other].label}: {found}: {found.verdict}' if found else
                     f'vs {ROWS[other].label}: no pairs')
      lines.append(f'  {ROWS[name].label:<26} ' + ' | '.join(parts))
  return '\n'.join(lines)


def plot(results: List[Dict], names: List[str], path: str) -> None:
  """Grouped bars, one group per (task, labels), one bar per row, the pairs' std as error bars."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  columns = _columns(results)
  present = [n for n in names if any(r['row'] == n for r in results)]
  figure, axes = pyplot.subplots(1, len(columns), figsize=(4 * len(columns), 4.5), dpi=120,
                                 squeeze=False)
  for axis, (task, labels) in zip(axes[0], columns):
    for i, name in enumerate(present):
      values = [r['value'] for r in results
                if (r['row'], r['task'], r['labels']) == (name, task, labels)]
      if values:
        axis.bar(i, np.mean(values), yerr=np.std(values, ddof=1) if len(values) > 1 else 0,
                 capsize=2, label=ROWS[name].label, color=pyplot.get_cmap('tab20')(i))
    axis.set_title(f'{task}, {labels} labels', fontsize=9)
    axis.set_ylabel(TASKS[task][1])
    axis.set_xticks([])
  handles, labels = axes[0][0].get_legend_handles_labels()
  figure.legend(handles, labels, fontsize=7, loc='lower center', ncol=min(6, len(labels)))
  common.save_figure(figure, path, rect=(0, 0.12, 1, 1))  # the legend below the panels


# The budget rule, fixed before any pretrained row was fine-tuned (benchmarks/README.md): the
# smallest candidate whose schedule brings random init, on every label, to within the tolerance
# of its result with the reference schedule, on both tasks (mean over the seeds, paired by seed);
# the largest candidate if none does. Random init is the row slowest to converge.
BUDGET_CANDIDATES = (600, 1200, 1800)
BUDGET_REFERENCE = 2400
BUDGET_TOLERANCE = 0.02
BUDGET_SEEDS = (0, 1)


def budget_rule(values: Dict[tuple, float], tasks: List[str]) -> tuple:
  """(chosen steps, lines) from {(task, steps, seed): random init's metric}."""
  lines, chosen = [], None
  for steps in BUDGET_CANDIDATES:
    gaps = {task: float(np.mean([values[(task, BUDGET_REFERENCE, seed)] -
                                 values[(task, steps, seed)] for seed in BUDGET_SEEDS]))
            for task in tasks}
    flat = all(gap <= BUDGET_TOLERANCE for gap in gaps.values())
    lines.append(f'{steps} steps: ' + ', '.join(
        f'{task} {TASKS[task][1]} ' + ' / '.join(
            f'{values[(task, steps, seed)]:.3f}' for seed in BUDGET_SEEDS)
        + f' ({gaps[task]:+.3f} below {BUDGET_REFERENCE})' for task in tasks)
        + (' <- within the tolerance' if flat else ''))
    if flat and chosen is None:
      chosen = steps
  return chosen or BUDGET_CANDIDATES[-1], lines


def kept_results(results_dir: str, chosen: Dict[str, List[str]], pretrain_seeds: List[int],
                 passes: int, setup: Setup) -> List[Dict]:
  """The kept results of the fine-tunings that `main` would run, computing none."""
  found = {}
  for k in range(passes):
    for p in pretrain_seeds:
      for name in chosen['rows']:
        for labels in chosen['labels']:
          for task in chosen['tasks']:
            pretrain_seed = None if ROWS[name].pretraining is None else p
            key = result_key(task, labels, name, pretrain_seed, p + PRETRAIN_SEEDS * k)
            kept = common.read_result(os.path.join(results_dir, f'{key}.json'))
            if kept is not None and kept['steps'] == steps_for(setup, labels):
              found[key] = kept
  return list(found.values())


def choose(parser: argparse.ArgumentParser, flag: str, value: str, known) -> List[str]:
  """The names of a comma-separated flag, or a one-line parser error naming the unknown ones."""
  names = [n.strip() for n in value.split(',') if n.strip()]
  unknown = sorted(set(names) - set(known))
  if unknown or not names:
    parser.error(f'--{flag}: unknown {unknown or "(empty)"}; known: {", ".join(known)}')
  return names


def seeds_of(parser: argparse.ArgumentParser, flag: str, value: str) -> List[int]:
  """A comma-separated list of seeds (integers >= 0), or a one-line parser error."""
  try:
    seeds = [int(v) for v in value.split(',') if v.strip()]
  except ValueError:
    seeds = []
  if not seeds or min(seeds) < 0:
    parser.error(f'--{flag}: a comma-separated list of seeds >= 0, got {value!r}')
  return seeds


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--work_dir', default=common.WORK_DIR, help='the cache of runs')
  parser.add_argument('--results_dir', default=None,
                      help='where results are kept (default: benchmarks/results in the '
                           'repository; with --smoke, --work_dir)')
  parser.add_argument('--pretrain_steps', type=int, default=2000,
                      help="the mini table's pretraining budget whose exports are fine-tuned")
  parser.add_argument('--pretrain_seeds', default='0,1,2')
  parser.add_argument('--passes', type=int, default=1,
                      help='fine-tuning seeds per pretraining seed: pass k uses p + 3k')
  parser.add_argument('--rows', default=None,
                      help='default: every row (--smoke: DeCon-SL with its FPN)')
  parser.add_argument('--tasks', default=','.join(TASKS))
  parser.add_argument('--labels', default=None,
                      help="'train': every labelled image; 'small': the 10%% subset "
                           "(default: both; --smoke: train)")
  parser.add_argument('--steps', type=int, default=None, help='fine-tuning steps')
  parser.add_argument('--budget', action='store_true',
                      help='apply the budget rule: fine-tune random init at each candidate '
                           'budget and the reference, and print the budget it chooses')
  parser.add_argument('--smoke', action='store_true', help='tiny, for CI: one seed, 2 steps')
  parser.add_argument('--kept', action='store_true',
                      help='print the table of the results kept so far; compute nothing')
  parser.add_argument('--plot', default='', help='also write the table as a PNG to this path')
  args = parser.parse_args()
  setup = dataclasses.replace(SMOKE if args.smoke else Setup())
  if args.steps:
    if args.steps < 1:
      parser.error(f'--steps must be positive, got {args.steps}')
    setup.steps = args.steps
  if args.passes < 1:
    parser.error(f'--passes must be positive, got {args.passes}')
  if args.rows is None:
    args.rows = 'decon_sl_fpn' if args.smoke else ','.join(ROWS)
  if args.labels is None:
    args.labels = 'train' if args.smoke else 'train,small'
  lists = {'rows': (args.rows, ROWS), 'tasks': (args.tasks, TASKS),
           'labels': (args.labels, ('train', 'small'))}
  chosen = {flag: choose(parser, flag, value, known) for flag, (value, known) in lists.items()}
  pretrain_seeds = [0] if args.smoke else seeds_of(parser, 'pretrain_seeds', args.pretrain_seeds)
  if args.plot:
    common.check_plot_path(parser, args.plot)

  mini_setup = dataclasses.replace(mini_table.SMOKE if args.smoke else mini_table.Setup())
  if not args.smoke:
    mini_setup.steps = args.pretrain_steps
  budget_key = f'steps{mini_setup.steps}-scenes{mini_setup.scenes}'
  mini_dir = os.path.join(args.work_dir, budget_key)
  results_root = args.results_dir or (args.work_dir if args.smoke else common.RESULTS_DIR)
  mini = Pretrainings(mini_setup, mini_dir, results_root)
  out_dir = os.path.join(mini_dir, f'transfer-v{VERSION}')
  results_dir = os.path.join(results_root, f'transfer-v{VERSION}',
                             f'pretrain{mini_setup.steps}-finetune{setup.steps}')
  if args.kept and not args.budget:
    results = kept_results(results_dir, chosen, pretrain_seeds, args.passes, setup)
    planned = len(chosen['labels']) * len(chosen['tasks']) * args.passes * (
        len(pretrain_seeds) * sum(ROWS[n].pretraining is not None for n in chosen['rows'])
        + len(pretrain_seeds) * ('random' in chosen['rows']))
    print(f'kept in {results_dir}: {len(results)} of {planned} fine-tunings')
    print(table(results, chosen['rows']))
    return
  data = labelled_data(args.work_dir, setup)

  if args.budget:
    budget_dir = os.path.join(results_root, f'transfer-v{VERSION}', 'budget')
    values = {}
    for steps in (*BUDGET_CANDIDATES, BUDGET_REFERENCE):
      for seed in BUDGET_SEEDS:
        for task in chosen['tasks']:
          out = finetune(task, 'train', 'random', 0, seed, setup, data, mini, out_dir,
                         budget_dir, steps, label=f'random_{steps}steps')
          if out is not None:
            values[(task, steps, seed)] = out['value']
    needed = len(BUDGET_CANDIDATES + (BUDGET_REFERENCE,)) * len(BUDGET_SEEDS) * len(
        chosen['tasks'])
    if len(values) < needed:
      print(f'{needed - len(values)} budget runs are being computed by another run')
      return
    steps, lines = budget_rule(values, chosen['tasks'])
    print(f'random init on every label, fine-tuning seeds {BUDGET_SEEDS}, against '
          f'{BUDGET_REFERENCE} steps; tolerance {BUDGET_TOLERANCE}:')
    print('\n'.join(lines))
    print(f'budget: {steps} steps')
    return

  results = []
  # Row by row, each pretraining's fine-tunings together: a session that ends leaves few
  # pretrainings whose fine-tunings are unfinished (their exports are a cache).
  for k in range(1 if args.smoke else args.passes):
    for p in pretrain_seeds:
      for name in chosen['rows']:
        for labels in chosen['labels']:
          for task in chosen['tasks']:
            out = finetune(task, labels, name, p, p + PRETRAIN_SEEDS * k, setup, data, mini,
                           out_dir, results_dir, steps_for(setup, labels))
            if out is not None:
              results.append(out)
  print()
  print(f'{setup.steps} fine-tuning steps of batch {setup.batch} at {setup.image_size} px on '
        f'{setup.train_images} labelled scenes (small: {setup.small_fraction:.0%} of them for '
        f'{steps_for(setup, "small")} steps), evaluated on {setup.eval_images}; pretraining '
        f'{mini_setup.steps} steps; {len(pretrain_seeds)} pretraining seeds x '
        f'{args.passes} passes')
  print(table(results, chosen['rows']))
  if args.plot and results:
    plot(results, chosen['rows'], args.plot)
    print(f'transfer table written to {args.plot}')


if __name__ == '__main__':
  main()
