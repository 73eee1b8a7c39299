r"""A miniature of the papers' comparisons on 2 CPU cores: every method pretrained with the same
step budget on synthetic multi-object scenes, then probed densely with frozen features.

  .venv/bin/python benchmarks/mini_table.py                    # the full table (< 2 h)
  .venv/bin/python benchmarks/mini_table.py --methods=simclr,detcon_s_fh --seeds=1
  .venv/bin/python benchmarks/mini_table.py --smoke            # seconds: CI's check

Each (method, seed) result is kept in the repository, `benchmarks/results/mini-v<RESULTS_VERSION>/`
(commit it), and its run and export in `<work_dir>` (a cache), so that an interrupted table
resumes where it stopped, over several sessions, and several background runs (e.g. one per
--methods subset) can fill it; a result or run being computed is claimed by a lock file. Every
pretraining is deterministic (`deterministic: true` and the seed), so an export lost with the cache
is pretrained again to the same bytes (its digest is in the result). The table is printed in the
style of DetCon Table 4 (mean ± std over seeds), followed by the orderings the papers claim: the
mean paired difference over seeds with its 95% interval (`paired.py`); an ordering holds where
the interval excludes 0.

The miniature (docs: benchmarks/README.md): scenes of 128 px with FH masks (scale 1000, σ 0.8,
min size 150, chosen for the best ABO against the scenes' ground truth) or ground-truth masks;
ResNet-10 at half width; 96 px views; batch 32; heads 256 → 64; queues of 1024; DetCon pools
res4, a 6×6 grid (the paper's res5 at 224 px is 7×7; res5 at 96 px is 3×3), and SimCLR and BYOL
pool res4 globally, MoCo v2 contrasts res5 and DetCo res2–res5 with the paper's level weights
(0.1, 0.4, 0.7, 1), as their papers do (global heads pool each level); the learning rate of
batch 256 (the linear scaling rule's ×32/256 leaves these short runs untrained); the same 1000
steps for all, chosen by a sweep of budgets (benchmarks/README.md: at 500 steps BYOL and MoCo v2
stayed at random init's level).
"""

import argparse
import dataclasses
import hashlib
import os
import shutil
import time
from typing import Dict, List, Optional

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import common
import paired
import tf_keras
from official.core import exp_factory
from official.modeling.hyperparams import params_dict
from tf_detcon.configs import data as data_config
from tf_detcon.configs import experiments
from tf_detcon.configs import optimization
from tf_detcon.configs import pretrain
from tf_detcon.data import records
from tf_detcon.data.offline import mask_report
from tf_detcon.data.offline import masks
from tf_detcon.data.offline import precompute
from tf_detcon.data.offline import scenes
from tf_detcon.evaluation import labelled_sets
from tf_detcon.evaluation import frozen
from tf_detcon.evaluation import probes
from tf_detcon.exports import manifest
from tf_detcon.modeling.blocks import encoders as blocks
from tf_detcon.training import trainer
# pylint: enable=g-import-not-at-top,wrong-import-position

FH_SETTING = (1000.0, 0.8, 150)
# Results and runs are cached under this version: bump it when a change to augmentation, a
# method or the probes makes earlier results stale. 2: each paper family's colour jitter
# (docs/design.md §2), DeCon's channel dropout on the FPN's skip laterals (§5), MoCo's
# per-replica query BN and DetCo's four levels at the paper's weights (§4).
# 3: DeCon's FPN at P2–P5 (its authors' pretraining FPN), deterministic pretraining, results
# kept in the repository.
RESULTS_VERSION = 3


@dataclasses.dataclass
class Method:
  label: str
  experiment: Optional[str]  # None: random init
  masks: str = 'fh'  # which stored masks it trains with: 'fh' or 'gt'
  base: Optional[str] = None  # the method whose mean it must beat


METHODS = {
    'random': Method('random init', None),
    'simclr': Method('SimCLR', 'simclr_tiny'),
    'detcon_s_fh': Method('DetCon_S (FH)', 'detcon_s_tiny', 'fh', 'simclr'),
    'detcon_s_gt': Method('DetCon_S (GT)', 'detcon_s_tiny', 'gt', 'simclr'),
    'byol': Method('BYOL', 'byol_tiny'),
    'detcon_b': Method('DetCon_B (FH)', 'detcon_b_tiny', 'fh', 'byol'),
    'mocov2': Method('MoCo v2', 'mocov2_tiny'),
    'detco': Method('DetCo', 'detco_tiny', 'fh', 'mocov2'),
    'decon_sl': Method('DeCon-SL (DetCon_S, FH)', 'decon_sl_detcon_s_tiny', 'fh', 'detcon_s_fh'),
    'decon_ml': Method('DeCon-ML (DetCon_S, FH)', 'decon_ml_detcon_s_tiny', 'fh', 'detcon_s_fh'),
}


