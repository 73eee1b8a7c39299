"""A run's checkpoints as they are on disk, not only as its state file says.

`tf.train.CheckpointManager` knows the checkpoints its `checkpoint` state file lists. When that
file is missing, empty or torn (a killed write, a copy that skipped it), the manager sees none,
the run would start again from step 0 and its next saves would overwrite the checkpoints it did
not see. So before the manager is built, the checkpoints on disk (`ckpt-<N>.index`) are the
truth: a state file that does not list exactly them is rewritten from them, in one line.

A checkpoint that cannot be read back (`unreadable_reason`) is never resumed from and never
overwritten: its files are set aside as `<file>.unreadable` before the run resumes from the
newest readable one, so that a later save of the same step cannot replace them.
"""

import os
import re
from typing import List, Optional, Tuple

import tensorflow as tf

from tf_detcon.support import console
from tf_detcon.support import locks

STATE = 'checkpoint'
PREFIX = 'ckpt'
UNREADABLE = '.unreadable'


def step_of(path: str) -> int:
  """The step a checkpoint prefix `…/ckpt-<N>` was saved at (its number: saves use the step)."""
  return int(path.rsplit('-', 1)[1])


def on_disk(directory: str) -> List[str]:
  """The checkpoint prefixes in `directory` with an index file, oldest step first."""
  if not tf.io.gfile.isdir(directory):
    return []
  steps = []
  for name in tf.io.gfile.listdir(directory):
    found = re.fullmatch(rf'{PREFIX}-(\d+)\.index', name)
    if found:
      steps.append(int(found.group(1)))
  return [os.path.join(directory, f'{PREFIX}-{step}') for step in sorted(steps)]


_STATE_LINE = re.compile(
    r'(model_checkpoint_path|all_model_checkpoint_paths): "([^"]*)"'
    r'|(all_model_checkpoint_timestamps|last_preserved_timestamp): ([-+0-9.eE]+)')


def listed(directory: str) -> Optional[List[str]]:
  """The checkpoints the state file lists (by base name), as CheckpointManager would keep them;
  None if it is missing, torn (a line cut short) or lists them without a timestamp each (the
  manager would then keep none of them)."""
  path = os.path.join(directory, STATE)
  try:
    with tf.io.gfile.GFile(path) as f:
      text = f.read()
  except (tf.errors.OpError, UnicodeDecodeError):
    return None
  names, timestamps, latest = [], 0, None
  for line in text.splitlines():
    if not line.strip():
      continue
    found = _STATE_LINE.fullmatch(line.strip())
    if not found:
      return None
    if found.group(1) == 'model_checkpoint_path':
      latest = os.path.basename(found.group(2))
    elif found.group(1):
      names.append(os.path.basename(found.group(2)))
    elif found.group(3) == 'all_model_checkpoint_timestamps':
      timestamps += 1
  if not names or latest != names[-1] or timestamps != len(names):
    return None
  return names


def write_state(directory: str, checkpoints: List[str]) -> None:
  """Writes the state file listing `checkpoints` (the last is the latest), atomically."""
  names = [os.path.basename(c) for c in checkpoints]
  # CheckpointManager keeps (and later deletes, beyond max_to_keep) only checkpoints whose
  # timestamp is after last_preserved_timestamp: their index files' times, after 0.
  times = [tf.io.gfile.stat(f'{c}.index').mtime_nsec / 1e9 for c in checkpoints]
  text = ''.join([f'model_checkpoint_path: "{names[-1]}"\n'] +
                 [f'all_model_checkpoint_paths: "{name}"\n' for name in names] +
                 [f'all_model_checkpoint_timestamps: {t!r}\n' for t in times] +
                 ['last_preserved_timestamp: 0.0\n'])
  staging = os.path.join(directory, f'.{STATE}.tmp-{os.getpid()}')
  with tf.io.gfile.GFile(staging, 'w') as f:
    f.write(text)
  tf.io.gfile.rename(staging, os.path.join(directory, STATE), overwrite=True)


def repair_state(directory: str) -> None:
  """Rewrites a state file that does not list exactly the checkpoints on disk, in one line."""
  present = on_disk(directory)
  if not present:
    return
  names = listed(directory)
  if names == [os.path.basename(p) for p in present]:
    return
  if names is None:
    state = os.path.join(directory, STATE)
    problem = 'missing' if not tf.io.gfile.exists(state) else 'unreadable'
  else:
    problem = f'listing {", ".join(names) or "nothing"}'
  write_state(directory, present)
  console.warn(f'{os.path.join(directory, STATE)} was {problem}: rewritten from the checkpoints '
               f'on disk, {", ".join(os.path.basename(p) for p in present)}')


def prepare(directory: str) -> Optional[str]:
  """Makes `directory`'s checkpoints safe to resume from before a manager is built: data files
  whose index is gone, and the newest checkpoints that cannot be read while an older one can,
  are set aside (one line each); then the state file is made to list what is left. If no
  checkpoint on disk can be read, stops in one line rather than start again from step 0.
  Returns the newest checkpoint, now known to read back, or None if there is none."""
  if not tf.io.gfile.isdir(directory):
    return None
  indexed = {os.path.basename(p) for p in on_disk(directory)}
  orphans = sorted({name.split('.data-')[0] for name in tf.io.gfile.listdir(directory)
                    if '.data-' in name and not name.endswith(UNREADABLE) and
                    name.split('.data-')[0] not in indexed})
  for prefix in orphans:
    moved = set_aside(os.path.join(directory, prefix))
    console.warn(f'{prefix} in {directory} has data but no index (a torn checkpoint): set aside '
                 f'as {", ".join(moved)}')
  newest, problems = newest_readable(directory)
  for path, problem in problems:
    moved = set_aside(path)
    console.warn(f'checkpoint {os.path.basename(path)} cannot be read ({problem}): set aside as '
                 f'{", ".join(moved)}; resuming from the newest readable one')
  repair_state(directory)
  return newest


def newest_readable(directory: str) -> Tuple[Optional[str], List[Tuple[str, str]]]:
  """(the newest checkpoint on disk whose every tensor reads back, or None if there is none;
  the newer ones that do not, newest first, each with why). The files on disk, not the state
  file's list: a state file that lost an entry must never make a run start again from step 0.
  Stops in one line if there are checkpoints and none reads back."""
  problems = []
  for path in reversed(on_disk(directory)):
    problem = unreadable_reason(path)
    if not problem:
      return path, problems
    problems.append((path, problem))
  if problems:
    raise ValueError(f'no readable checkpoint in {directory}: ' + '; '.join(
        f'{os.path.basename(p)} ({why})' for p, why in problems) +
        '; move them away to start afresh')
  return None, problems


def unreadable_reason(path: str) -> str:
  """'' if every tensor of the checkpoint at `path` reads back (sizes and checksums), else why
  not, in one line."""
  try:
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  except (tf.errors.OpError, IndexError, ValueError) as e:
    text = getattr(e, 'message', None) or str(e) or type(e).__name__
    return ' '.join(text.split())[:200]
  return ''


def set_aside(path: str) -> List[str]:
  """Renames every file of the checkpoint at `path` to `<file>.unreadable` (a number is added if
  that name is taken); returns the new names."""
  directory, prefix = os.path.split(path)
  moved = []
  for name in sorted(tf.io.gfile.listdir(directory)):
    if name == f'{prefix}.index' or name.startswith(f'{prefix}.data-'):
      target = locks.unused_path(os.path.join(directory, name + UNREADABLE))
      tf.io.gfile.rename(os.path.join(directory, name), target)
      moved.append(os.path.basename(target))
  return moved
