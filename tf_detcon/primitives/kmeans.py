"""K-means on the device, per image: the clustering that turns a feature map into segments
(Odin, Hénaff et al. 2022, clusters its object-discovery network's features into the masks that
drive DetCon's objective).

Batched over images, a fixed number of Lloyd iterations, no host work and no data-dependent
shapes, so it compiles under XLA and runs inside the train step. Deterministic for a seed: the
initial centres are distinct points of each image drawn from the stateless `seed`. A cluster
that loses all its points keeps its centre (scikit-learn would move it; with the segments as
masks, an empty cluster is simply an id no cell holds).
"""

from typing import Optional, Tuple

import tensorflow as tf

DISTANCES = ('euclidean', 'cosine')


def initial_centres(features: tf.Tensor, num_clusters: int, seed: tf.Tensor) -> tf.Tensor:
  """[B, N, D] → [B, K, D]: K distinct points of each image, uniformly at random (Forgy)."""
  batch, points = tf.shape(features)[0], tf.shape(features)[1]
  keys = tf.random.stateless_uniform(tf.stack([batch, points]), seed)
  _, chosen = tf.math.top_k(keys, k=num_clusters)  # [B, K] distinct indices
  return tf.gather(features, chosen, batch_dims=1)


def assign(features: tf.Tensor, centres: tf.Tensor, distance: str = 'euclidean') -> tf.Tensor:
  """[B, N, D], [B, K, D] → [B, N] int32: each point's nearest centre (the lowest index on a
  tie). 'cosine' expects unit-norm features and centres."""
  similarity = tf.matmul(features, centres, transpose_b=True)  # [B, N, K]
  if distance == 'cosine':
    return tf.argmax(similarity, axis=-1, output_type=tf.int32)
  squared = tf.reduce_sum(tf.square(centres), axis=-1)[:, None, :] - 2.0 * similarity
  return tf.argmin(squared, axis=-1, output_type=tf.int32)


def update(features: tf.Tensor, assignments: tf.Tensor, centres: tf.Tensor,
           distance: str = 'euclidean') -> tf.Tensor:
  """One Lloyd update: each centre the mean of its points (renormalised for 'cosine', spherical
  k-means); a centre with no point stays where it was."""
  one_hot = tf.one_hot(assignments, tf.shape(centres)[1], dtype=features.dtype)  # [B, N, K]
  counts = tf.reduce_sum(one_hot, axis=1)[..., None]  # [B, K, 1]
  means = tf.matmul(one_hot, features, transpose_a=True) / tf.maximum(counts, 1.0)
  if distance == 'cosine':
    means = tf.math.l2_normalize(means, axis=-1)
  return tf.where(counts > 0, means, centres)


def kmeans(features: tf.Tensor, num_clusters: int, iterations: int,
           seed: Optional[tf.Tensor] = None, distance: str = 'euclidean',
           centres: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, tf.Tensor]:
  """K-means of each image's points.

  Args:
    features: [B, N, D] float, N points of each of B images (a feature map's cells).
    num_clusters: K <= N.
    iterations: Lloyd iterations (assign, then update), a fixed number.
    seed: stateless seed [2] of the initial centres (`initial_centres`); or
    centres: [B, K, D] initial centres given.
    distance: 'euclidean', or 'cosine' (features are l2-normalised first, and the centres stay
      on the unit sphere).

  Returns:
    (assignments [B, N] int32 to the final centres, centres [B, K, D]).
  """
  if distance not in DISTANCES:
    raise ValueError(f'distance must be one of {DISTANCES}, got {distance!r}')
  if distance == 'cosine':
    features = tf.math.l2_normalize(features, axis=-1)
  if centres is None:
    if seed is None:
      raise ValueError('kmeans needs a seed or initial centres')
    centres = initial_centres(features, num_clusters, seed)
  elif distance == 'cosine':
    centres = tf.math.l2_normalize(centres, axis=-1)
  for _ in range(iterations):
    centres = update(features, assign(features, centres, distance), centres, distance)
  return assign(features, centres, distance), centres
