r"""Benchmark (run by hand): what a dense objective costs over its base method, per train step.

  .venv/bin/python benchmarks/bench_step.py                      # tiny configs, with/without XLA
  .venv/bin/python benchmarks/bench_step.py --scale=r50 --batch=4 --rounds=3
  .venv/bin/python benchmarks/bench_step.py --methods=mocov2      # only the groups holding these

For each pair (DetCon_S / SimCLR, DetCon_B / BYOL, DetCo / MoCo v2, DeCon-SL and DeCon-ML /
DetCon_B), in one process, at the base's global batch and resolution:
  - builds each model once (ResNet-50 at 224 for `--scale=r50`, each method's tiny config for
    `tiny`), takes one batch of its own input and times `train_step` on it under tf.function,
    with and without `jit_compile` (XLA, as TPUs compile it);
  - times a dense method and its base in one process, in turn within each round, so each ratio
    is paired within a round, and prints the median over rounds (one process per group, so that
    ResNet-50s of every method are not in memory at once);
  - counts FLOPs per step with TF's graph profiler (the ops it has a FLOP count for: convolutions,
    matmuls and their gradients, element-wise ops), beside DetCon's +5.3% (DetCon_S) and +11.6%
    (DetCon_B) (DetCon §4.1, "computational cost").
The host input pipeline is not in the time: the batch is fixed and already on the device.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Sequence, Tuple

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

# (name, its base, target ratio or None); names are the registered experiments, minus the suffix.
PAIRS = (
    ('detcon_s', 'simclr', 1.08),
    ('detcon_b', 'byol', 1.15),
    ('detco', 'mocov2', None),
    ('decon_sl_detcon_b', 'detcon_b', None),
    ('decon_ml_detcon_b', 'detcon_b', 1.35),
)
R50_EXPERIMENTS = {
    'simclr': 'simclr_imagenet_1000ep', 'detcon_s': 'detcon_s_imagenet_1000ep',
    'byol': 'byol_imagenet_1000ep', 'detcon_b': 'detcon_b_imagenet_1000ep',
    'mocov2': 'mocov2_imagenet_200ep', 'detco': 'detco_imagenet_200ep',
    'decon_sl_detcon_b': 'decon_sl_detcon_b_imagenet',
    'decon_ml_detcon_b': 'decon_ml_detcon_b_imagenet',
}
XLA_MODES = {'both': (False, True), 'off': (False,), 'on': (True,)}  # jit_compile values
PAPER_FLOPS = {'detcon_s': '+5.3%', 'detcon_b': '+11.6%'}


def build_params(method: str, scale: str, batch: int):
  """The method's experiment at the given scale, on one CPU device, float32, embedded data."""
  from official.core import exp_factory  # pylint: disable=g-import-not-at-top
  from tf_detcon.configs import experiments  # pylint: disable=g-import-not-at-top,unused-import
  name = R50_EXPERIMENTS[method] if scale == 'r50' else f'{method}_tiny'
  params = exp_factory.get_exp_config(name)
  data = params.task.train_data
  data.override(dict(input_path='', global_batch_size=batch, shuffle_buffer_size=8,
                     cycle_length=1), is_strict=True)
  params.runtime.override(dict(distribution_strategy='off', mixed_precision_dtype='float32'))
  params.task.method.get().one_device(params.task)
  return params


class Step:
  """One method's model with a fixed batch and its train step, compiled both ways."""

  def __init__(self, method: str, scale: str, batch: int, model_dir: str):
    from tf_detcon.training import trainer  # pylint: disable=g-import-not-at-top
    self.method = method
    self.run = trainer.Run(build_params(method, scale, batch), model_dir)
    self.batch = next(iter(self.run.dataset()))
    model = self.run.model
    self.functions = {
        xla: tf.function(lambda b: model.train_step(b), jit_compile=xla)  # pylint: disable=unnecessary-lambda
        for xla in (False, True)}

  def flops(self) -> int:
    """FLOPs of one train step, by the TF graph profiler over the traced step."""
    graph = self.functions[False].get_concrete_function(self.batch).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options['output'] = 'none'
    level = tf.get_logger().level
    tf.get_logger().setLevel('ERROR')  # the v1 profiler warns about its own deprecated helpers
    try:
      return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
    finally:
      tf.get_logger().setLevel(level)

  def time(self, xla: bool, steps: int) -> float:
    """Median seconds per step over `steps` calls (the result is fetched each time)."""
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      logs = self.functions[xla](self.batch)
      float(logs['loss'])
      times.append(time.perf_counter() - start)
    return statistics.median(times)


def color_share(step: Step, steps: int) -> Tuple[float, float]:
  """Seconds of the colour ops (two views) and of the encoder's forward+backward on a batch."""
  from tf_detcon.primitives import color  # pylint: disable=g-import-not-at-top
  cfg = step.run.params.task.train_data
  views = [tf.random.uniform(step.batch['view1'].shape) for _ in range(2)]
  seed = tf.constant([1, 2], tf.int64)
  colour = tf.function(lambda v1, v2: (color.color_augment(v1, cfg.view1.color, seed),
                                       color.color_augment(v2, cfg.view2.color, seed)))
  encoder = step.run.model.encoder

  @tf.function
  def encoder_step(v1, v2):
    with tf.GradientTape() as tape:
      loss = sum(tf.reduce_mean(tf.square(f)) for v in (v1, v2)
                 for f in encoder(v, training=True).values())
    return tape.gradient(loss, encoder.trainable_variables)

  def median(fn: Callable[[], object]) -> float:
    fn()
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      out = fn()
      tf.nest.map_structure(lambda t: t.numpy(), out)
      times.append(time.perf_counter() - start)
    return statistics.median(times)

  return median(lambda: colour(*views)), median(lambda: encoder_step(*views))


