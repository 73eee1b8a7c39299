"""The mini paper table's smoke version (benchmarks/mini_table.py --smoke): every method and
random init go through pretraining, export and both probes, and the table has finite numbers."""

import os
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_mini_table_smoke_produces_a_table_of_finite_numbers(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'mini_table.py'), '--smoke',
       f'--work_dir={tmp_path}'], capture_output=True, text=True, timeout=1200,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith('method'))
  rows = lines[header + 2:header + 2 + 9]
  labels = ['random init', 'SimCLR', 'DetCon_S (FH)', 'DetCon_S (GT)', 'BYOL', 'DetCon_B (FH)',
            'MoCo v2', 'DetCo', 'DeCon-ML (DetCon_S, FH)']
  for label, row in zip(labels, rows):
    assert row.startswith(label), row
    values = [float(v) for v in re.findall(r'(-?\d+\.\d+) ± ', row)]
    assert len(values) == 4 and all(0.0 <= v <= 1.0 for v in values), row
  # One seed has no spread: its orderings are printed but not judged.
  orderings = [line for line in lines if ' vs ' in line]
  assert orderings and all(line.endswith('(one seed: no spread to judge it by)')
                           for line in orderings), orderings
  # Results are cached per (method, seed): a second run computes nothing.
  again = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'mini_table.py'), '--smoke',
       f'--work_dir={tmp_path}', '--methods=simclr,detco'], capture_output=True, text=True,
      timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'training' not in again.stdout and 'SimCLR' in again.stdout
  # An override is applied and cached apart: the same method trains again under it.
  override = 'task.train_data.shuffle_buffer_size=10'
  changed = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'mini_table.py'), '--smoke',
       f'--work_dir={tmp_path}', '--methods=simclr', f'--params_override={override}'],
      capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert changed.returncode == 0, changed.stderr[-3000:]
  assert 'training' in changed.stdout and f'with {override}' in changed.stdout