@dataclasses.dataclass
class Setup:
  steps: int = 1000
  scenes: int = 2000
  scene_size: int = 128
  view_size: int = 96
  level: str = '4'
  batch: int = 32
  width: float = 0.5
  probe_size: int = 96
  probe_train: int = 100
  probe_eval: int = 100
  probe_levels: tuple = ('3', '4')
  probe_steps: int = 500
  # The learning curve: the linear probe of `curve_level` every `curve_interval` steps, run by
  # the trainer's periodic probe (task.validation_data) on the same probe sets.
  curve_interval: int = 250
  curve_level: str = '3'


SMOKE = Setup(steps=3, scenes=16, probe_train=4, probe_eval=4, probe_steps=20, curve_interval=3)


def scene_data(work_dir: str, setup: Setup) -> Dict[str, str]:
  """{'fh': shard pattern, 'gt': shard pattern} of the pretraining scenes, built once."""
  specs = {'fh': precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=(FH_SETTING,))),
           'gt': precompute.MaskSpec(kind='gt')}
  patterns = {}
  for kind, spec in specs.items():
    out = os.path.join(work_dir, f'scenes-{setup.scenes}x{setup.scene_size}-{kind}')
    if not os.path.exists(os.path.join(out, records.MANIFEST_NAME)):
      print(f'writing {setup.scenes} scenes with {kind} masks to {out}', flush=True)
      precompute.Job(source=scenes.SceneSource(setup.scenes, setup.scene_size), out_dir=out,
                     num_shards=min(8, setup.scenes), spec=spec).run()
    patterns[kind] = os.path.join(out, 'pretrain-*.tfrecord')
  return patterns


def fh_quality(setup: Setup, count: int = 200) -> float:
  """ABO of the FH masks against the scenes' ground truth (DetCon Fig. 7's x-axis)."""
  overlaps = []
  for _, s in scenes.scenes('pretrain', min(count, setup.scenes), setup.scene_size):
    overlaps += mask_report.best_overlaps(masks.fh_mask(s.image, *FH_SETTING),
                                          s.instance_masks())
  return float(np.mean(overlaps))


def mini_config(method: Method, data: Dict[str, str], setup: Setup, seed: int,
                override: str = '') -> pretrain.PretrainExperiment:
  """The registered CPU experiment of a method, at the miniature's settings, then `override`
  (Model Garden's `--params_override` format)."""
  params = exp_factory.get_exp_config(method.experiment)
  task = params.task
  task.train_data.override({'input_path': data[method.masks], 'global_batch_size': setup.batch,
                            'shuffle_buffer_size': 1000, 'cycle_length': 8, 'seed': seed,
                            'deterministic': True,
                            'view1': {'output_size': setup.view_size},
                            'view2': {'output_size': setup.view_size}})
  task.encoder.backbone.resnet.depth_multiplier = setup.width
  task.method.get().miniature(task, setup.level)  # the method's own heads and sizes
  # The papers' schedule over `steps` (10% warmup where it has one) at the peak learning rate
  # of their batch-256 setting (see the module doc).
  config = params.trainer.optimizer_config
  old_batch, old_steps = experiments.TINY_BATCH, params.trainer.train_steps
  optimization.reschedule(config, old_steps, setup.steps,
                          setup.steps // 10 if config.warmup.type else 0,
                          lr_scale=256 / old_batch)
  params.trainer.override({'train_steps': setup.steps, 'steps_per_loop': 50,
                           'checkpoint_interval': setup.curve_interval, 'summary_interval': 0,
                           'validation_interval': setup.curve_interval})
  task.validation_data = data_config.ProbeDataConfig(
      source='synthetic', image_size=setup.probe_size, level=setup.curve_level,
      num_train=setup.probe_train, num_eval=setup.probe_eval, fit_steps=setup.probe_steps)
  params.runtime.distribution_strategy = 'off'
  task.log_every_steps = 100
  if override:
    params_dict.override_params_dict(params, override, is_strict=True)
  return params