# Methods timed together in one process (a dense method with its base); one process per group
# keeps ResNet-50 models of all methods from filling the memory at once.
GROUPS = (('simclr', 'detcon_s'), ('byol', 'detcon_b'), ('mocov2', 'detco'),
          ('detcon_b', 'decon_sl_detcon_b', 'decon_ml_detcon_b'))


def measure_group(methods: Sequence[str], args: argparse.Namespace) -> Dict[str, object]:
  """In this process: build the group's models, time them in turn; times per method and mode."""
  modes = XLA_MODES[args.xla]
  steps: Dict[str, Step] = {}
  out: Dict[str, object] = {'times': {}, 'flops': {}}
  with tempfile.TemporaryDirectory() as tmp:
    for method in methods:
      begin = time.time()
      steps[method] = Step(method, args.scale, args.batch, os.path.join(tmp, method))
      for xla in modes:
        steps[method].time(xla, 1)  # trace and compile
      out['flops'][method] = steps[method].flops()
      print(f'built {method} in {time.time() - begin:.0f}s', file=sys.stderr, flush=True)
    for method in methods:
      for xla in modes:
        out['times'][f'{method}/{int(xla)}'] = []
    for r in range(args.rounds):
      for xla in modes:
        for method in methods:
          out['times'][f'{method}/{int(xla)}'].append(steps[method].time(xla, args.steps))
      print(f'round {r + 1}/{args.rounds} done', file=sys.stderr, flush=True)
    if 'detcon_s' in methods:
      out['colour'], out['encoder'] = color_share(steps['detcon_s'], args.steps)
    out['view'] = int(steps[methods[0]].batch['view1'].shape[1])
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--scale', choices=['tiny', 'r50'], default='tiny')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5, help='timed steps per method and round')
  parser.add_argument('--xla', choices=['both', 'off', 'on'], default='both')
  parser.add_argument('--methods', default='',
                      help='only the groups holding these methods, e.g. mocov2 (default: all)')
  parser.add_argument('--group', type=int, default=None, help=argparse.SUPPRESS)  # child
  args = parser.parse_args()
  if args.group is not None:
    print(json.dumps(measure_group(GROUPS[args.group], args)))
    return
  wanted = {m.strip() for m in args.methods.split(',') if m.strip()}
  unknown = sorted(wanted - {m for group in GROUPS for m in group})
  if unknown:
    parser.error(f'unknown methods {unknown}')
  results = []
  for index, group in enumerate(GROUPS):
    if wanted and not wanted & set(group):
      continue
    print(f'group {index + 1}/{len(GROUPS)}: {", ".join(group)}', flush=True)
    child = subprocess.run([sys.executable, __file__, *sys.argv[1:], f'--group={index}'],
                           stdout=subprocess.PIPE, text=True, check=True)
    results.append(json.loads(child.stdout.strip().splitlines()[-1]))
  modes = XLA_MODES[args.xla]

  def median_time(method: str, xla: bool) -> str:
    values = [r['times'][f'{method}/{int(xla)}'] for r in results
              if f'{method}/{int(xla)}' in r['times']]
    return f'{statistics.median(values[0]) * 1e3:.1f}' if values and xla in modes else '-'

  flops = {m: f for r in results for m, f in r['flops'].items()}
  print(f'\nscale={args.scale} batch={args.batch} views={results[0]["view"]}px, one CPU device, '
        f'float32; median of {args.rounds} rounds x {args.steps} steps, each group of methods '
        'in one process')
  header = f'\n{"method":<20}{"ms/step":>10}{"XLA ms/step":>13}{"GFLOPs/step":>13}'
  print(header + '\n' + '-' * (len(header) - 1))
  for method in sorted(flops):
    print(f'{method:<20}{median_time(method, False):>10}{median_time(method, True):>13}'
          f'{flops[method] / 1e9:>13.2f}')
  header = (f'\n{"dense / base":<32}{"time":>8}{"XLA time":>10}{"FLOPs":>8}{"paper FLOPs":>13}'
            f'{"target":>8}')
  print(header + '\n' + '-' * (len(header) - 1))
  for dense, base_method, target in PAIRS:
    group = next((r for r in results if f'{dense}/{int(modes[0])}' in r['times']
                  and f'{base_method}/{int(modes[0])}' in r['times']), None)
    if group is None:
      continue
    ratios = []
    for xla in (False, True):
      if xla in modes:
        paired = [d / b for d, b in zip(group['times'][f'{dense}/{int(xla)}'],
                                        group['times'][f'{base_method}/{int(xla)}'])]
        ratios.append(f'{statistics.median(paired):.3f}')
      else:
        ratios.append('-')
    print(f'{dense + " / " + base_method:<32}{ratios[0]:>8}{ratios[1]:>10}'
          f'{flops[dense] / flops[base_method]:>8.3f}{PAPER_FLOPS.get(dense, ""):>13}'
          f'{target or "":>8}')
  first = next((r for r in results if f'detcon_s/{int(modes[0])}' in r['times']), None)
  if first is None:
    return
  whole = statistics.median(first['times'][f'detcon_s/{int(modes[0])}'])
  print(f'\nDetCon_S step{" with XLA" if modes[0] else ""}: {whole * 1e3:.0f} ms; colour ops of '
        f'both views (on the device: color_on_device) {first["colour"] * 1e3:.0f} ms '
        f'({first["colour"] / whole:.0%}); the encoder\'s forward+backward of both views alone '
        f'{first["encoder"] * 1e3:.0f} ms ({first["encoder"] / whole:.0%})')


if __name__ == '__main__':
  main()
