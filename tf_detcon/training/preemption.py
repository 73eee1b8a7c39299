"""SIGTERM where TF's PreemptionCheckpointHandler does not run: checkpoint and exit promptly,
whatever the main thread is blocked in.

Python runs signal handlers on the main thread only, between bytecodes, so a main thread blocked
inside the input pipeline (a stalled filesystem, a source that never yields) would never see
SIGTERM. The signal's wakeup fd wakes a watcher thread instead. The handler still asks the main
thread to stop (it raises KeyboardInterrupt at the next bytecode, and the train loop saves at the
current step); if the step counter has not moved for `grace` seconds, the main thread is stuck
between steps, so the watcher saves the checkpoint itself (no step is running: the state is that
of the last finished step) and ends the process with status 143 (128 + SIGTERM).
"""

import os
import signal
import socket
import threading
import time
from typing import Callable


from tf_detcon.support import console

GRACE_SECONDS = 10.0
EXIT_STATUS = 128 + signal.SIGTERM


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt('SIGTERM')


class SigtermWatch:
  """A context: SIGTERM → KeyboardInterrupt('SIGTERM') in the main thread, and a watcher that
  saves and exits if the main thread does not get to it (call `handled()` once it does).
  `save` checkpoints and says what it did, e.g. 'checkpoint …/ckpt-7'."""

  def __init__(self, step: Callable[[], int], save: Callable[[], str],
               grace: float = GRACE_SECONDS):
    self.step = step
    self.save = save
    self.grace = grace
    self._done = threading.Event()
    self._reader = self._writer = None
    self._previous_fd = -1
    self._previous_handler = None
    self._thread = None

  def __enter__(self) -> 'SigtermWatch':
    self._reader, self._writer = socket.socketpair()
    self._writer.setblocking(False)
    self._previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
    self._thread = threading.Thread(target=self._watch, name='sigterm-watch', daemon=True)
    self._thread.start()
    return self

  def handled(self) -> None:
    """The main thread has the interruption: the watcher stands down."""
    self._done.set()

  def __exit__(self, *exc) -> None:
    self._done.set()
    signal.set_wakeup_fd(self._previous_fd)
    signal.signal(signal.SIGTERM, self._previous_handler)
    self._writer.close()  # the watcher's recv returns b''
    self._thread.join(timeout=5)
    self._reader.close()

  def _watch(self) -> None:
    while True:
      try:
        received = self._reader.recv(64)
      except OSError:
        return
      if not received or self._done.is_set():
        return
      if signal.SIGTERM in received:
        break
    last, since = self.step(), time.time()
    while not self._done.wait(0.5):
      step = self.step()
      if step != last:
        last, since = step, time.time()
      elif time.time() - since >= self.grace:
        saved = self.save()
        message = (f'SIGTERM while the main thread was blocked (no step for {self.grace:.0f} s, '
                   f'e.g. waiting for input) at step {last}; {saved}; rerun the same command to '
                   'resume')
        console.warn(message)
        os._exit(EXIT_STATUS)  # pylint: disable=protected-access
