r"""The miniature transfer table: every pretraining of the mini table fine-tuned end to end through
Model Garden's own tasks, by `launch/finetune.py`, the path a COCO user takes, scaled down.

  .venv/bin/python benchmarks/transfer_table.py --pretrain_steps=2000        # the full table
  .venv/bin/python benchmarks/transfer_table.py --budget --tasks=retinanet   # choose the budget
  .venv/bin/python benchmarks/transfer_table.py --smoke                      # CI's check

The papers make their claims after fine-tuning: DetCon (§4.2, Table 2) and DetCo (§4.2, Table 5)
on COCO detection, DetCon (§3.3) on PASCAL VOC segmentation, DeCon (§4) with its pretrained FPN
decoder transferred as well, and on small fine-tuning sets. In miniature:

- detection: Model Garden's `retinanet_resnetfpn_coco` (one stage, as DetCo Table 5), box AP by
  pycocotools on held-out scenes;
- semantic segmentation: Model Garden's `seg_resnetfpn_pascal` (an FPN decoder, so that DeCon's
  decoder transfers), mean IoU on held-out scenes;
- both on every labelled fine-tuning image, and on 10% of them (DeCon's small-data setting);
- DeCon in two rows: its encoder alone, and its encoder with its pretrained FPN (levels 3–6 of
  its P2–P6 FPN load into the tasks' P3–P7 FPN; `tf_detcon.transfer` says what does not load).

The labelled scenes (objects with classes, instance masks and boxes) are disjoint from the
pretraining and probe scenes; they are written in COCO format and converted with Model Garden's
`create_coco_tf_record`, and the segmentation records with Model Garden's `TfExampleBuilder`.
Each (task, labels, row, seed) result is cached under `<work_dir>/transfer-v<VERSION>/`, so the
table resumes and can be built over several sessions; the pretrainings are the mini table's
(`mini_table.run_one`, cached there) and are computed first when missing.
"""

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tf_detcon import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import mini_table
from tf_detcon.data.offline import scenes
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = 1
CPU_OFFLINE = os.path.join(REPO, 'official_configs', 'finetune', 'cpu_offline.yaml')


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
  steps: int = 600
  eval_batch: int = 20
  fpn_filters: int = 32  # the mini table's DeCon FPN: pretrained and fine-tuned FPNs must match
  head_filters: int = 32
  # DetCon A.3's COCO rate, 0.3 per 256 images, scaled to the batch; warmup then /10 at 2/3 and
  # 8/9 of training, as the COCO recipes in official_configs/finetune.
  base_lr: float = 0.3
  warmup_fraction: float = 0.05


SMOKE = Setup(train_images=8, eval_images=4, batch=2, steps=2, eval_batch=2, small_fraction=0.5)

TASKS = {'retinanet': ('retinanet_resnetfpn_coco', 'AP'),
         'segmentation': ('seg_resnetfpn_pascal', 'mean_iou')}