def result_path(name: str, seed: int, setup: Setup, results_dir: str, override: str = '') -> str:
  folder = os.path.join(results_dir, f'mini-v{RESULTS_VERSION}',
                        f'steps{setup.steps}-scenes{setup.scenes}')
  if override:
    folder = os.path.join(folder, f'override-{hashlib.sha1(override.encode()).hexdigest()[:8]}')
  return os.path.join(folder, f'{name}-seed{seed}.json')


def pretrain(name: str, seed: int, data: Dict[str, str], setup: Setup, work_dir: str,
             override: str = '') -> Optional[str]:
  """The export of (method, seed), pretraining it (or resuming its run) when the cache lacks
  it; None while another process pretrains it."""
  model_dir = os.path.join(work_dir, f'runs-v{RESULTS_VERSION}', f'{name}-seed{seed}')
  export = os.path.join(model_dir, 'export')
  if manifest.exists(export):
    return export
  os.makedirs(os.path.dirname(model_dir), exist_ok=True)
  with common.claimed(model_dir + '.run') as mine:
    if not mine:
      print(f'{name} seed {seed}: being pretrained by another run', flush=True)
      return None
    print(f'training {name} seed {seed}', flush=True)
    tf_keras.utils.set_random_seed(seed)
    run = trainer.Run(mini_config(METHODS[name], data, setup, seed, override), model_dir)
    run.train()
    return run.export()


def run_one(name: str, seed: int, data: Dict[str, str], probe_sets, setup: Setup,
            work_dir: str, override: str = '', results_dir: Optional[str] = None
            ) -> Optional[Dict]:
  """The kept result of (method, seed) (in `results_dir`, default the repository's), computing
  it if nobody else is."""
  path = result_path(name, seed, setup, results_dir or common.RESULTS_DIR, override)
  kept = common.read_result(path)
  if kept is not None:
    return kept
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with common.claimed(path) as mine:
    if not mine:
      print(f'{name} seed {seed}: being computed by another run', flush=True)
      return None
    method = METHODS[name]
    begin = time.time()
    tf_keras.utils.set_random_seed(seed)
    curve, digest = [], None
    if method.experiment is None:  # the same encoder as the others', randomly initialised
      encoder_cfg = mini_config(METHODS['simclr'], data, setup, seed).task.encoder
      encoder = frozen.from_keras(f'random-seed{seed}', blocks.build_backbone(encoder_cfg))
    else:
      export = pretrain(name, seed, data, setup, work_dir, override)
      if export is None:
        return None
      encoder = frozen.load(export)
      digest = common.export_digest(export)
      params = mini_config(method, data, setup, seed, override)
      curve = common.read_curve(os.path.join(os.path.dirname(export),
                                      params.trainer.validation_summary_subdir),
                         f'probe/linear_level{setup.curve_level}_miou')
    train, evaluation = probe_sets
    results = probes.evaluate(encoder, train.images, train.labels, evaluation.images,
                              evaluation.labels, scenes.NUM_CLASSES, setup.probe_levels,
                              seed=seed, steps=setup.probe_steps)
    out = {'method': name, 'seed': seed, 'steps': setup.steps, 'results': results,
           'curve': curve, 'seconds': time.time() - begin, 'export_digest': digest}
    common.write_result(path, out)
    print(f'{name} seed {seed}: {time.time() - begin:.0f}s '
          + ' '.join(f'{k}={v["miou"]:.4f}' for k, v in results.items()), flush=True)
    return out


def ensure_export(name: str, seed: int, data: Dict[str, str], probe_sets, setup: Setup,
                  work_dir: str, results_dir: Optional[str] = None) -> Optional[str]:
  """The export of (method, seed) for fine-tuning: its result is computed first if missing; an
  export lost with the cache is pretrained again, and must match the result's digest."""
  kept = run_one(name, seed, data, probe_sets, setup, work_dir, results_dir=results_dir)
  if kept is None:
    return None
  export = pretrain(name, seed, data, setup, work_dir)
  if export is None:
    return None
  if kept.get('export_digest') and common.export_digest(export) != kept['export_digest']:
    shutil.rmtree(os.path.dirname(export))
    raise RuntimeError(f'{name} seed {seed}: pretrained again, its export differs from the one '
                       'its kept result was measured on (another machine or code?); removed')
  return export


