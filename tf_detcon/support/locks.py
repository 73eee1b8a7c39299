"""One writer per output folder: a lock file holding the owner's pid, host and start time.

Two processes pretraining into one `model_dir` would overwrite each other's checkpoints and
export and mix their summaries; two mask precomputes for one worker index would race on its
shards. The second is refused in one line naming the owner. A lock whose process is gone (killed
with SIGKILL, a machine restart) is stale: on the owner's host that is detected from the process
table and the lock is taken over with a warning; from another host it cannot be, and the message
says which file to delete.

Local folders are locked atomically (O_CREAT | O_EXCL). Object stores (gs://) have no exclusive
create through `tf.io.gfile`, so there the lock is written and read back: it catches a second run
started later, not two started within the same second.
"""

import datetime
import json
import os
import socket
from typing import Any, Dict, Optional

from absl import logging
import tensorflow as tf

from tf_detcon.support import console


def _start_ticks(pid: int) -> Optional[int]:
  """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(owner: Dict[str, Any]) -> bool:
  """Whether the process that wrote `owner` still runs (only decidable on its own host)."""
  pid = owner.get('pid')
  if not isinstance(pid, int):
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process: still compare its start time
    pass
  ticks = owner.get('start_ticks')
  return ticks is None or _start_ticks(pid) in (None, ticks)


def held_by_live_process(path: str) -> bool:
  """Whether the lock file at `path` is held by a process alive on this host (a lock of another
  host counts as held: it cannot be checked from here)."""
  try:
    with tf.io.gfile.GFile(path) as f:
      owner = json.loads(f.read() or '{}')
  except (tf.errors.OpError, ValueError):
    return False
  if not owner:
    return False
  return owner.get('host') != socket.gethostname() or _alive(owner)


def describe(owner: Dict[str, Any]) -> str:
  return (f"pid {owner.get('pid')} on host {owner.get('host')} since {owner.get('started')}"
          + (f" ({owner['command']})" if owner.get('command') else ''))


class DirectoryLock:
  """`with DirectoryLock(folder, flag):` holds `folder/<name>` for this process.

  Args:
    directory: the folder written to (created if missing).
    flag: how the user named it, for messages (e.g. '--model_dir').
    name: the lock file's name; workers meant to share a folder take different names.
    command: what the owner runs, shown to a refused second process.
  """

  def __init__(self, directory: str, flag: str, name: str = '.lock', command: str = ''):
    self.path = os.path.join(directory, name)
    self.directory = directory
    self.flag = flag
    self.owner = {'pid': os.getpid(), 'host': socket.gethostname(),
                  'start_ticks': _start_ticks(os.getpid()), 'command': command,
                  'started': datetime.datetime.now().isoformat(timespec='seconds')}
    self._held = False

  def _read(self) -> Optional[Dict[str, Any]]:
    try:
      with tf.io.gfile.GFile(self.path) as f:
        return json.loads(f.read() or '{}')
    except tf.errors.NotFoundError:
      return None
    except ValueError:  # torn write of a killed owner
      return {}

  def _create(self) -> bool:
    """Writes the lock if nobody holds it; False if it exists."""
    text = json.dumps(self.owner, sort_keys=True)
    if '://' in self.path:
      if tf.io.gfile.exists(self.path):
        return False
      with tf.io.gfile.GFile(self.path, 'w') as f:
        f.write(text)
      return (self._read() or {}).get('pid') == self.owner['pid']
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    return True

  def acquire(self) -> None:
    tf.io.gfile.makedirs(self.directory)
    for _ in range(3):  # a stale lock is removed, then taken like a free one
      if self._create():
        self._held = True
        return
      owner = self._read()
      if owner is None:  # released meanwhile
        continue
      same_host = owner.get('host') == self.owner['host']
      if owner and (not same_host or _alive(owner)):
        advice = ('wait for it to finish or use another ' + self.flag if same_host else
                  f'if no process of that host writes here any more, delete {self.path}')
        raise ValueError(f'{self.flag} {self.directory} is in use by {describe(owner)}; '
                         f'{advice}')
      message = (f'{self.flag} {self.directory}: taking over the lock of a process that is gone '
                 f'({describe(owner) if owner else "an unreadable lock file"})')
      console.warn(message)
      tf.io.gfile.remove(self.path)
    raise ValueError(f'{self.flag} {self.directory}: could not take the lock {self.path}')

  def release(self) -> None:
    if self._held:
      self._held = False
      try:
        if (self._read() or {}).get('pid') == self.owner['pid']:
          tf.io.gfile.remove(self.path)
      except tf.errors.OpError as e:
        logging.warning('could not remove the lock %s: %s', self.path, e)

  def __enter__(self) -> 'DirectoryLock':
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def unused_path(stem: str, extension: str = '') -> str:
  """`<stem><extension>`, or `<stem>-<N><extension>` with the smallest N >= 2 not taken: where a
  file set aside (a changed params.yaml, an unreadable checkpoint, a later export) goes without
  overwriting one set aside before."""
  path, number = f'{stem}{extension}', 1
  while tf.io.gfile.exists(path):
    number += 1
    path = f'{stem}-{number}{extension}'
  return path
