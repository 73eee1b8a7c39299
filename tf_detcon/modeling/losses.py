"""Contrastive objectives as pure functions, replica-aware.

Called inside `strategy.run` (a replica context of a multi-replica strategy), a loss gathers the
targets of every replica (`replicas.gather`, differentiable) so negatives come from the
global batch, and offsets its labels by `replica_id · local batch`. It returns the loss of the
calling replica's anchors (a mean over them); the train step divides by the number of replicas
before the optimiser sums gradients across replicas, which gives the gradient of the global mean.
"""

from typing import Dict, Tuple

import tensorflow as tf

from tf_detcon.primitives import replicas

LARGE_NUM = 1e9  # stands in for infinity in masked logits


def _same_id(ids_a: tf.Tensor, ids_b: tf.Tensor) -> tf.Tensor:
  """[B, R] × [B, R] → [B, R, 1, R] float: anchor (b, r) and target (b, r') share an id."""
  return tf.cast(tf.equal(ids_a[:, :, None, None], ids_b[:, None, None, :]), tf.float32)


def detcon_loss_with_stats(pred1: tf.Tensor, pred2: tf.Tensor,
                           target1: tf.Tensor, target2: tf.Tensor,
                           pind1: tf.Tensor, pind2: tf.Tensor,
                           tind1: tf.Tensor, tind2: tf.Tensor,
                           temperature: float = 0.1,
                           local_negatives: bool = True,
                           global_negatives: bool = True) -> Tuple[tf.Tensor,
                                                                   Dict[str, tf.Tensor]]:
  """`detcon_loss`, plus {'positive_fraction': share of anchors that have a positive}."""
  pred1, pred2, target1, target2 = (tf.cast(x, tf.float32)
                                    for x in (pred1, pred2, target1, target2))
  batch, num_rois = tf.shape(pred1)[0], tf.shape(pred1)[1]
  pred1, pred2 = tf.math.l2_normalize(pred1, -1), tf.math.l2_normalize(pred2, -1)
  if global_negatives:
    target1, target2 = replicas.gather(target1), replicas.gather(target2)
    replica_id, _ = replicas.replica_info()
  else:  # each replica's anchors against its own targets only (DetCon Table 5, row a)
    replica_id = 0
  target1, target2 = tf.math.l2_normalize(target1, -1), tf.math.l2_normalize(target2, -1)
  global_batch = tf.shape(target1)[0]
  # [B, 1, B_global, 1]: 1 where the target belongs to the anchor's own image.
  own_image = tf.one_hot(tf.range(batch) + replica_id * batch, global_batch)[:, None, :, None]

  def logits(pred, target):  # [B, R, B_global, R]
    return tf.einsum('brd,ucd->bruc', pred, target) / temperature

  def branch(pred, target_other, target_same, pind, tind_other, tind_same):
    """Anchors of one view against targets of the other view (ab) and of its own view (aa)."""
    same_other = own_image * _same_id(pind, tind_other)
    same_same = own_image * _same_id(pind, tind_same)
    logits_ab = logits(pred, target_other)
    logits_aa = logits(pred, target_same) - LARGE_NUM * same_same  # never its own positive
    if not local_negatives:
      logits_ab -= LARGE_NUM * own_image * (1.0 - _same_id(pind, tind_other))
      logits_aa -= LARGE_NUM * own_image * (1.0 - _same_id(pind, tind_same))
    labels = tf.concat([same_other, tf.zeros_like(logits_aa)], axis=2)
    all_logits = tf.concat([logits_ab, logits_aa], axis=2)
    labels = tf.reshape(labels, [batch, num_rois, -1])
    all_logits = tf.reshape(all_logits, [batch, num_rois, -1])
    num_positives = tf.reduce_sum(labels, axis=-1)
    labels /= tf.maximum(num_positives, 1.0)[..., None]
    cross_entropy = -tf.reduce_sum(labels * tf.nn.log_softmax(all_logits, axis=-1), axis=-1)
    # 1/(how often the anchor's id was drawn in its view): each object weighs the same.
    id_count = tf.reduce_sum(tf.cast(tf.equal(pind[:, :, None], pind[:, None, :]), tf.float32),
                             axis=-1)
    has_positive = tf.cast(num_positives > 0, tf.float32)
    return tf.reduce_mean(cross_entropy * has_positive / id_count), tf.reduce_mean(has_positive)

  loss_a, positives_a = branch(pred1, target2, target1, pind1, tind2, tind1)
  loss_b, positives_b = branch(pred2, target1, target2, pind2, tind1, tind2)
  return loss_a + loss_b, {'positive_fraction': (positives_a + positives_b) / 2.0}