def table(results: Dict[str, List[Dict]], setup: Setup) -> str:
  keys = [f'{probe}/level{level}' for level in setup.probe_levels for probe in ('linear', 'knn')]
  header = f'{"method":<26} {"seeds":>5} ' + ' '.join(
      f'{k.replace("/level", " L") + " mIoU":>18}' for k in keys) + f' {"min/run":>8}'
  lines = [header, '-' * len(header)]
  for name, method in METHODS.items():
    runs = results.get(name, [])
    if not runs:
      continue
    cells = []
    for key in keys:
      values = np.array([r['results'][key]['miou'] for r in runs])
      cells.append(f'{values.mean():.3f} ± {values.std():.3f}'.rjust(18))
    minutes = np.mean([r['seconds'] for r in runs]) / 60
    lines.append(f'{method.label:<26} {len(runs):>5} ' + ' '.join(cells) + f' {minutes:>8.1f}')
  every = [r for runs in results.values() for r in runs]
  lines.append(f'{len(every)} runs took {sum(r["seconds"] for r in every) / 60:.1f} min in all '
               '(the wall time of each run: fit, export and probes)')
  lines.append('')
  lines.append('paired by seed: mean difference [95% interval] (pairs): an ordering holds where the '
               'interval is above 0')
  for key in (k for k in keys if k.startswith('linear')):
    for name, method in METHODS.items():
      for other in ([method.base] if method.base else []) + (['random'] if name != 'random'
                                                             else []):
        if name not in results or other not in results:
          continue
        mine = {r['seed']: r['results'][key]['miou'] for r in results[name]}
        theirs = {r['seed']: r['results'][key]['miou'] for r in results[other]}
        found = paired.compare(mine, theirs)
        if found is not None:
          lines.append(f'{key}: {method.label} vs {METHODS[other].label}: {found}: '
                       f'{found.verdict}')
  return '\n'.join(lines)