def _run(command: List[str], log_path: str, timeout: Optional[float] = None) -> None:
  """Runs `command` quietly, its output in `log_path`; raises with the log's tail on failure."""
  with open(log_path, 'w') as log:
    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'), check=False)
  if result.returncode:
    with open(log_path) as f:
      tail = f.read()[-3000:]
    raise RuntimeError(f'{command[1]} failed (rc {result.returncode}), see {log_path}:\n{tail}')


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
      _run([sys.executable, '-m', 'official.vision.data.create_coco_tf_record',
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
           'min_level': 3, 'max_level': 7,
           'backbone': backbone,
           'decoder': {'type': 'fpn', 'fpn': {'num_filters': setup.fpn_filters}},
           'norm_activation': {'use_sync_bn': False}}
  trainer = {'train_steps': steps, 'steps_per_loop': eval_every or steps,
             'summary_interval': eval_every or steps, 'checkpoint_interval': eval_every or steps,
             'validation_interval': eval_every or steps,
             'validation_steps': -(-setup.eval_images // setup.eval_batch),
             'max_to_keep': 1, 'optimizer_config': _schedule(setup, steps)}
  if task == 'retinanet':
    model['head'] = {'num_convs': 2, 'num_filters': setup.head_filters}
    out = {'task': {
        'model': model, 'annotation_file': data['eval/annotations'],
        'init_checkpoint_modules': modules,
        'train_data': {'input_path': data[f'{labels}/coco'], 'global_batch_size': setup.batch,
                       'dtype': 'float32', 'shuffle_buffer_size': 1000},
        'validation_data': {'input_path': data['eval/coco'],
                            'global_batch_size': setup.eval_batch, 'dtype': 'float32'}}}
  else:
    model['head'] = {'level': 3, 'num_convs': 1, 'num_filters': setup.head_filters}
    size = [setup.image_size, setup.image_size]
    out = {'task': {
        'model': model, 'init_checkpoint_modules': modules,
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
  """The mini table's pretrainings at one budget: its cached runs, computed when missing."""

  def __init__(self, setup: 'mini_table.Setup', work_dir: str):
    self.setup = setup
    self.work_dir = work_dir
    self._inputs = None

  def export(self, row: Row, seed: int) -> Optional[str]:
    """The export of the row's pretraining at `seed`, pretraining it first if it is not cached
    (None while another process pretrains it)."""
    if row.pretraining is None:
      return None
    path = os.path.join(self.work_dir, f'runs-v{mini_table.RESULTS_VERSION}',
                        f'{row.pretraining}-seed{seed}', 'export')
    if self._inputs is None:  # the pretraining scenes and probe sets, built on first use
      from tf_detcon.evaluation import labelled_sets  # pylint: disable=g-import-not-at-top
      self._inputs = (mini_table.scene_data(self.work_dir, self.setup),
                      (labelled_sets.synthetic('train', self.setup.probe_train,
                                          self.setup.probe_size),
                       labelled_sets.synthetic('eval', self.setup.probe_eval, self.setup.probe_size)))
    data, probe_sets = self._inputs
    out = mini_table.run_one(row.pretraining, seed, data, probe_sets, self.setup,
                             self.work_dir)
    return None if out is None else path


def read_metric(model_dir: str, tag: str) -> List[List[float]]:
  """[[step, value], ...] of the validation metric Model Garden's trainer wrote."""
  return mini_table.read_curve(os.path.join(model_dir, 'validation'), tag)


def finetune(task: str, labels: str, name: str, seed: int, setup: Setup, data: Dict[str, str],
             mini: Pretrainings, out_dir: str, steps: int, eval_every: Optional[int] = None,
             export: Optional[str] = None, label: Optional[str] = None) -> Optional[Dict]:
  """The cached result of one fine-tuning, computing it if nobody else is. By default it
  fine-tunes the row's pretraining; a control passes its own `export` and names it `label`."""
  label = label or name
  key = f'{task}-{labels}-{label}-seed{seed}' + (f'-curve{eval_every}' if eval_every else '')
  path = os.path.join(out_dir, 'results', f'{key}.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  row = ROWS[name]
  begin = time.time()
  if export is None:
    export = mini.export(row, seed)
    if row.pretraining is not None and export is None:
      print(f'{key}: its pretraining is being computed by another run', flush=True)
      return None
  with mini_table.claimed(path) as mine:
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
    command = [sys.executable, os.path.join(REPO, 'launch', 'finetune.py'),
               f'--experiment={experiment}', f'--config_file={CPU_OFFLINE}',
               f'--config_file={override_file}', f'--model_dir={model_dir}',
               '--mode=train_and_eval']  # Model Garden's launchers seed nothing; nor do we
    if export:
      command.append(f'--init_checkpoint={export}')
    _run(command, os.path.join(model_dir, 'finetune.log'))
    curve = read_metric(model_dir, tag)
    if not curve or curve[-1][0] != steps:
      raise RuntimeError(f'{key}: no {tag} at step {steps} in {model_dir}/validation')
    out = {'task': task, 'labels': labels, 'row': label, 'seed': seed, 'steps': steps,
           'metric': tag, 'value': curve[-1][1], 'curve': curve, 'export': export,
           'seconds': time.time() - begin, 'pretrain_seconds': pretrain_seconds}
    with open(path + '.tmp', 'w') as f:
      json.dump(out, f, indent=2)
    os.replace(path + '.tmp', path)
    print(f'{key}: {tag} {out["value"]:.4f} ({out["seconds"] / 60:.1f} min)', flush=True)
    return out


def _columns(results: List[Dict]) -> List[tuple]:
  """(task, labels) pairs present in the results: tasks in TASKS' order, every label first."""
  present = {(r['task'], r['labels']) for r in results}
  return [(t, l) for t in TASKS for l in ('train', 'small') if (t, l) in present]


def table(results: List[Dict], names: List[str]) -> str:
  """Mean ± std per row, one column per (task, labels), then each paper ordering: holds when the
  row's mean beats the other's by more than the larger seed std."""
  columns = _columns(results)
  cells = {}
  for r in results:
    cells.setdefault((r['row'], r['task'], r['labels']), []).append(r['value'])
  header = f'{"pretraining":<26} ' + ' '.join(
      f'{f"{task} {TASKS[task][1]} ({labels})":>26}' for task, labels in columns)
  lines = [header, '-' * len(header)]
  for name in names:
    values = [cells.get((name, task, labels)) for task, labels in columns]
    if not any(values):
      continue
    lines.append(f'{ROWS[name].label:<26} ' + ' '.join(
        (f'{np.mean(v):.3f} ± {np.std(v):.3f} ({len(v)})' if v else '-').rjust(26)
        for v in values))
  minutes = sum(r['seconds'] for r in results) / 60
  lines.append(f'{len(results)} fine-tunings took {minutes:.1f} min in all '
               f'({minutes / max(1, len(results)):.1f} min each)')
  lines.append('')
  for task, labels in columns:
    for name in names:
      for other in ([ROWS[name].base] if ROWS[name].base else []) + (
          ['random'] if name != 'random' else []):
        mine, theirs = cells.get((name, task, labels)), cells.get((other, task, labels))
        if not mine or not theirs:
          continue
        margin = np.mean(mine) - np.mean(theirs)
        spread = max(np.std(mine), np.std(theirs))
        if min(len(mine), len(theirs)) < 2:
          verdict = 'one seed: no spread to judge it by'
        else:
          verdict = f'{"holds" if margin > spread else "does not hold"}: std {spread:.3f}'
        lines.append(f'{task} ({labels}): {ROWS[name].label} vs {ROWS[other].label}: '
                     f'{margin:+.3f} ({verdict})')
  return '\n'.join(lines)


def plot(results: List[Dict], names: List[str], path: str) -> None:
  """Grouped bars, one group per (task, labels), one bar per row, seed std as error bars."""
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
        axis.bar(i, np.mean(values), yerr=np.std(values), capsize=2, label=ROWS[name].label,
                 color=pyplot.get_cmap('tab20')(i))
    axis.set_title(f'{task}, {labels} labels', fontsize=9)
    axis.set_ylabel(TASKS[task][1])
    axis.set_xticks([])
  handles, labels = axes[0][0].get_legend_handles_labels()
  figure.legend(handles, labels, fontsize=7, loc='lower center', ncol=min(6, len(labels)))
  mini_table.save_figure(figure, path, rect=(0, 0.12, 1, 1))  # the legend below the panels


def choose(parser: argparse.ArgumentParser, flag: str, value: str, known) -> List[str]:
  """The names of a comma-separated flag, or a one-line parser error naming the unknown ones."""
  names = [n.strip() for n in value.split(',') if n.strip()]
  unknown = sorted(set(names) - set(known))
  if unknown or not names:
    parser.error(f'--{flag}: unknown {unknown or "(empty)"}; known: {", ".join(known)}')
  return names


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--work_dir', default=mini_table.WORK_DIR)
  parser.add_argument('--pretrain_steps', type=int, default=2000,
                      help="the mini table's pretraining budget whose exports are fine-tuned")
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--rows', default=None,
                      help='default: every row (--smoke: DeCon-SL with its FPN)')
  parser.add_argument('--tasks', default=','.join(TASKS))
  parser.add_argument('--labels', default=None,
                      help="'train': every labelled image; 'small': the 10%% subset "
                           "(default: both; --smoke: train)")
  parser.add_argument('--steps', type=int, default=None, help='fine-tuning steps')
  parser.add_argument('--budget', action='store_true',
                      help='fine-tune random init for 4x --steps, evaluating 8 times, and print '
                           'the metric by step (how the budget is chosen)')
  parser.add_argument('--smoke', action='store_true', help='tiny, for CI: one seed, 2 steps')
  parser.add_argument('--plot', default='', help='also write the table as a PNG to this path')
  args = parser.parse_args()
  setup = dataclasses.replace(SMOKE if args.smoke else Setup())
  if args.steps:
    if args.steps < 1:
      parser.error(f'--steps must be positive, got {args.steps}')
    setup.steps = args.steps
  if args.rows is None:
    args.rows = 'decon_sl_fpn' if args.smoke else ','.join(ROWS)
  if args.labels is None:
    args.labels = 'train' if args.smoke else 'train,small'
  lists = {'rows': (args.rows, ROWS), 'tasks': (args.tasks, TASKS),
           'labels': (args.labels, ('train', 'small'))}
  chosen = {flag: choose(parser, flag, value, known) for flag, (value, known) in lists.items()}
  if args.plot:
    mini_table.check_plot_path(parser, args.plot)
  seeds = 1 if args.smoke else args.seeds

  mini_setup = dataclasses.replace(mini_table.SMOKE if args.smoke else mini_table.Setup())
  if not args.smoke:
    mini_setup.steps = args.pretrain_steps
  mini_dir = os.path.join(args.work_dir, f'steps{mini_setup.steps}-scenes{mini_setup.scenes}')
  mini = Pretrainings(mini_setup, mini_dir)
  out_dir = os.path.join(mini_dir, f'transfer-v{VERSION}')
  data = labelled_data(args.work_dir, setup)

  if args.budget:
    for task in chosen['tasks']:
      out = finetune(task, 'train', 'random', 0, setup, data, mini, out_dir, 4 * setup.steps,
                     eval_every=setup.steps // 2)
      print(f'{task}, random init, {TASKS[task][1]} by fine-tuning step: ' + ', '.join(
          f'{int(step)}: {value:.3f}' for step, value in out['curve']))
    return

  results = []
  for seed in range(seeds):
    for labels in chosen['labels']:
      for task in chosen['tasks']:
        for name in chosen['rows']:
          out = finetune(task, labels, name, seed, setup, data, mini, out_dir,
                         steps_for(setup, labels))
          if out is not None:
            results.append(out)
  print()
  print(f'{setup.steps} fine-tuning steps of batch {setup.batch} at {setup.image_size} px on '
        f'{setup.train_images} labelled scenes (small: {setup.small_fraction:.0%} of them for '
        f'{steps_for(setup, "small")} steps), evaluated on {setup.eval_images}; pretraining '
        f'{mini_setup.steps} steps')
  print(table(results, chosen['rows']))
  if args.plot and results:
    plot(results, chosen['rows'], args.plot)
    print(f'transfer table written to {args.plot}')


if __name__ == '__main__':
  main()
