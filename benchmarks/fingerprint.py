r"""Check (run by hand): does a change of code leave what every tiny experiment computes as it was?

  .venv/bin/python benchmarks/fingerprint.py --repo=/tmp/before --out=/tmp/fp-before.json
  .venv/bin/python benchmarks/fingerprint.py --repo=.          --out=/tmp/fp-after.json
  .venv/bin/python benchmarks/fingerprint.py --compare /tmp/fp-before.json /tmp/fp-after.json

Each registered `*_tiny` experiment is pretrained by `<repo>/launch/pretrain.py` in its own
process, with `task.train_data.seed=0` and `deterministic: true` (op determinism, every draw from
the seed), one step per loop and a scalar summary every step. Its fingerprint is the first 5 step
losses (float32, as TensorBoard stores them) and a sha256 of every tensor of the final training
checkpoint (weights, EMA targets, optimiser slots, queues, input positions), taken both by
checkpoint key and independently of the keys (sorted tensor hashes), so that a renamed object is
told apart from a changed number. Runs are cached in `--out` as they finish, so an interrupted
check resumes. `--compare` prints a table and exits 1 if any experiment differs.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

FIRST_LOSSES = 5
OVERRIDES = ('task.train_data.seed=0,task.train_data.deterministic=true,'
             'trainer.steps_per_loop=1,trainer.summary_interval=1,task.allow_image_summary=false')


def tiny_experiments(repo: str) -> List[str]:
  """The `*_tiny` experiments `repo` registers (asked of that checkout, in a subprocess)."""
  code = ('from official.core import exp_factory;'
          'from tf_detcon.configs import experiments;'
          'print(" ".join(sorted(n for n in exp_factory._REGISTERED_CONFIGS '
          'if n.endswith("_tiny"))))')
  out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                       text=True, env=_env(repo)).stdout
  return out.split()


def _env(repo: str) -> Dict[str, str]:
  return {**os.environ, 'PYTHONPATH': os.path.abspath(repo), 'TF_CPP_MIN_LOG_LEVEL': '3'}


def losses(summary_dir: str) -> List[float]:
  """The per-step 'loss' scalars in `summary_dir`, by step."""
  import common  # pylint: disable=g-import-not-at-top  (beside this script)
  return [value for _, value in common.read_curve(summary_dir, 'loss')]


def checkpoint_hashes(checkpoint_dir: str) -> Dict[str, str]:
  """sha256 of each tensor (dtype, shape, bytes) of the latest checkpoint, by key."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(checkpoint_dir))
  out = {}
  for key in sorted(reader.get_variable_to_shape_map()):
    if key == '_CHECKPOINTABLE_OBJECT_GRAPH':
      continue
    value = np.asarray(reader.get_tensor(key))
    digest = hashlib.sha256(f'{value.dtype}{value.shape}'.encode())
    digest.update(value.tobytes() if value.dtype != object else repr(value.tolist()).encode())
    out[key] = digest.hexdigest()
  return out


def fingerprint(repo: str, name: str) -> Dict:
  with tempfile.TemporaryDirectory() as work:
    model_dir = os.path.join(work, name)
    proc = subprocess.run(
        [sys.executable, os.path.join(repo, 'launch', 'pretrain.py'), f'--experiment={name}',
         f'--model_dir={model_dir}', f'--params_override={OVERRIDES}'],
        capture_output=True, text=True, env=_env(repo), check=False)
    if proc.returncode:
      raise SystemExit(f'{name} failed in {repo}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}')
    by_key = checkpoint_hashes(os.path.join(model_dir, 'checkpoints'))
    return {'losses': losses(os.path.join(model_dir, 'train'))[:FIRST_LOSSES],
            'tensors': by_key,
            'weights': hashlib.sha256(''.join(sorted(by_key.values())).encode()).hexdigest()}


def compare(before_path: str, after_path: str) -> int:
  with open(before_path) as f:
    before = json.load(f)
  with open(after_path) as f:
    after = json.load(f)
  width = max(len(n) for n in before | after)
  print(f'{"experiment":{width}}  first {FIRST_LOSSES} losses  final weights  checkpoint keys')
  failures = 0
  for name in sorted(before | after):
    a, b = before.get(name), after.get(name)
    if a is None or b is None:
      print(f'{name:{width}}  only in {"after" if a is None else "before"}')
      failures += 1
      continue
    same_losses = a['losses'] == b['losses']
    same_weights = a['weights'] == b['weights']
    same_keys = a['tensors'] == b['tensors']
    failures += not (same_losses and same_weights)
    print(f'{name:{width}}  {"bit-identical" if same_losses else "DIFFER":{15 + 3}}'
          f'{"bit-identical" if same_weights else "DIFFER":15}'
          f'{"same" if same_keys else "renamed" if same_weights else "-"}')
    if not same_losses:
      print(f'{"":{width}}    {a["losses"]}\n{"":{width}}    {b["losses"]}')
  print(f'{len(before | after) - failures} of {len(before | after)} bit-identical')
  return 1 if failures else 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repo', default='.', help='checkout whose code runs')
  parser.add_argument('--out', help='JSON of fingerprints, filled as runs finish')
  parser.add_argument('--only', default='', help='comma-separated experiments (default: all)')
  parser.add_argument('--compare', nargs=2, metavar=('BEFORE', 'AFTER'))
  args = parser.parse_args()
  if args.compare:
    return compare(*args.compare)
  if not args.out:
    parser.error('--out is required (or --compare BEFORE AFTER)')
  results = {}
  if os.path.exists(args.out):
    with open(args.out) as f:
      results = json.load(f)
  names = args.only.split(',') if args.only else tiny_experiments(args.repo)
  for i, name in enumerate(names, 1):
    if name in results:
      continue
    print(f'[{i}/{len(names)}] {name}', flush=True)
    results[name] = fingerprint(args.repo, name)
    with open(args.out + '.tmp', 'w') as f:
      json.dump(results, f, indent=1, sort_keys=True)
    os.replace(args.out + '.tmp', args.out)
  print(f'{len(results)} fingerprints in {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
