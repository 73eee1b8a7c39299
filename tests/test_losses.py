"""Tests for tf_detcon.modeling.losses: detcon_loss against a NumPy reference, and across
replicas."""

import numpy as np
import pytest
import tensorflow as tf

from tf_detcon.modeling import losses
from tf_detcon.primitives import replicas


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _per_view(pred1, pred2, target1, target2, pind1, pind2, tind1, tind2):
  """[view 1, view 2] of normalised float64 predictions and targets, and of their ids."""
  pred = [_normalize(pred1.astype(np.float64)), _normalize(pred2.astype(np.float64))]
  target = [_normalize(target1.astype(np.float64)), _normalize(target2.astype(np.float64))]
  return pred, target, [pind1, pind2], [tind1, tind2]


def reference_detcon_loss(pred1, pred2, target1, target2, pind1, pind2, tind1, tind2,
                          temperature=0.1, local_negatives=True):
  """DetCon's loss written from the paper, one anchor at a time (float64)."""
  pred, target, pind, tind = _per_view(pred1, pred2, target1, target2, pind1, pind2, tind1, tind2)
  batch, rois = pind1.shape
  total = 0.0
  for a in (0, 1):
    other = 1 - a
    for b in range(batch):
      for r in range(rois):
        anchor_id = pind[a][b, r]
        logits, positive = [], []
        for view in (other, a):  # targets of the other view, then of the anchor's own view
          for u in range(batch):
            for c in range(rois):
              same_image, same_id = u == b, tind[view][u, c] == anchor_id
              if same_image and view == a and same_id:
                continue  # its own mask in its own view is no negative
              if same_image and not same_id and not local_negatives:
                continue
              logits.append(pred[a][b, r] @ target[view][u, c] / temperature)
              positive.append(same_image and view == other and same_id)
        logits, positive = np.array(logits), np.array(positive)
        if not positive.any():
          continue  # weight 0
        log_prob = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        cross_entropy = -log_prob[positive].mean()
        weight = 1.0 / np.sum(pind[a][b] == anchor_id)
        total += weight * cross_entropy / (batch * rois)
  return total


def _inputs(seed, batch=3, rois=5, dim=8, num_ids=4):
  rng = np.random.default_rng(seed)
  feats = [rng.normal(size=(batch, rois, dim)).astype(np.float32) for _ in range(4)]
  # Repeated ids (with replacement) and ids missing from the other view (no positive).
  ids = [rng.integers(0, num_ids, size=(batch, rois)).astype(np.int32) for _ in range(2)]
  ids[1][0] = num_ids + 1  # image 0 of view 2: ids that view 1 never has
  return feats, ids


@pytest.mark.parametrize('local_negatives', [True, False])
@pytest.mark.parametrize('seed', [0, 1])
def test_detcon_loss_matches_the_numpy_reference(seed, local_negatives):
  (p1, p2, t1, t2), (i1, i2) = _inputs(seed)
  got = losses.detcon_loss(p1, p2, t1, t2, i1, i2, i1, i2, temperature=0.1,
                           local_negatives=local_negatives)
  expected = reference_detcon_loss(p1, p2, t1, t2, i1, i2, i1, i2, 0.1, local_negatives)
  np.testing.assert_allclose(float(got), expected, rtol=1e-4)


def test_positive_fraction_counts_anchors_with_a_positive():
  (p1, p2, t1, t2), (i1, i2) = _inputs(0)
  _, stats = losses.detcon_loss_with_stats(p1, p2, t1, t2, i1, i2, i1, i2)
  has_1 = np.array([[i in i2[b] for i in i1[b]] for b in range(3)])
  has_2 = np.array([[i in i1[b] for i in i2[b]] for b in range(3)])
  np.testing.assert_allclose(float(stats['positive_fraction']),
                             (has_1.mean() + has_2.mean()) / 2, rtol=1e-6)


