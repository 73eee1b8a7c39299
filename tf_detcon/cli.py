"""What the absl launchers share: one-line errors for bad flags, configs and inputs."""

import os
import re
import sys
from typing import Callable, Sequence

from absl import app
import tensorflow as tf

# Errors that mean "the user's flags, config or data are wrong": reported in one line. Anything
# else is a bug and keeps its traceback. TF_DETCON_TRACEBACK=1 shows tracebacks for all.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, tf.errors.InvalidArgumentError,
               tf.errors.NotFoundError)


def one_line(error: BaseException) -> str:
  """The user-facing sentence of an error; for a failed tf.debugging.Assert in a tf.data or
  tf.function graph, just the assertion's own message."""
  text = getattr(error, 'message', None) or str(error) or type(error).__name__
  if isinstance(error, KeyError) and error.args:
    text = str(error.args[0])
  assertion = re.search(r'assertion failed: \[(.*?)\]\s*(\[\[|$)', text, re.S)
  if assertion:
    text = assertion.group(1).replace('\\"', "'")
  return ' '.join(text.split())


def run(main: Callable[[Sequence[str]], None]) -> None:
  """absl `app.run(main)`, turning user errors into `prog: error: message` and exit status 1."""

  def guarded(argv: Sequence[str]) -> None:
    tf.get_logger().setLevel('WARNING')  # TF's own INFO chatter; ours stays
    try:
      main(argv)
    except USER_ERRORS as e:
      if os.environ.get('TF_DETCON_TRACEBACK'):
        raise
      prog = os.path.basename(sys.argv[0])
      print(f'{prog}: error: {one_line(e)}', file=sys.stderr)
      sys.exit(1)

  app.run(guarded)
