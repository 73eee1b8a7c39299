"""Tests for tf_detcon.primitives.seeds: positions, derived seeds, and the resume of several input
pipelines under one strategy (the kill -9 tests are in test_trainer.py)."""

import numpy as np
import tensorflow as tf

from tests.conftest import tiny_params
from tf_detcon.data import datasets
from tf_detcon.primitives import seeds
from tf_detcon.modeling import registry
from tf_detcon.training import trainer


def test_positions_order_by_epoch_then_index():
  assert seeds.split_position(int(seeds.position(3, 17))) == (3, 17)
  assert int(seeds.position(1, 0)) > int(seeds.position(0, 2**39))


def test_derived_seeds_differ_by_every_key_and_repeat_for_the_same_keys():
  base = tf.constant([5, 0], tf.int64)
  drawn = {tuple(seeds.derive(base, *keys).numpy()) for keys in
           [(1,), (2,), (1, 1), (1, 2), (2, 1)]}
  assert len(drawn) == 5
  np.testing.assert_array_equal(seeds.derive(base, 4, 7), seeds.derive(base, 4, 7))
  record = {(b, p, q, u): tuple(seeds.record_seed(b, p, q, u).numpy())
            for b in (1, 2) for p in (0, 1) for q in (9, 10) for u in (seeds.VIEW1, seeds.VIEW2)}
  assert len(set(record.values())) == len(record)


def test_exact_resume_needs_seed_and_determinism_on_our_records():
  data = tiny_params().task.train_data
  assert not seeds.exact_resume(data)
  data.override({'seed': 1, 'deterministic': True})
  assert seeds.exact_resume(data)
  data.override({'deterministic': None})
  assert not seeds.exact_resume(data)


def test_each_input_pipeline_resumes_at_its_own_position(two_replicas, embedded_files):
  """Two input pipelines (one per replica, each reading its own file) under one strategy: after
  3 steps, `input_positions` holds each pipeline's next position, as read from that pipeline
  alone, and a pipeline rebuilt from it gives the batch the uninterrupted one gives next."""
  del embedded_files
  params = tiny_params('detcon_s_tiny')
  data = params.task.train_data
  data.override({'seed': 3, 'deterministic': True})
  contexts = [tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=p,
                                         num_replicas_in_sync=2) for p in range(2)]
  options = tf.distribute.InputOptions(
      experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA)
  with two_replicas.scope():
    model = registry.build_model(params.task, 10)
    model.compile(optimizer=trainer.build_optimizer(params.trainer.optimizer_config),
                  steps_per_execution=1)
  model.fit(two_replicas.distribute_datasets_from_function(
      lambda context: datasets.build_dataset(data, context), options),
            epochs=1, steps_per_epoch=3, verbose=0)
  positions = model.input_positions.numpy()
  per_pipeline = contexts[0].get_per_replica_batch_size(data.global_batch_size)
  for p, context in enumerate(contexts):
    alone = list(datasets.examples(data, context).take(3 * per_pipeline))
    assert positions[p] == int(alone[3 * per_pipeline - 1]['position']) + 1
    uninterrupted = list(datasets.build_dataset(data, context).take(4))[3]
    resumed = next(iter(datasets.build_dataset(data, context, start=int(positions[p]))))
    for key in ('view1', 'mask2', 'position'):
      np.testing.assert_array_equal(resumed[key], uninterrupted[key])
  assert not positions[2:].any()


def test_positions_of_another_input_layout_are_not_applied():
  positions = np.zeros([seeds.MAX_INPUT_PIPELINES], np.int64)
  assert seeds.resume_positions(positions, 2) == ([0, 0], '')  # nothing trained yet
  positions[:2] = [int(seeds.position(1, 5)), 7]
  assert seeds.resume_positions(positions, 2) == ([int(seeds.position(1, 5)), 7], '')
  for other in (1, 4):
    starts, problem = seeds.resume_positions(positions, other)
    assert starts == [0] * other
    assert problem.startswith('the checkpoint holds the input positions of 2 input pipelines '
                              f'but this run has {other}')
