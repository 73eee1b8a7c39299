"""What the launchers print: the project's own lines once, TF's internals only when asked.

By default a launcher prints its own lines (progress, what it wrote), warnings and errors. absl's
`--verbosity` / `-v`, `--logtostderr` or `--alsologtostderr` bring back the INFO logs of TF and
of the package, and TF's native (C++) log lines, as absl users expect. This module imports no
TensorFlow: `quiet_native_logs` must run before TF is first imported.
"""

import glob
import logging as python_logging
import os
import signal
import sys
from typing import Optional, Sequence

from absl import logging

VERBOSE_FLAGS = ('verbosity', 'v', 'logtostderr', 'alsologtostderr')
# Device nodes of the accelerators TF could use; without any, a native ERROR line is the CUDA
# probe's "failed call to cuInit", which a newcomer takes for a failure.
ACCELERATOR_NODES = ('/dev/nvidia*', '/dev/accel*', '/dev/vfio/*')


def verbose_requested(argv: Optional[Sequence[str]] = None) -> bool:
  """Whether the command line (`argv`, default `sys.argv`) names one of absl's logging flags."""
  for arg in (sys.argv if argv is None else argv)[1:]:
    name = arg.lstrip('-').split('=', 1)[0]
    if arg.startswith('-') and name in VERBOSE_FLAGS:
      return True
  return False


def quiet_native_logs(argv: Optional[Sequence[str]] = None) -> None:
  """Sets TF's native log threshold, unless the user set it or asked for verbose logs: errors
  only (level 2), or none on a machine with no accelerator device (level 3; there the only
  native error is the CUDA probe's, and real failures still raise in Python)."""
  if 'TF_CPP_MIN_LOG_LEVEL' in os.environ or verbose_requested(argv):
    return
  has_accelerator = any(glob.glob(pattern) for pattern in ACCELERATOR_NODES)
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2' if has_accelerator else '3'


def quiet_python_logs(argv: Optional[Sequence[str]] = None) -> None:
  """absl's and TF's Python INFO logs off unless asked for: warnings and errors stay."""
  if not verbose_requested(argv):
    logging.set_verbosity(logging.WARNING)
    python_logging.getLogger('tensorflow').setLevel(python_logging.WARNING)


def say(message: str) -> None:
  """One of the project's own lines: on stdout, and in the log at DEBUG (`-v 1`)."""
  print(message, flush=True)
  logging.debug(message)


def warn(message: str) -> None:
  """A warning a user running a launcher must see: one line on stdout, and in the log at DEBUG."""
  say(f'warning: {message}')


def _interrupted_while_starting(signum, frame) -> None:
  del frame
  print('interrupted while starting; nothing was written', file=sys.stderr, flush=True)
  os._exit(128 + signum)  # pylint: disable=protected-access


def start_launcher(argv: Optional[Sequence[str]] = None) -> None:
  """What a launcher does before importing TensorFlow: `quiet_native_logs`, and Ctrl-C during
  the imports (several seconds) ends the process in one line instead of a long traceback
  through them. `cli.run` gives Ctrl-C back to Python (KeyboardInterrupt) before the launcher's
  work starts, where a run checkpoints on it.

  It also sets TF_USE_LEGACY_KERAS=1 unless the environment sets it: the package and Model
  Garden 2.20 build with tf_keras, and `tf.keras` then names that same Keras instead of Keras 3,
  whose import (with scikit-learn's, through its wrappers) was 1.4 s of TensorFlow's 7.5 s at
  every start. Keras 3 itself (launch/export_keras.py) is imported as `keras`, unaffected."""
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  quiet_native_logs(argv)
  if threading_is_main():
    signal.signal(signal.SIGINT, _interrupted_while_starting)


def threading_is_main() -> bool:
  import threading  # pylint: disable=g-import-not-at-top
  return threading.current_thread() is threading.main_thread()