def mean_curves(results: Dict[str, List[Dict]]) -> Dict[str, tuple]:
  """{method: (steps, mean, std)} of the learning curves its seeds share (steps all recorded)."""
  out = {}
  for name, runs in results.items():
    curves = [dict(map(tuple, r.get('curve') or [])) for r in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    if steps:
      values = np.array([[c[step] for step in steps] for c in curves])
      out[name] = (steps, values.mean(axis=0), values.std(axis=0))
  return out


def curve_table(results: Dict[str, List[Dict]], setup: Setup) -> str:
  """The learning curves (mean ± std over seeds) and, for each dense method, the first step at
  which its mean reaches its base method's final mean (DetCon's efficiency claim, §4.1)."""
  curves = mean_curves(results)
  if not curves:
    return ''
  steps = max((c[0] for c in curves.values()), key=len)
  lines = [f'learning curves: linear L{setup.curve_level} mIoU of the periodic probe, mean ± std '
           'over seeds, by pretraining step',
           f'{"method":<26} ' + ' '.join(f'{step:>13}' for step in steps)]
  for name, method in METHODS.items():
    if name in curves:
      at = dict(zip(curves[name][0], zip(curves[name][1], curves[name][2])))
      lines.append(f'{method.label:<26} ' + ' '.join(
          (f'{at[step][0]:.3f} ± {at[step][1]:.3f}' if step in at else '-').rjust(13)
          for step in steps))
  for name, method in METHODS.items():
    if method.base not in curves or name not in curves:
      continue
    base_steps, base_mean, _ = curves[method.base]
    target = base_mean[-1]
    own_steps, own_mean, _ = curves[name]
    reached = next((step for step, value in zip(own_steps, own_mean) if value >= target), None)
    label = f'{method.label} reaches {METHODS[method.base].label}\'s final {target:.3f} ' \
            f'(step {base_steps[-1]})'
    if reached is None:
      lines.append(f'{label}: not within {own_steps[-1]} steps')
    else:
      lines.append(f'{label}: at step {reached}, {base_steps[-1] / reached:.1f}x fewer steps')
  return '\n'.join(lines)


def plot_curves(results: Dict[str, List[Dict]], setup: Setup, path: str) -> None:
  """The learning curves as a PNG: one line per method (base methods dashed), its seed std as a
  band."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=120)
  for name, (steps, mean, std) in mean_curves(results).items():
    line, = axes.plot(steps, mean, marker='o', markersize=3, label=METHODS[name].label,
                      linestyle='-' if METHODS[name].base else '--')  # bases dashed
    axes.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
  axes.set_xlabel('pretraining step')
  axes.set_ylabel(f'linear probe mIoU, level {setup.curve_level}')
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7, ncol=2)
  common.save_figure(figure, path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--work_dir', default=common.WORK_DIR, help='the cache of runs and exports')
  parser.add_argument('--results_dir', default=None,
                      help='where results are kept (default: benchmarks/results in the '
                           'repository; with --smoke, --work_dir)')
  parser.add_argument('--seeds', type=int, default=3, help='how many seeds, from --first_seed')
  parser.add_argument('--first_seed', type=int, default=0)
  parser.add_argument('--steps', type=int, default=None)
  parser.add_argument('--methods', default=','.join(METHODS))
  parser.add_argument('--smoke', action='store_true', help='tiny, for CI: one seed, 3 steps')
  parser.add_argument('--kept', action='store_true',
                      help='print the table of the results kept so far; compute nothing')
  parser.add_argument('--plot', default='',
                      help='also write the learning curves as a PNG to this path')
  parser.add_argument('--params_override', default='',
                      help="applied to every pretrained method's config, e.g. "
                           "'task.method.decon.alpha=1.0'; results are cached apart")
  args = parser.parse_args()
  setup = dataclasses.replace(SMOKE if args.smoke else Setup())
  if args.steps:
    setup.steps = args.steps
  seeds = 1 if args.smoke else args.seeds
  names = [n.strip() for n in args.methods.split(',') if n.strip()]
  unknown = sorted(set(names) - set(METHODS))
  if unknown:
    parser.error(f'unknown methods {unknown}; known: {", ".join(METHODS)}')
  if args.plot:
    common.check_plot_path(parser, args.plot)
  if seeds < 1 or args.first_seed < 0:
    parser.error(f'--seeds must be >= 1 and --first_seed >= 0, got {seeds} and {args.first_seed}')
  work_dir = os.path.join(args.work_dir, f'steps{setup.steps}-scenes{setup.scenes}')
  results_dir = args.results_dir or (args.work_dir if args.smoke else common.RESULTS_DIR)
  seed_range = range(args.first_seed, args.first_seed + seeds)
  if args.kept:
    kept = {name: [r for r in (common.read_result(result_path(name, seed, setup, results_dir,
                                                       args.params_override))
                               for seed in seed_range) if r is not None] for name in names}
    results = {name: found for name, found in kept.items() if found}
    missing = sum(len(seed_range) - len(found) for found in kept.values())
    print(f'kept in {results_dir}: {sum(map(len, results.values()))} results, {missing} to run')
  else:
    results = compute(names, seed_range, setup, work_dir, results_dir, args.params_override)
  print()
  print(f'{setup.steps} steps of batch {setup.batch} per method, {setup.view_size} px views, '
        f'probes on {setup.probe_eval} held-out scenes at {setup.probe_size} px'
        + (f', with {args.params_override}' if args.params_override else ''))
  print(table(results, setup))
  curves = curve_table(results, setup)
  if curves:
    print()
    print(curves)
  if args.plot:
    plot_curves(results, setup, args.plot)
    print(f'learning curves written to {args.plot}')


def compute(names: List[str], seed_range: range, setup: Setup, work_dir: str, results_dir: str,
            params_override: str) -> Dict[str, List[Dict]]:
  """Every (method, seed) result, computing those not kept that no other run is computing."""
  data = scene_data(work_dir, setup)
  if params_override:
    digest = hashlib.sha1(params_override.encode()).hexdigest()[:8]
    work_dir = os.path.join(work_dir, f'override-{digest}')
    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, 'override.txt'), 'w') as f:
      f.write(params_override)
  print(f'FH masks: ABO {fh_quality(setup):.3f} against the ground truth', flush=True)
  probe_sets = (labelled_sets.synthetic('train', setup.probe_train, setup.probe_size),
                labelled_sets.synthetic('eval', setup.probe_eval, setup.probe_size))
  results: Dict[str, List[Dict]] = {}
  for seed in seed_range:
    for name in names:
      out = run_one(name, seed, data, probe_sets, setup, work_dir, params_override, results_dir)
      if out is not None:
        results.setdefault(name, []).append(out)
  return results


if __name__ == '__main__':
  main()
