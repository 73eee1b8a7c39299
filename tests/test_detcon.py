"""Tests for tf_detcon.modeling.detcon and the shared train step (base.PretrainModel)."""

import numpy as np
import tensorflow as tf

from tests.conftest import batch_origin, blocky_ids
from tf_detcon.modeling import registry
from tf_detcon.modeling import schedules
from tests.conftest import tiny_params
from tf_detcon.configs import experiments
from tf_detcon.modeling import base
from tf_detcon.modeling.methods import detcon
from tf_detcon.training import trainer

SIZE = experiments.TINY_IMAGE_SIZE


def _batches(batch_size=4, num_ids=6, seed=0):
  """Un-coloured host views in [0, 1] with blocky masks, as tf.data gives them."""
  rng = np.random.default_rng(seed)
  images = rng.random((batch_size, SIZE, SIZE, 3)).astype(np.float32)
  masks = np.stack([blocky_ids(SIZE, SIZE, num_ids, 16, seed=s)
                    for s in range(batch_size)]).astype(np.int32)
  element = {'view1': images, 'mask1': masks, 'view2': images[:, :, ::-1].copy(),
             'mask2': masks[:, :, ::-1].copy(), **batch_origin(batch_size)}
  return tf.data.Dataset.from_tensors(element).repeat()


def _model(name, strategy=None, total_steps=10):
  params = tiny_params(name)
  task = params.task
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    model = registry.build_model(task, total_steps)
    model.compile(optimizer=trainer.build_optimizer(params.trainer.optimizer_config))
    model.initialize_targets()
  return model


def test_detcon_b_targets_start_equal_and_follow_the_online_net_by_ema():
  model = _model('detcon_b_tiny')
  pairs = model.ema_pairs()
  assert len(pairs) == len([v for v in model.encoder.weights if v.trainable]) + len(
      [v for v in model.objective.level_objectives['5'].projector.weights if v.trainable])
  for target, online in pairs:
    np.testing.assert_array_equal(target.numpy(), online.numpy())
  optimized = {v.ref() for v in model.optimized_variables()}
  assert not any(t.ref() in optimized for t, _ in pairs)
  assert any(v.ref() in optimized for v in model.objective.level_objectives['5'].predictor.trainable_variables)
  model.fit(_batches(), steps_per_epoch=1, epochs=1, verbose=0)  # lr is 0 at step 0 (warmup)
  before = [t.numpy().copy() for t, _ in pairs]
  history = model.fit(_batches(), steps_per_epoch=1, epochs=1, verbose=0)
  tau = float(schedules.ema_tau(2, 10, model.ema_tau_base))
  np.testing.assert_allclose(history.history['tau'][0], tau, rtol=1e-6)
  moved = 0
  for (target, online), old in zip(pairs, before):
    np.testing.assert_allclose(target.numpy(), tau * old + (1 - tau) * online.numpy(),
                               rtol=1e-5, atol=1e-6)
    moved += not np.allclose(target.numpy(), old)
  assert moved > 0


def test_ema_update_works_in_replica_and_cross_replica_context(two_replicas):
  strategy = two_replicas
  with strategy.scope():
    target, online = tf.Variable([1.0, 1.0]), tf.Variable([3.0, 5.0])
  strategy.run(tf.function(lambda: base.ema_update([(target, online)], tf.constant(0.5))))
  for value in strategy.experimental_local_results(target):
    np.testing.assert_allclose(value.numpy(), [2.0, 3.0])
  with strategy.scope():  # cross-replica context
    base.ema_update([(target, online)], tf.constant(0.0))
  np.testing.assert_allclose(target.numpy(), online.numpy())


def test_detcon_s_has_no_target_and_trains_under_two_replicas(two_replicas):
  strategy = two_replicas
  model = _model('detcon_s_tiny', strategy)
  assert model.ema_pairs() == [] and model.target_encoder is None
  kernel = model.encoder.trainable_variables[0]
  before = kernel.numpy().copy()
  dataset = strategy.experimental_distribute_dataset(_batches())
  history = model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
  assert np.isfinite(history.history['loss'][0])
  # Logged values are the global ones, not a sum over replicas.
  assert 0.0 < history.history['positive_fraction'][0] <= 1.0
  np.testing.assert_allclose(history.history['learning_rate'][0],  # applied at the 2nd step
                             float(model.optimizer.learning_rate(1)), rtol=1e-6)
  assert not np.allclose(kernel.numpy(), before)
  copies = strategy.experimental_local_results(kernel)
  assert len(copies) == 2
  np.testing.assert_array_equal(copies[0].numpy(), copies[1].numpy())


def test_global_mask_makes_every_anchor_positive_contrastive_case():
  model = _model('detcon_b_global_tiny')
  batch = next(iter(_batches(num_ids=1)))
  result = model.compute_objective(model.prepare_inputs(batch), training=True)
  assert float(result.stats['positive_fraction']) == 1.0 and np.isfinite(float(result.loss))


def test_objective_samples_the_same_ids_for_online_and_target():
  model = _model('detcon_b_tiny')
  inputs = model.prepare_inputs(next(iter(_batches())))
  encoded = model.features(inputs, training=False)
  assert isinstance(encoded.target, base.Branch) and len(encoded.online.views) == 2
  seeds = [tf.constant([1, 2]), tf.constant([3, 4])]
  result_a = model.objective(encoded, inputs, training=False, seeds=seeds)
  result_b = model.objective(encoded, inputs, training=False, seeds=seeds)
  np.testing.assert_allclose(float(result_a.loss), float(result_b.loss), rtol=1e-6)  # seeded


def test_byol_is_byols_regression_on_globally_pooled_features():
  """byol_*: one global latent per view, 2 − 2·cos(q, z′) symmetrised, no negatives; computed
  here from the encoders and heads directly (average pool → projector → predictor)."""
  task = tiny_params('byol_tiny').task
  detcon_cfg = task.method.detcon
  assert (detcon_cfg.loss, detcon_cfg.num_samples, task.train_data.masks.type,
          task.train_data.masks.grid.grid_size) == ('regression', 1, 'grid', 1)
  model = registry.build_model(task, 10)
  model.initialize_targets()
  model.encoder.set_weights([w + 0.01 for w in model.encoder.get_weights()])  # online ≠ target
  inputs = model.prepare_inputs(next(iter(_batches(num_ids=1))))
  result = model.compute_objective(inputs, training=False)
  loss = result.loss
  assert float(result.stats['positive_fraction']) == 1.0
  heads = model.objective.level_objectives['5']

  def latent(encoder, layers, view):
    x = tf.reduce_mean(encoder(view, training=False)['5'], axis=[1, 2])
    for layer in layers:
      x = layer(x, training=False)
    x = x.numpy().astype(np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  q1, q2 = (latent(model.encoder, [heads.projector, heads.predictor], v) for v in inputs.views)
  z1, z2 = (latent(model.target_encoder, [heads.target_projector], v) for v in inputs.views)
  expected = np.mean(2 - 2 * np.sum(q1 * z2, -1)) + np.mean(2 - 2 * np.sum(q2 * z1, -1))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
