"""Tests for DetCo / MoCo v2: info_nce, key queues across replicas, the model (exact resume of
its queues: test_trainer.py's kill -9 test)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import batch_origin, tiny_params
from tf_detcon.modeling import registry
from tf_detcon.modeling import losses
from tf_detcon.primitives import replicas
from tf_detcon.configs import validation
from tf_detcon.modeling import base
from tf_detcon.modeling.blocks import queues
from tf_detcon.modeling.methods import detco
from tf_detcon.training import trainer


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_info_nce(query, key, queue, temperature):
  q, k, negatives = (_normalize(x.astype(np.float64)) for x in (query, key, queue))
  total = 0.0
  for i in range(len(q)):
    logits = np.concatenate([[q[i] @ k[i]], negatives @ q[i]]) / temperature
    total += -(logits[0] - np.log(np.exp(logits).sum()))
  return total / len(q)


def test_info_nce_matches_the_numpy_reference():
  rng = np.random.default_rng(0)
  query, key = rng.normal(size=(2, 5, 8)).astype(np.float32)
  queue = rng.normal(size=(12, 8)).astype(np.float32)
  got = float(losses.info_nce(query, key, queue, temperature=0.2))
  np.testing.assert_allclose(got, reference_info_nce(query, key, queue, 0.2), rtol=1e-5)


def test_queue_is_a_ring_buffer_of_normalised_keys():
  queue = queues.KeyQueue(size=6, dim=3, name='q')
  first = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
  queue.enqueue(tf.constant(first))
  second = -np.ones((4, 3), np.float32)
  queue.enqueue(tf.constant(second))
  keys = queue.keys.numpy()
  assert int(queue.pointer.numpy()) == 2
  np.testing.assert_allclose(keys[2:4], _normalize(first[2:4]), rtol=1e-6)
  np.testing.assert_allclose(keys[[4, 5, 0, 1]], _normalize(second), rtol=1e-6)


def test_two_replicas_give_the_loss_gradients_and_queue_of_one(two_replicas):
  rng = np.random.default_rng(1)
  query, key = rng.normal(size=(2, 4, 8)).astype(np.float32)
  initial = _normalize(rng.normal(size=(8, 8))).astype(np.float32)

  def make_queue():
    queue = queues.KeyQueue(size=8, dim=8, name='q')
    queue.keys.assign(initial)
    return queue

  def step(queue, q, k):
    with tf.GradientTape() as tape:
      tape.watch(q)
      _, num_replicas = replicas.replica_info()
      loss = losses.info_nce(q, k, queue.keys, 0.2) / num_replicas
    gradient = tape.gradient(loss, q)
    queue.enqueue(k)
    return loss, gradient

  single_queue = make_queue()
  single_loss, single_gradient = step(single_queue, tf.constant(query), tf.constant(key))
  with two_replicas.scope():
    mirrored_queue = make_queue()
  halves = lambda x: (lambda ctx: x[2 * ctx.replica_id_in_sync_group:][:2])  # pylint: disable=unnecessary-lambda-assignment
  q, k = (two_replicas.experimental_distribute_values_from_function(halves(x))
          for x in (query, key))
  losses_per_replica, gradients = two_replicas.run(
      tf.function(lambda a, b: step(mirrored_queue, a, b)), args=(q, k))
  total = two_replicas.reduce(tf.distribute.ReduceOp.SUM, losses_per_replica, axis=None)
  np.testing.assert_allclose(float(total), float(single_loss), rtol=1e-5)
  np.testing.assert_allclose(
      np.concatenate([g.numpy() for g in two_replicas.experimental_local_results(gradients)]),
      single_gradient.numpy(), rtol=1e-4, atol=1e-7)
  for copy in two_replicas.experimental_local_results(mirrored_queue.keys):
    np.testing.assert_allclose(copy.numpy(), single_queue.keys.numpy(), rtol=1e-6)
  for copy in two_replicas.experimental_local_results(mirrored_queue.pointer):
    assert int(copy.numpy()) == int(single_queue.pointer.numpy()) == 4


def _model(name='detco_tiny'):
  params = tiny_params(name)
  model = registry.build_model(params.task, 10)
  model.compile(optimizer=trainer.build_optimizer(params.trainer.optimizer_config))
  model.initialize_targets()
  return model


def _batch(local=True):
  rng = np.random.default_rng(0)
  batch = {'view1': rng.random((4, 64, 64, 3), np.float32),
           'view2': rng.random((4, 64, 64, 3), np.float32),
           'mask1': np.zeros((4, 64, 64), np.int32), 'mask2': np.zeros((4, 64, 64), np.int32),
           **batch_origin(4)}
  if local:
    for v in (1, 2):
      batch[f'local{v}'] = rng.random((4, 48, 48, 3), np.float32)
      corners = [(16 * row, 16 * col) for row in range(3) for col in range(3)]
      batch[f'offsets{v}'] = np.array([corners] * 4, np.int32)
  return tf.data.Dataset.from_tensors(batch).repeat()


def test_detco_step_uses_every_level_and_term_and_fills_the_queues():
  model = _model()
  assert sorted(model.queues) == ['g2', 'g3', 'g4', 'g5', 'l2', 'l3', 'l4', 'l5']
  before = {n: q.keys.numpy().copy() for n, q in model.queues.items()}
  history = model.fit(_batch(), steps_per_epoch=2, epochs=1, verbose=0).history
  for level in '2345':
    for term in ('gg', 'll', 'gl'):
      assert np.isfinite(history[f'loss_{term}_level{level}'][0])
  for name, queue in model.queues.items():
    assert int(queue.pointer.numpy()) == 8 % 16
    changed = ~np.isclose(queue.keys.numpy(), before[name]).all(axis=1)
    assert changed.sum() == 8, name  # two global batches of 4 keys
  for target, online in model.ema_pairs()[:3]:
    assert target.shape == online.shape


def test_mocov2_is_the_single_level_global_case():
  model = _model('mocov2_tiny')
  assert sorted(model.queues) == ['g5'] and not model.objective.query_heads.local_heads
  history = model.fit(_batch(local=False), steps_per_epoch=1, epochs=1,
                      verbose=0).history
  assert set(k for k in history if k.startswith('loss_')) == {'loss_gg_level5'}


def test_local_head_reads_patches_in_order():
  model = _model()
  heads = model.objective.query_heads
  rng = np.random.default_rng(0)
  patch_features = {level: tf.constant(rng.normal(size=(2 * 9, 1, 1, c)), tf.float32)
                    for level, c in (('2', 16), ('3', 32), ('4', 64), ('5', 128))}
  global_features = {level: tf.reduce_mean(f, axis=0, keepdims=True)
                     for level, f in patch_features.items()}
  out = heads.embed(global_features, patch_features, 2)
  expected = heads.local_heads['5'](tf.reshape(patch_features['5'][:, 0, 0], [2, 9 * 128]))
  np.testing.assert_allclose(out['l5'].numpy(), expected.numpy(), rtol=1e-5)
  shuffled = {k: tf.gather(v, [1, 0, 2, 3, 4, 5, 6, 7, 8] + list(range(9, 18)))
              for k, v in patch_features.items()}
  assert not np.allclose(heads.embed(global_features, shuffled, 2)['l5'][0], out['l5'][0])


SHUFFLE_SEED = tf.constant([1, 17])


def _shuffle_inputs():
  """Four images' views and nine patches each, for the shuffling-BN tests."""
  rng = np.random.default_rng(3)
  return (rng.normal(size=(4, 2, 2, 3)).astype(np.float32),
          rng.normal(size=(4, 9, 2, 2, 3)).astype(np.float32))