def detcon_loss(pred1: tf.Tensor, pred2: tf.Tensor, target1: tf.Tensor, target2: tf.Tensor,
                pind1: tf.Tensor, pind2: tf.Tensor, tind1: tf.Tensor, tind2: tf.Tensor,
                temperature: float = 0.1, local_negatives: bool = True,
                global_negatives: bool = True) -> tf.Tensor:
  """The DetCon objective (Hénaff et al. 2021, eq. 1 and 2; DeepMind's `byol_nce_detcon`).

  For each anchor, a mask-pooled prediction of one view, the positive is the target of the same
  mask (id) in the other view of the same image; negatives are every other target of both views
  in the global batch, including other masks of the same image. `global_negatives` False takes
  negatives from the calling replica's images only: DetCon Table 5's "global neg" ablation (row
  a), the DeepMind release's `use_replicator_loss`. `local_negatives` False removes the negatives
  from other masks of the anchor's own image (an ablation of ours; the paper keeps them, §3.1).
  Same-view targets of the anchor's own id are masked out.
  Labels are split evenly over repeated positives; anchors with no positive weigh 0, the others
  1/(number of times their id was sampled in their view). Symmetrised over the two views.

  Args:
    pred1, pred2: [B, R, D] online predictions of views 1 and 2 (R sampled masks each).
    target1, target2: [B, R, D] target projections (stop-gradient for DetCon_B; for DetCon_S the
      same tensors as pred1/pred2).
    pind1, pind2: [B, R] int mask ids of the predictions.
    tind1, tind2: [B, R] int mask ids of the targets.
    temperature: softmax temperature.
    local_negatives: keep same-image, different-mask negatives.
    global_negatives: gather targets from every replica (True, the paper's) or use this
      replica's only.

  Returns:
    The scalar loss of the calling replica (mean over its B·R anchors, summed over both views).
  """
  loss, _ = detcon_loss_with_stats(pred1, pred2, target1, target2, pind1, pind2, tind1, tind2,
                                   temperature, local_negatives, global_negatives)
  return loss


def regression_loss_with_stats(pred1: tf.Tensor, pred2: tf.Tensor,
                               target1: tf.Tensor, target2: tf.Tensor,
                               pind1: tf.Tensor, pind2: tf.Tensor,
                               tind1: tf.Tensor, tind2: tf.Tensor) -> Tuple[tf.Tensor,
                                                                            Dict[str, tf.Tensor]]:
  """BYOL's regression loss (Grill et al. 2020, eq. 2), per mask; no negatives.

  For each anchor, the prediction q of a mask in one view, the loss is
  ‖q̄ − z̄′‖² = 2 − 2·cos(q, z′) against the target z′ of the same mask (id) in the other view of
  the same image (averaged over that view's samples of the id, which are the same pooled vector). Anchors whose id the other
  view lacks weigh 0, the others 1/(number of times their id was sampled in their view), as in
  `detcon_loss`; mean over the B·R anchors, summed over both view orders. With one global mask
  and R = 1 this is BYOL's symmetrised loss L + L̃, the baseline of DetCon's Tables 1 and 2.

  No cross-replica operation: each replica's anchors only see their own image's targets.

  Args:
    pred1, pred2: [B, R, D] online predictions of views 1 and 2.
    target1, target2: [B, R, D] target projections (treated as given; stop their gradient).
    pind1, pind2: [B, R] int mask ids of the predictions.
    tind1, tind2: [B, R] int mask ids of the targets.

  Returns:
    (the calling replica's loss, {'positive_fraction': share of anchors that have a target}).
  """
  pred1, pred2, target1, target2 = (tf.math.l2_normalize(tf.cast(x, tf.float32), -1)
                                    for x in (pred1, pred2, target1, target2))

  def branch(pred, target, pind, tind):
    same = tf.cast(tf.equal(pind[:, :, None], tind[:, None, :]), tf.float32)  # [B, R, R]
    num_targets = tf.reduce_sum(same, axis=-1)
    cosine = tf.reduce_sum(same * tf.einsum('brd,bcd->brc', pred, target), axis=-1)
    cosine /= tf.maximum(num_targets, 1.0)
    id_count = tf.reduce_sum(tf.cast(tf.equal(pind[:, :, None], pind[:, None, :]), tf.float32),
                             axis=-1)
    has_target = tf.cast(num_targets > 0, tf.float32)
    return (tf.reduce_mean((2.0 - 2.0 * cosine) * has_target / id_count),
            tf.reduce_mean(has_target))

  loss_a, positives_a = branch(pred1, target2, pind1, tind2)
  loss_b, positives_b = branch(pred2, target1, pind2, tind1)
  return loss_a + loss_b, {'positive_fraction': (positives_a + positives_b) / 2.0}


def info_nce(query: tf.Tensor, key: tf.Tensor, queue: tf.Tensor,
             temperature: float = 0.2) -> tf.Tensor:
  """MoCo's InfoNCE with a queue of negatives (DetCo eq. 2, 4, 5).

  −log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_queue exp(q·kᵢ/τ)), all vectors L2-normalised. The positive
  is the key of the same image; the negatives are the queue's keys (earlier batches, gathered
  from every replica when enqueued), so no cross-replica op is needed here.

  Args:
    query: [B, D] queries (gradient flows).
    key: [B, D] positive keys (treated as constants).
    queue: [K, D] negative keys.
    temperature: τ.

  Returns:
    The mean loss over this replica's B queries.
  """
  query = tf.math.l2_normalize(tf.cast(query, tf.float32), -1)
  key = tf.stop_gradient(tf.math.l2_normalize(tf.cast(key, tf.float32), -1))
  queue = tf.stop_gradient(tf.math.l2_normalize(tf.cast(queue, tf.float32), -1))
  positive = tf.reduce_sum(query * key, axis=-1, keepdims=True)
  negative = tf.matmul(query, queue, transpose_b=True)
  logits = tf.concat([positive, negative], axis=1) / temperature
  return tf.reduce_mean(-tf.nn.log_softmax(logits, axis=-1)[:, 0])
