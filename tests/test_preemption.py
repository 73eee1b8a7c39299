"""Tests for tf_detcon.training.preemption: SIGTERM ends a run promptly, even one whose main
thread is blocked in its input pipeline."""

import json
import os
import re
import signal
import socket
import time

import tensorflow as tf

from tests.conftest import ENDLESS_RUN, sigterm_at_line, start_pretrain, until_line
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
      f'--tf_data_service={dispatcher.target}', f'--params_override={ENDLESS_RUN}')
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
  assert (f'SIGTERM while the main thread was blocked (no step for 10 s, e.g. waiting for input) '
          f'at step {last_step}; checkpoint ') in out and f'ckpt-{last_step}; rerun' in out, (
              out[-2000:])
  assert elapsed < preemption.GRACE_SECONDS + 30
  assert os.path.basename(tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))) \
      == f'ckpt-{last_step}'


def test_a_multi_worker_run_saves_through_tfs_preemption_handler(tmp_path, embedded_files):
  """With a cluster resolver (here MultiWorkerMirroredStrategy, one worker from TF_CONFIG), the
  on-demand checkpoint is TF's PreemptionCheckpointHandler, as in Model Garden: on SIGTERM it
  saves at the next step boundary on every worker and exits with TF's status 42."""
  del embedded_files
  probe = socket.socket()
  probe.bind(('localhost', 0))
  port = probe.getsockname()[1]
  probe.close()
  cluster = {'cluster': {'worker': [f'localhost:{port}']}, 'task': {'type': 'worker', 'index': 0}}
  model_dir = str(tmp_path / 'multi_worker')
  process = start_pretrain(
      '--experiment=simclr_tiny', f'--model_dir={model_dir}',
      f'--params_override=runtime.distribution_strategy=multi_worker_mirrored,{ENDLESS_RUN}',
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', TF_CONFIG=json.dumps(cluster)))
  out, err = sigterm_at_line(process)
  assert process.returncode == 42, err[-2000:]
  assert 'SIGTERM while the main thread' not in out  # our fallback stayed out of the way
  saved = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
  assert saved and int(saved.rsplit('-', 1)[1]) >= 3
