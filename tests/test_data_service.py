"""Pretraining through a real tf.data service: a dispatcher and two workers on localhost."""

import pytest
import tensorflow as tf

from tests.conftest import run_pretrain
from tf_detcon.configs import data as data_config
from tf_detcon.data import datasets


@pytest.fixture(scope='module')
def service():
  """A DispatchServer and two WorkerServers in this process (the workers run the pipeline)."""
  dispatcher = tf.data.experimental.service.DispatchServer()
  address = dispatcher.target.split('://')[1]
  workers = [tf.data.experimental.service.WorkerServer(
      tf.data.experimental.service.WorkerConfig(dispatcher_address=address)) for _ in range(2)]
  yield dispatcher, workers
  for worker in workers:
    worker._stop()  # pylint: disable=protected-access
  dispatcher._stop()  # pylint: disable=protected-access


def test_pretraining_reads_batches_from_tf_data_service_workers(service, tmp_path,
                                                                embedded_files):
  """--tf_data_service=grpc://… (enable_tf_data_service + tf_data_service_address): the launcher
  in another process trains on batches that the two workers here produce, under Model Garden's
  job name `<tf_data_service_job_name>_bs<global batch>_<suffix>`."""
  del embedded_files
  dispatcher, workers = service
  assert dispatcher._num_workers() == 2  # pylint: disable=protected-access
  assert [w._num_tasks() for w in workers] == [0, 0]  # pylint: disable=protected-access
  result = run_pretrain(
      '--experiment=simclr_tiny', f'--model_dir={tmp_path / "served"}',
      f'--tf_data_service={dispatcher.target}',
      '--params_override=trainer.train_steps=3,trainer.steps_per_loop=1,'
      'task.train_data.tf_data_service_job_name=pretrain')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'exported step 3' in result.stdout
  # Each worker ran a task of the job (parallel epochs: both produce batches for the trainer).
  assert [w._num_tasks() for w in workers] == [1, 1]  # pylint: disable=protected-access
  with open(tmp_path / 'served' / 'params.yaml') as f:
    saved = f.read()
  assert 'enable_tf_data_service: true' in saved and dispatcher.target in saved


def test_service_settings_are_checked_in_one_line():
  cfg = data_config.DataConfig(global_batch_size=2, enable_tf_data_service=True)
  with pytest.raises(ValueError, match='enable_tf_data_service needs tf_data_service_address'):
    datasets.build_dataset(cfg)
  cfg.override({'tf_data_service_address': 'grpc://localhost:1', 'seed': 1})
  with pytest.raises(ValueError, match='seed with tf.data service would give every worker'):
    datasets.build_dataset(cfg)
  cfg = data_config.DataConfig(tf_data_service_address='grpc://localhost:1')
  with pytest.raises(ValueError, match='tf_data_service_address is set but '
                     'enable_tf_data_service is false'):
    datasets.build_dataset(cfg)