def test_single_global_mask_is_the_simclr_loss():
  """R=1 and one id per image: NT-Xent over 2B−1 candidates, as in SimCLR."""
  rng = np.random.default_rng(3)
  z1, z2 = rng.normal(size=(2, 4, 1, 6)).astype(np.float32)
  ids = np.zeros((4, 1), np.int32)
  got = float(losses.detcon_loss(z1, z2, z1, z2, ids, ids, ids, ids, temperature=0.5))
  a, b = _normalize(z1[:, 0].astype(np.float64)), _normalize(z2[:, 0].astype(np.float64))
  total = 0.0
  for x, y in ((a, b), (b, a)):
    for i in range(4):
      candidates = np.concatenate([y @ x[i], np.delete(x @ x[i], i)]) / 0.5
      total += -(candidates[i] - np.log(np.exp(candidates).sum())) / 4
  np.testing.assert_allclose(got, total, rtol=1e-5)


def test_two_replicas_give_the_loss_and_gradients_of_one(two_replicas):
  """MirroredStrategy over 2 logical CPUs: each replica sees half the batch."""
  (p1, p2, _, _), (i1, i2) = _inputs(5, batch=4)
  strategy = two_replicas
  assert strategy.num_replicas_in_sync == 2

  def loss_and_grads(z1, z2, a, b):
    z1, z2 = tf.convert_to_tensor(z1), tf.convert_to_tensor(z2)
    with tf.GradientTape() as tape:
      tape.watch([z1, z2])
      _, num_replicas = replicas.replica_info()
      # DetCon_S: the targets are the predictions, so gradients flow through the gather.
      loss = losses.detcon_loss(z1, z2, z1, z2, a, b, a, b) / num_replicas
    return loss, tape.gradient(loss, [z1, z2])

  single_loss, (single_g1, single_g2) = loss_and_grads(p1, p2, i1, i2)
  halves = lambda x: (lambda ctx: x[2 * ctx.replica_id_in_sync_group:][:2])  # pylint: disable=unnecessary-lambda-assignment
  values = [strategy.experimental_distribute_values_from_function(halves(x))
            for x in (p1, p2, i1, i2)]
  per_replica_loss, per_replica_grads = strategy.run(tf.function(loss_and_grads), args=values)
  total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)
  np.testing.assert_allclose(float(total), float(single_loss), rtol=1e-5)
  # The optimiser sums replica gradients: with the all-gather's gradient, that is the whole.
  for whole, parts in ((single_g1, per_replica_grads[0]), (single_g2, per_replica_grads[1])):
    summed = np.concatenate([g.numpy() for g in strategy.experimental_local_results(parts)])
    np.testing.assert_allclose(summed, whole.numpy(), rtol=1e-4, atol=1e-6)


def test_per_replica_negatives_are_each_replicas_own_loss(two_replicas):
  """DetCon Table 5 row a: with global_negatives False each replica's anchors see only its own
  images' targets, so its loss is the reference loss of its half of the batch alone."""
  (p1, p2, t1, t2), (i1, i2) = _inputs(6, batch=4)

  def loss(z1, z2, y1, y2, a, b, global_negatives):
    return losses.detcon_loss(z1, z2, y1, y2, a, b, a, b, global_negatives=global_negatives)

  halves = lambda x: (lambda ctx: x[2 * ctx.replica_id_in_sync_group:][:2])  # pylint: disable=unnecessary-lambda-assignment
  values = [two_replicas.experimental_distribute_values_from_function(halves(x))
            for x in (p1, p2, t1, t2, i1, i2)]
  for global_negatives in (False, True):
    per_replica = two_replicas.run(tf.function(lambda *v, g=global_negatives: loss(*v, g)),
                                   args=values)
    got = [float(v) for v in two_replicas.experimental_local_results(per_replica)]
    for replica, value in enumerate(got):
      part = slice(2 * replica, 2 * replica + 2)
      local = reference_detcon_loss(p1[part], p2[part], t1[part], t2[part], i1[part], i2[part],
                                    i1[part], i2[part])
      if global_negatives:  # negatives from the other replica's images too: another loss
        assert abs(value - local) > 1e-3
      else:
        np.testing.assert_allclose(value, local, rtol=1e-5)
    if global_negatives:
      np.testing.assert_allclose(sum(got) / 2, reference_detcon_loss(p1, p2, t1, t2, i1, i2, i1,
                                                                     i2), rtol=1e-5)


