"""Tests for tf_detcon.training.preemption: SIGTERM ends a run promptly, even one whose main
thread is blocked in its input pipeline."""

import os
import re
import signal
import time

import tensorflow as tf

from tests.conftest import start_pretrain, until_line
from tf_detcon.training import preemption


def test_sigterm_ends_a_run_blocked_in_its_input_with_a_checkpoint(tmp_path, embedded_files):
  """A run reads from a tf.data service whose only worker then dies: once the buffered batches
  are used up the main thread blocks inside the input pipeline, where Python's signal handler
  cannot run (a preempted host stuck in its input). SIGTERM still saves the step reached and
  ends the process with 143, within seconds."""
  del embedded_files
  dispatcher = tf.data.experimental.service.DispatchServer()
  worker = tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
      dispatcher_address=dispatcher.target.split('://')[1]))
  model_dir = str(tmp_path / 'blocked')
  process = start_pretrain(
      '--experiment=simclr_tiny', f'--model_dir={model_dir}',
      f'--tf_data_service={dispatcher.target}',
      '--params_override=trainer.train_steps=100000,trainer.steps_per_loop=1,'
      'trainer.checkpoint_interval=100000,trainer.summary_interval=0,task.log_every_steps=1')
  try:
    until_line(process, 'step 3/')
    worker._stop()  # pylint: disable=protected-access
    time.sleep(preemption.GRACE_SECONDS / 2)
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    elapsed = time.time() - sent
  finally:
    process.kill()
    dispatcher._stop()  # pylint: disable=protected-access
  assert process.returncode == preemption.EXIT_STATUS == 143, err[-2000:]
  last_step = int(re.findall(r'^step (\d+)/', out, re.M)[-1])
  assert (f'SIGTERM while the main thread was blocked (no step for 10 s, e.g. waiting for input); '
          f'checkpoint ') in out and f'ckpt-{last_step} at step {last_step}' in out, out[-2000:]
  assert elapsed < preemption.GRACE_SECONDS + 30
  assert os.path.basename(tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))) \
      == f'ckpt-{last_step}'
