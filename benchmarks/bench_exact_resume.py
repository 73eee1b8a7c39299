"""Benchmark (run by hand): what exact resume costs (README, "Exact resume").

  .venv/bin/python benchmarks/bench_exact_resume.py

Prints a table:
  - the train-step time of DetCon_B (tiny) with `seed` + `deterministic: true` (op determinism)
    against the same run without them, each in fresh processes, taken in turn (A B A B ...) so
    that the ratio is paired;
  - the checkpoint's size and the share of it that the input positions take;
  - how fast a resumed pipeline skips to its position (records are read, not decoded), on
    records of ImageNet's mean size (~110 kB).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import common  # pylint: disable=wrong-import-position
from tf_detcon.configs import data as data_config  # pylint: disable=wrong-import-position
from tf_detcon.data import datasets  # pylint: disable=wrong-import-position
from tf_detcon.primitives import seeds  # pylint: disable=wrong-import-position

STEPS, WARMUP, PAIRS = 60, 10, 5
DETERMINISTIC = {'task.train_data.seed': 1, 'task.train_data.deterministic': 'true'}


def child(exact: bool, model_dir: str) -> None:
  """In this process: train DetCon_B tiny, print the median step time after warm-up as JSON."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  from official.core import exp_factory  # pylint: disable=g-import-not-at-top
  from official.modeling.hyperparams import params_dict  # pylint: disable=g-import-not-at-top
  from tf_detcon.configs import experiments  # pylint: disable=g-import-not-at-top,unused-import
  from tf_detcon.training import trainer  # pylint: disable=g-import-not-at-top
  params = exp_factory.get_exp_config('detcon_b_tiny')
  overrides = {'trainer.train_steps': STEPS, 'trainer.steps_per_loop': 1,
               'trainer.summary_interval': 0, 'trainer.checkpoint_interval': STEPS,
               'task.log_every_steps': STEPS, **(DETERMINISTIC if exact else {})}
  params_dict.override_params_dict(
      params, ','.join(f'{key}={value}' for key, value in overrides.items()), is_strict=True)
  run = trainer.Run(params, model_dir)
  times = []

  class StepTimes(tf_keras.callbacks.Callback):

    def on_train_batch_begin(self, batch, logs=None):
      self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
      times.append(time.perf_counter() - self.start)

  callbacks = run.callbacks
  run.callbacks = lambda: callbacks() + [StepTimes()]
  run.train()
  checkpoint = run.manager.latest_checkpoint
  size = sum(os.path.getsize(os.path.join(os.path.dirname(checkpoint), f))
             for f in os.listdir(os.path.dirname(checkpoint))
             if f.startswith(os.path.basename(checkpoint) + '.'))
  print(json.dumps({'step': statistics.median(times[WARMUP:]), 'checkpoint_bytes': size,
                    'positions_bytes': int(run.model.input_positions.numpy().nbytes)}))


def step_times() -> dict:
  results = {True: [], False: []}
  for pair in range(PAIRS):
    for exact in (True, False):
      with tempfile.TemporaryDirectory() as model_dir:
        out = subprocess.run([sys.executable, __file__, '--child', str(int(exact)), model_dir],
                             capture_output=True, text=True, check=True)
        results[exact].append(json.loads(out.stdout.strip().splitlines()[-1]))
      print(f'  pair {pair + 1}/{PAIRS} {"exact" if exact else "default"}: '
            f'{results[exact][-1]["step"] * 1000:.1f} ms/step', flush=True)
  return results


def skip_rate(records: int = 2000, record_bytes: int = 110_000) -> float:
  """Records per second that a pipeline resumed at the end of an epoch skips through."""
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, 'part-0.tfrecord')
    payload = np.random.default_rng(0).bytes(record_bytes)
    with tf.io.TFRecordWriter(path) as writer:
      for _ in range(records):
        writer.write(payload)
    cfg = data_config.DataConfig(input_path=path, seed=1, deterministic=True,
                                 shuffle_buffer_size=1000, global_batch_size=1)
    stream = datasets.record_stream(cfg, start=int(seeds.position(0, records - 1)))
    start = time.perf_counter()
    next(iter(stream))
    return records / (time.perf_counter() - start)


def main():
  print('step time, fresh process each (DetCon_B tiny, CPU):', flush=True)
  results = step_times()
  ratios = [e['step'] / d['step'] for e, d in zip(results[True], results[False])]
  exact, default = results[True][-1], results[False][-1]
  rate = skip_rate()
  rows = [
      ('step time, default', f'{statistics.median(r["step"] for r in results[False]) * 1e3:.1f} ms', ''),
      ('step time, exact (seed + deterministic)',
       f'{statistics.median(r["step"] for r in results[True]) * 1e3:.1f} ms',
       f'{statistics.median(ratios):.3f}x default (median of {PAIRS} paired ratios)'),
      ('checkpoint size', f'{exact["checkpoint_bytes"] / 1024:.0f} KiB',
       f'input positions {exact["positions_bytes"] / 1024:.0f} KiB of it (both modes); '
       f'default {default["checkpoint_bytes"] / 1024:.0f} KiB'),
      ('resume: skip to the position', f'{rate:.0f} records/s',
       f'{rate * 0.11:.0f} MB/s of 110 kB records, read not decoded'),
  ]
  print()
  common.print_rows(('measure', 'value', 'note'), rows)


if __name__ == '__main__':
  if len(sys.argv) == 4 and sys.argv[1] == '--child':
    child(bool(int(sys.argv[2])), sys.argv[3])
  else:
    main()