def reference_regression_loss(pred1, pred2, target1, target2, pind1, pind2, tind1, tind2):
  """BYOL's 2 − 2·cos per mask, one anchor at a time (float64)."""
  pred, target, pind, tind = _per_view(pred1, pred2, target1, target2, pind1, pind2, tind1, tind2)
  batch, rois = pind1.shape
  total = 0.0
  for a in (0, 1):
    other = 1 - a
    for b in range(batch):
      for r in range(rois):
        matches = [c for c in range(rois) if tind[other][b, c] == pind[a][b, r]]
        if not matches:
          continue
        cosine = np.mean([pred[a][b, r] @ target[other][b, c] for c in matches])
        weight = 1.0 / np.sum(pind[a][b] == pind[a][b, r])
        total += weight * (2.0 - 2.0 * cosine) / (batch * rois)
  return total


@pytest.mark.parametrize('seed', [0, 1])
def test_regression_loss_matches_the_numpy_reference(seed):
  (p1, p2, t1, t2), (i1, i2) = _inputs(seed)
  got, stats = losses.regression_loss_with_stats(p1, p2, t1, t2, i1, i2, i1, i2)
  np.testing.assert_allclose(float(got),
                             reference_regression_loss(p1, p2, t1, t2, i1, i2, i1, i2), rtol=1e-5)
  has_1 = np.array([[i in i2[b] for i in i1[b]] for b in range(3)])
  assert 0 < float(stats['positive_fraction']) < 1 and not has_1.all()


def test_one_global_latent_is_byols_symmetrised_loss():
  """R = 1, one id: ‖q̄1 − z̄′2‖² + ‖q̄2 − z̄′1‖², averaged over the batch (Grill et al., eq. 2)."""
  rng = np.random.default_rng(4)
  q1, q2, z1, z2 = rng.normal(size=(4, 5, 1, 6)).astype(np.float32)
  ids = np.zeros((5, 1), np.int32)
  got, _ = losses.regression_loss_with_stats(q1, q2, z1, z2, ids, ids, ids, ids)
  n = lambda x: _normalize(x[:, 0].astype(np.float64))  # pylint: disable=unnecessary-lambda-assignment
  expected = (np.sum((n(q1) - n(z2))**2, -1).mean() + np.sum((n(q2) - n(z1))**2, -1).mean())
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_regression_loss_on_two_replicas_is_that_of_one(two_replicas):
  (p1, p2, t1, t2), (i1, i2) = _inputs(6, batch=4)

  def loss_and_grads(q1, q2, z1, z2, a, b):
    q1, q2 = tf.convert_to_tensor(q1), tf.convert_to_tensor(q2)
    with tf.GradientTape() as tape:
      tape.watch([q1, q2])
      _, num_replicas = replicas.replica_info()
      loss, _ = losses.regression_loss_with_stats(q1, q2, z1, z2, a, b, a, b)
      loss /= num_replicas
    return loss, tape.gradient(loss, [q1, q2])

  single_loss, single_grads = loss_and_grads(p1, p2, t1, t2, i1, i2)
  halves = lambda x: (lambda ctx: x[2 * ctx.replica_id_in_sync_group:][:2])  # pylint: disable=unnecessary-lambda-assignment
  values = [two_replicas.experimental_distribute_values_from_function(halves(x))
            for x in (p1, p2, t1, t2, i1, i2)]
  per_replica_loss, per_replica_grads = two_replicas.run(tf.function(loss_and_grads),
                                                         args=values)
  total = two_replicas.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)
  np.testing.assert_allclose(float(total), float(single_loss), rtol=1e-5)
  for whole, parts in zip(single_grads, per_replica_grads):
    summed = np.concatenate([g.numpy() for g in two_replicas.experimental_local_results(parts)])
    np.testing.assert_allclose(summed, whole.numpy(), rtol=1e-4, atol=1e-7)