def _centre(view, patch):
  """A BN-like centring over the batch it is given: shows which images were grouped."""
  flat_patches = tf.reshape(patch, [-1, 2, 2, 3])
  return base.Branch(
      views=[{'5': view - tf.reduce_mean(view, axis=0, keepdims=True)}],
      patches=[{'5': flat_patches - tf.reduce_mean(flat_patches, axis=0, keepdims=True)}])


def _check_two_shuffled_groups(views, patches, got_views, got_patches):
  """Each half of the seed's permutation was centred on its own, in the original order."""
  permutation = tf.argsort(tf.random.stateless_uniform([4], SHUFFLE_SEED)).numpy()
  assert set(permutation[:2]) not in ({0, 1}, {2, 3})  # the groups mix the batch
  expected_views, expected_patches = np.zeros_like(views), np.zeros_like(patches)
  for group in (permutation[:2], permutation[2:]):
    expected_views[group] = views[group] - views[group].mean(axis=0)
    expected_patches[group] = patches[group] - patches[group].mean(axis=(0, 1))
  np.testing.assert_allclose(got_views, expected_views, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.reshape(got_patches, patches.shape), expected_patches,
                             rtol=1e-5, atol=1e-6)


def test_shuffling_bn_permutes_across_replicas_and_restores_the_order(two_replicas):
  """MoCo's shuffle BN: each replica normalises a random half of the global batch; outputs come
  back in the original order."""
  views, patches = _shuffle_inputs()
  halves = lambda x: (lambda ctx: x[2 * ctx.replica_id_in_sync_group:][:2])  # pylint: disable=unnecessary-lambda-assignment
  v, p = (two_replicas.experimental_distribute_values_from_function(halves(x))
          for x in (views, patches))

  def shuffled(a, b):
    branch = detco.shuffled_across_replicas(_centre, a, b, SHUFFLE_SEED)
    return branch.views[0]['5'], branch.patches[0]['5']

  out_views, out_patches = two_replicas.run(tf.function(shuffled), args=(v, p))
  local = two_replicas.experimental_local_results
  _check_two_shuffled_groups(views, patches,
                             np.concatenate([t.numpy() for t in local(out_views)]),
                             np.concatenate([t.numpy() for t in local(out_patches)]))


