"""What the benchmarks share: results kept in the repository and runs in a cache, each claimed
by a lock file while it is computed; scalar curves read back from TensorBoard; commands run
quietly with a log; figures; and the printed tables.

Every benchmark imports it by name (`import common`), as it imports its siblings: a benchmark
runs as `python benchmarks/NAME.py`, which puts this folder on the path.
"""

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
from typing import Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Results are committed here; runs and exports go to WORK_DIR, a cache that may be lost.
RESULTS_DIR = os.path.join(REPO, 'benchmarks', 'results')
WORK_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'tf_detcon', 'mini_table')


def print_rows(header: Tuple[str, str, str], rows: Sequence[Tuple[str, str, str]]) -> None:
  """A printed table of rows (what, figure, note), the first column padded."""
  width = max(len(r[0]) for r in (header, *rows))
  for name, figure, note in (header, *rows):
    print(f'{name:<{width}}  {figure:>12}  {note}')


def read_curve(summary_dir: str, tag: str) -> List[List[float]]:
  """[[step, value], ...] of one scalar the periodic probe wrote to TensorBoard, by step."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  points = {}
  for path in tf.io.gfile.glob(os.path.join(summary_dir, 'events.out.tfevents.*')):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == tag:
          points[event.step] = float(tf.make_ndarray(value.tensor))
  return [[step, points[step]] for step in sorted(points)]


@contextlib.contextmanager
def claimed(path: str):
  """Holds `<path>.lock` while a result is computed; yields False if another live process
  holds it (a lock whose process is gone is taken over)."""
  lock = path + '.lock'
  try:
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  except FileExistsError:
    with open(lock) as f:
      holder = f.read().strip()
    try:
      os.kill(int(holder), 0)
      yield False
      return
    except (ValueError, ProcessLookupError):
      os.remove(lock)
      fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  os.write(fd, str(os.getpid()).encode())
  os.close(fd)
  try:
    yield True
  finally:
    os.remove(lock)


def read_result(path: str) -> Optional[Dict]:
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def write_result(path: str, out: Dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(out, f, indent=2)
  os.replace(path + '.tmp', path)


def export_digest(export: str) -> str:
  """sha256 over every tensor of an export's checkpoint (by key): equal digests, equal exports."""
  import fingerprint  # pylint: disable=g-import-not-at-top  (beside this script)
  hashes = fingerprint.checkpoint_hashes(os.path.join(export, 'checkpoint'))
  return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def run_logged(command: List[str], log_path: str, timeout: Optional[float] = None) -> None:
  """Runs `command` quietly, its output in `log_path`; raises with the log's tail on failure."""
  with open(log_path, 'w') as log:
    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3',
                                     PYTHONPATH=REPO),  # this checkout's code, not the install's
                            check=False)
  if result.returncode:
    with open(log_path) as f:
      tail = f.read()[-3000:]
    raise RuntimeError(f'{command[1]} failed (rc {result.returncode}), see {log_path}:\n{tail}')


def save_figure(figure, path: str, rect: tuple = (0, 0, 1, 1)) -> None:
  """Writes a matplotlib figure as a PNG and frees it; its panels fill `rect` (figure
  fractions: left, bottom, right, top), which leaves room for a figure-level legend."""
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure.tight_layout(rect=rect)
  figure.savefig(path)
  pyplot.close(figure)


def check_plot_path(parser: argparse.ArgumentParser, path: str) -> None:
  """Stops with one line unless --plot is a file path in a writable folder."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
    parser.error(f'--plot {path!r}: not a file path in a writable folder')
