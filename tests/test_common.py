"""Tests for benchmarks/common.py, what the benchmarks share: claims on results by lock files,
results written whole, commands run with a log, the --plot check and the printed rows."""

import argparse
import json
import os
import subprocess
import sys

import pytest

import common


def test_a_claim_is_exclusive_while_its_holder_lives_and_taken_over_after(tmp_path):
  path = str(tmp_path / 'result.json')
  with common.claimed(path) as mine:
    assert mine
    with open(path + '.lock') as f:
      assert int(f.read()) == os.getpid()
    with common.claimed(path) as again:  # held by a live process (this one)
      assert not again
    assert os.path.exists(path + '.lock')  # the refused claim left the holder's lock alone
  assert not os.path.exists(path + '.lock')
  # A lock whose process is gone (a killed run) is taken over, and removed after.
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True).stdout.strip()
  with open(path + '.lock', 'w') as f:
    f.write(dead)
  with common.claimed(path) as mine:
    assert mine
  assert not os.path.exists(path + '.lock')


def test_a_claim_is_released_when_its_work_fails(tmp_path):
  path = str(tmp_path / 'result.json')
  with pytest.raises(RuntimeError):
    with common.claimed(path):
      raise RuntimeError('the run failed')
  assert not os.path.exists(path + '.lock')


def test_results_are_written_whole_and_read_back(tmp_path):
  path = str(tmp_path / 'deep' / 'r.json')
  assert common.read_result(path) is None
  common.write_result(path, {'value': 0.5, 'curve': [[1, 0.25]]})
  assert common.read_result(path) == {'value': 0.5, 'curve': [[1, 0.25]]}
  assert os.listdir(os.path.dirname(path)) == ['r.json']  # no temporary file left
  with open(path) as f:
    assert json.load(f)['value'] == 0.5


def test_a_failed_command_raises_with_its_logs_tail(tmp_path):
  log = str(tmp_path / 'run.log')
  common.run_logged([sys.executable, '-c', 'print("fine")'], log)
  with open(log) as f:
    assert f.read() == 'fine\n'
  with pytest.raises(RuntimeError, match=r'-c failed \(rc 3\), see .*run.log:\nwent wrong'):
    common.run_logged([sys.executable, '-c', 'import sys; print("went wrong"); sys.exit(3)'],
                      log)


def test_the_plot_path_must_be_a_file_in_a_writable_folder(tmp_path):
  parser = argparse.ArgumentParser()
  common.check_plot_path(parser, str(tmp_path / 'curves.png'))
  for bad in (str(tmp_path), str(tmp_path / 'missing' / 'curves.png')):
    with pytest.raises(SystemExit):
      common.check_plot_path(parser, bad)


def test_rows_are_printed_with_the_first_column_padded(capsys):
  common.print_rows(('what', 'figure', 'note'), [('a', '1.0 ms', 'x'), ('longer name', '2', '')])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == 'what         ' + ' ' * 6 + 'figure  note'
  note_column = len('longer name') + 2 + 12 + 2
  assert [line.index(line.split()[-1]) for line in lines[:2]] == [note_column] * 2
  assert lines[2].startswith('longer name  ')
