"""One writer per folder: a live owner refuses a second process; a dead one's lock is taken over."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT
from tf_detcon.support import locks

HOLDER = textwrap.dedent('''
    import sys, time
    from tf_detcon.support import locks
    with locks.DirectoryLock(sys.argv[1], '--model_dir', command='holder'):
      print('held', flush=True)
      time.sleep(120)
''')


@pytest.fixture
def holder(tmp_path):
  """A real process holding tmp_path/run; killed with SIGKILL at the end if still running."""
  folder = str(tmp_path / 'run')
  process = subprocess.Popen([sys.executable, '-c', HOLDER, folder], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == 'held'
  yield folder, process
  process.kill()
  process.wait()


def test_a_live_owner_refuses_a_second_process_and_a_killed_ones_lock_is_taken_over(
    holder, capsys):
  folder, process = holder
  with pytest.raises(ValueError) as refused:
    locks.DirectoryLock(folder, '--model_dir').acquire()
  message = str(refused.value)
  assert f'--model_dir {folder} is in use by pid {process.pid} on host ' in message
  assert '(holder)' in message and 'wait for it to finish' in message
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert os.path.exists(os.path.join(folder, '.lock'))  # SIGKILL leaves it behind
  with locks.DirectoryLock(folder, '--model_dir') as lock:
    with open(lock.path) as f:
      assert json.load(f)['pid'] == os.getpid()
  assert 'taking over the lock of a process that is gone (pid' in capsys.readouterr().out
  assert not os.path.exists(os.path.join(folder, '.lock'))  # released


def test_another_hosts_lock_is_refused_naming_the_file_to_delete(tmp_path):
  folder = str(tmp_path)
  with open(os.path.join(folder, '.lock'), 'w') as f:
    json.dump({'pid': 1, 'host': 'tpu-vm-7', 'started': '2026-12-01T10:00:00'}, f)
  with pytest.raises(ValueError, match=r'in use by pid 1 on host tpu-vm-7 since 2026-12-01T10:00'
                                       r':00; if no process of that host writes here any more, '
                                       r'delete .*\.lock$'):
    locks.DirectoryLock(folder, '--model_dir').acquire()


def test_a_reused_pid_and_a_torn_lock_file_are_stale(tmp_path, capsys):
  """pid 1 runs, but it started at another time than the lock says: not the owner."""
  folder = str(tmp_path)
  path = os.path.join(folder, '.lock')
  with open(path, 'w') as f:
    json.dump({'pid': 1, 'host': locks.socket.gethostname(), 'start_ticks': -5}, f)
  with locks.DirectoryLock(folder, '--output_dir'):
    pass
  with open(path, 'w') as f:
    f.write('{"pid": 12')  # torn by a kill during the write
  with locks.DirectoryLock(folder, '--output_dir'):
    pass
  assert capsys.readouterr().out.count('taking over the lock') == 2


def test_workers_with_other_lock_names_share_a_folder(tmp_path):
  with locks.DirectoryLock(str(tmp_path), '--output_dir', '.lock-worker-0'):
    with locks.DirectoryLock(str(tmp_path), '--output_dir', '.lock-worker-1'):
      with pytest.raises(ValueError, match='is in use by pid'):
        locks.DirectoryLock(str(tmp_path), '--output_dir', '.lock-worker-1').acquire()


def test_an_unused_path_numbers_past_every_name_already_taken(tmp_path):
  stem = str(tmp_path / 'params-before-step4')
  assert locks.unused_path(stem, '.yaml') == f'{stem}.yaml'
  for expected in (f'{stem}.yaml', f'{stem}-2.yaml', f'{stem}-3.yaml'):
    path = locks.unused_path(stem, '.yaml')
    assert path == expected
    with open(path, 'w') as f:
      f.write('taken')
  assert locks.unused_path(stem, '.yaml') == f'{stem}-4.yaml'
  assert locks.unused_path(str(tmp_path / 'export-step4')) == str(tmp_path / 'export-step4')
