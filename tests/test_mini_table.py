"""The mini paper table (benchmarks/mini_table.py): every method's miniature config validates,
and the smoke version takes random init, a base and its dense method through pretraining, export
and both probes to a table of finite numbers (every method's own training is tested in
test_trainer and test_xla; a DeCon row's pretraining goes through the same `ensure_export` in
tests/test_transfer_table.py's smoke)."""

import json
import os
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tf_detcon.configs import validation

import common
import mini_table


def test_detco_and_mocov2_keep_their_papers_levels_and_weights():
  """DetCo §6.5: res2–res5 weighted 0.1, 0.4, 0.7, 1; MoCo v2 contrasts res5 with weight 1."""
  data = {'fh': 'unused-fh-*', 'gt': 'unused-gt-*'}
  configs = {name: mini_table.mini_config(mini_table.METHODS[name], data, mini_table.Setup(), 0)
             for name in ('detco', 'mocov2')}
  detco, mocov2 = (configs[n].task.method.detco for n in ('detco', 'mocov2'))
  assert (list(detco.levels), list(detco.level_weights)) == (['2', '3', '4', '5'],
                                                             [0.1, 0.4, 0.7, 1.0])
  assert (list(mocov2.levels), list(mocov2.level_weights)) == (['5'], [1.0])


def test_every_methods_miniature_config_validates():
  data = {'fh': 'unused-fh-*', 'gt': 'unused-gt-*'}
  for name, method in mini_table.METHODS.items():
    if method.experiment:
      validation.validate(mini_table.mini_config(method, data, mini_table.Setup(), 0))
      assert method.base is None or method.base in mini_table.METHODS, name


def test_mini_table_smoke_produces_a_table_of_finite_numbers(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'mini_table.py'), '--smoke',
       f'--work_dir={tmp_path}', f'--plot={tmp_path / "curves.png"}',
       '--methods=random,simclr,detcon_s_fh'], capture_output=True,
      text=True, timeout=1200,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith('method'))
  labels = ['random init', 'SimCLR', 'DetCon_S (FH)']
  rows = lines[header + 2:header + 2 + len(labels)]
  for label, row in zip(labels, rows):
    assert row.startswith(label), row
    values = [float(v) for v in re.findall(r'(-?\d+\.\d+) ± ', row)]
    assert len(values) == 4 and all(0.0 <= v <= 1.0 for v in values), row
    assert re.fullmatch(r'\d+\.\d', row.split()[-1]), row  # minutes per run
  total = re.search(r'^3 runs took (\d+\.\d) min in all', result.stdout, re.M)
  assert total and float(total.group(1)) > 0, result.stdout
  # The learning curve: the periodic probe at step 3 of every pretrained method, and the plot.
  curve_start = next(i for i, line in enumerate(lines) if line.startswith('learning curves'))
  curve_rows = lines[curve_start + 2:curve_start + 2 + len(labels) - 1]
  for label, row in zip(labels[1:], curve_rows):
    assert row.startswith(label), row
    values = [float(v) for v in re.findall(r'(-?\d+\.\d+) ± ', row)]
    assert len(values) == 1 and 0.0 <= values[0] <= 1.0, row
  assert re.search(r"^DetCon_S \(FH\) reaches SimCLR's final \d\.\d{3} \(step 3\)", result.stdout,
                   re.M), result.stdout
  with open(tmp_path / 'curves.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # One seed makes one pair: its orderings are printed but not judged.
  orderings = [line for line in lines if ' vs ' in line]
  assert orderings and all(line.endswith('(n=1): one pair: no interval')
                           for line in orderings), orderings
  # Results are kept apart from the run cache (the repository's benchmarks/results unless
  # --smoke), with the export's digest.
  kept = tmp_path / f'mini-v{mini_table.RESULTS_VERSION}' / 'steps3-scenes16'
  assert sorted(os.listdir(kept)) == ['detcon_s_fh-seed0.json', 'random-seed0.json',
                                      'simclr-seed0.json']
  with open(kept / 'simclr-seed0.json') as f:
    assert len(json.load(f)['export_digest']) == 64
  # Results are cached per (method, seed): a second run computes nothing.
  again = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'mini_table.py'), '--smoke',
       f'--work_dir={tmp_path}', '--methods=simclr,detcon_s_fh'], capture_output=True, text=True,
      timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert again.returncode == 0, again.stderr[-3000:]
  assert not re.search(r'^training ', again.stdout, re.M) and 'SimCLR' in again.stdout
  # --kept prints what is kept, computing nothing: SimCLR's row as computed, BYOL's to run.
  kept_only = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'mini_table.py'), '--smoke',
       f'--work_dir={tmp_path}', '--methods=simclr,byol', '--kept'], capture_output=True,
      text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert kept_only.returncode == 0, kept_only.stderr[-3000:]
  assert f'kept in {tmp_path}: 1 results, 1 to run' in kept_only.stdout, kept_only.stdout
  assert rows[1] in kept_only.stdout and 'BYOL' not in kept_only.stdout
  assert not re.search(r'^(training|FH masks)', kept_only.stdout, re.M)
  # An override is applied and cached apart: the same method trains again under it.
  override = 'task.train_data.shuffle_buffer_size=10'
  changed = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'mini_table.py'), '--smoke',
       f'--work_dir={tmp_path}', '--methods=simclr', f'--params_override={override}'],
      capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert changed.returncode == 0, changed.stderr[-3000:]
  assert re.search(r'^training ', changed.stdout, re.M) and f'with {override}' in changed.stdout


def test_a_lost_export_is_pretrained_again_to_the_same_bytes(tmp_path):
  """Deterministic pretraining: the export a kept result was measured on comes back the same
  when the cache is lost; an export of other bytes is refused, not fine-tuned."""
  setup = mini_table.SMOKE
  work_dir = str(tmp_path / 'cache')
  data = mini_table.scene_data(work_dir, setup)
  from tf_detcon.evaluation import labelled_sets  # pylint: disable=g-import-not-at-top
  probe_sets = (labelled_sets.synthetic('train', 4, setup.probe_size),
                labelled_sets.synthetic('eval', 4, setup.probe_size))
  results = str(tmp_path / 'results')
  export = mini_table.ensure_export('simclr', 0, data, probe_sets, setup, work_dir, results)
  digest = common.export_digest(export)
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(os.path.dirname(export))  # the cache is lost; the result is kept
  again = mini_table.ensure_export('simclr', 0, data, probe_sets, setup, work_dir, results)
  assert again == export and common.export_digest(again) == digest
  path = mini_table.result_path('simclr', 0, setup, results)
  with open(path) as f:
    kept = json.load(f)
  kept['export_digest'] = '0' * 64
  common.write_result(path, kept)
  import pytest  # pylint: disable=g-import-not-at-top
  with pytest.raises(RuntimeError, match='its export differs'):
    mini_table.ensure_export('simclr', 0, data, probe_sets, setup, work_dir, results)