def test_shuffling_bn_on_one_replica_normalises_shuffled_groups():
  """With one replica, `splits` BN groups stand in for the replicas (MoCo's GPUs)."""
  views, patches = _shuffle_inputs()
  branch = detco.shuffled_across_replicas(_centre, tf.constant(views), tf.constant(patches),
                                          SHUFFLE_SEED, 2)
  _check_two_shuffled_groups(views, patches, branch.views[0]['5'].numpy(),
                             branch.patches[0]['5'].numpy())
  # One group in all: the batch as it is.
  whole = detco.shuffled_across_replicas(_centre, tf.constant(views), tf.constant(patches),
                                         SHUFFLE_SEED)
  np.testing.assert_allclose(whole.views[0]['5'].numpy(), views - views.mean(axis=0), atol=1e-6)


def test_shuffling_bn_on_one_replica_needs_splits():
  """Without BN groups, 'shuffle' on one replica would shuffle nothing: refused in one line."""
  params = tiny_params('mocov2_tiny')
  assert params.task.method.detco.bn_splits == 2
  validation.validate(params, num_replicas=1)
  params.task.method.detco.bn_splits = 1
  validation.validate(params, num_replicas=2)
  with pytest.raises(ValueError, match=r"key_bn 'shuffle' on one replica needs "
                                       r'task\.method\.detco\.bn_splits >= 2'):
    validation.validate(params, num_replicas=1)
  params.task.method.detco.bn_splits = 3
  with pytest.raises(ValueError, match='bn_splits 3 does not divide'):
    validation.validate(params, num_replicas=1)
  params.task.method.detco.override({'bn_splits': 2, 'key_bn': 'sync'})
  with pytest.raises(ValueError, match="bn_splits 2 needs key_bn 'shuffle'"):
    validation.validate(params)


def _synchronised(encoder):
  return {bool(getattr(layer, 'synchronized', False)) for layer in encoder.submodules
          if isinstance(layer, tf_keras.layers.BatchNormalization)}


def test_shuffle_key_bn_builds_a_per_replica_bn_key_encoder():
  params = tiny_params('detco_tiny')
  params.task.method.detco.key_bn = 'shuffle'
  model = registry.build_model(params.task, 10)
  assert _synchronised(model.target_encoder) == {False}
  assert len(model.ema_pairs()) > 0


def test_query_encoder_has_per_replica_bn_in_the_bn_groups():
  """MoCo's query encoder has per-GPU BN (only keys are shuffled): per-replica BN, and on one
  device the `bn_splits` groups each normalise with their own statistics."""
  model = _model('detco_tiny')
  assert not tiny_params("detco_tiny").task.encoder.norm_activation.use_sync_bn
  assert _synchronised(model.encoder) == {False}
  assert model.bn_splits == 2
  batch = next(iter(_batch()))
  inputs = model.prepare_inputs(batch)
  query = model.features(inputs, training=True).online.views[0]['5'].numpy()
  view = inputs.views[0]
  halves = [model.encoder(part, training=True)['5'].numpy() for part in (view[:2], view[2:])]
  np.testing.assert_allclose(query, np.concatenate(halves), atol=1e-5)
  whole = model.encoder(view, training=True)['5'].numpy()
  assert np.abs(query - whole).max() > 1e-3  # one batch of 4 would normalise otherwise


def test_key_bn_is_moco_shuffling_by_default_and_sync_is_an_option():
  """DetCo takes MoCo's training details (DetCo §6.5): shuffling BN for the key encoder."""
  for name in ('detco_imagenet_200ep', 'mocov2_imagenet_200ep', 'detco_tiny', 'mocov2_tiny'):
    assert tiny_params(name).task.method.detco.key_bn == 'shuffle', name
  params = tiny_params('detco_tiny')
  params.task.method.detco.key_bn = 'sync'
  model = registry.build_model(params.task, 10)
  assert _synchronised(model.target_encoder) == {True}
