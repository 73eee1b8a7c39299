"""Tests for tf_detcon.primitives.kmeans: per image, Lloyd's iterations as scikit-learn runs
them from the same initial centres; spherical k-means by hand; XLA; seeds."""

import numpy as np
import pytest
from sklearn import cluster
import tensorflow as tf

from tf_detcon.primitives import kmeans


def _blobs(rng, images=3, points=60, dim=5, clusters=4, spread=0.6):
  """Points around `clusters` centres per image, and one point of each cluster per image (the
  initial centres of the reference runs: no cluster starts empty, where scikit-learn would move
  a centre and we keep it)."""
  centres = rng.normal(0, 4, size=(images, clusters, dim))
  labels = rng.integers(0, clusters, size=(images, points))
  labels[:, :clusters] = np.arange(clusters)
  features = np.take_along_axis(centres, labels[..., None], axis=1)
  return (features + rng.normal(0, spread, features.shape)).astype(np.float32)


@pytest.mark.parametrize('iterations', [1, 2, 20])
def test_each_image_is_scikit_learns_lloyd_from_the_same_centres(iterations):
  rng = np.random.default_rng(iterations)
  features = _blobs(rng)
  start = features[:, :4].copy()  # the first 4 points of each image as initial centres
  labels, centres = kmeans.kmeans(tf.constant(features), 4, iterations,
                                  centres=tf.constant(start))
  for image in range(features.shape[0]):
    reference = cluster.KMeans(n_clusters=4, init=start[image], n_init=1, max_iter=iterations,
                               tol=0.0, algorithm='lloyd').fit(features[image])
    np.testing.assert_allclose(centres.numpy()[image], reference.cluster_centers_, atol=1e-4)
    np.testing.assert_array_equal(labels.numpy()[image], reference.labels_)


def test_cosine_is_spherical_kmeans_by_hand():
  rng = np.random.default_rng(0)
  features = _blobs(rng, images=2, points=30, clusters=3)
  start = features[:, :3]
  labels, centres = kmeans.kmeans(tf.constant(features), 3, 3, centres=tf.constant(start),
                                  distance='cosine')
  unit = features / np.linalg.norm(features, axis=-1, keepdims=True)
  expected = start / np.linalg.norm(start, axis=-1, keepdims=True)
  for _ in range(3):
    assigned = np.argmax(np.einsum('bnd,bkd->bnk', unit, expected), axis=-1)
    for b in range(2):
      for k in range(3):
        members = unit[b][assigned[b] == k]
        if len(members):
          mean = members.mean(0)
          expected[b, k] = mean / np.linalg.norm(mean)
  np.testing.assert_allclose(centres.numpy(), expected, atol=1e-5)
  np.testing.assert_array_equal(labels.numpy(),
                                np.argmax(np.einsum('bnd,bkd->bnk', unit, expected), axis=-1))


def test_an_empty_cluster_keeps_its_centre():
  features = tf.constant([[[0.0], [0.1], [10.0], [10.1]]])
  centres = tf.constant([[[0.0], [10.0], [100.0]]])
  labels, found = kmeans.kmeans(features, 3, 2, centres=centres)
  np.testing.assert_allclose(found.numpy()[0, :, 0], [0.05, 10.05, 100.0], atol=1e-6)
  np.testing.assert_array_equal(labels.numpy()[0], [0, 0, 1, 1])


def test_seeded_initial_centres_are_distinct_points_and_a_function_of_the_seed():
  rng = np.random.default_rng(1)
  features = tf.constant(_blobs(rng, images=2, points=12))
  first = kmeans.initial_centres(features, 5, tf.constant([3, 4], tf.int64)).numpy()
  again = kmeans.initial_centres(features, 5, tf.constant([3, 4], tf.int64)).numpy()
  other = kmeans.initial_centres(features, 5, tf.constant([3, 5], tf.int64)).numpy()
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  for image in range(2):
    rows = {tuple(p) for p in features.numpy()[image]}
    assert all(tuple(c) in rows for c in first[image])
    assert len({tuple(c) for c in first[image]}) == 5


def test_it_compiles_under_xla_to_the_same_result_and_is_deterministic_for_a_seed():
  """From given centres, compiled equals eager; from a seed, two compiled runs are equal (XLA
  draws its own stateless numbers, so a seeded run is compared with a seeded run)."""
  rng = np.random.default_rng(2)
  features = tf.constant(_blobs(rng))
  start = features[:, :4]
  given = lambda f, c: kmeans.kmeans(f, 4, 5, distance='cosine', centres=c)  # pylint: disable=unnecessary-lambda-assignment
  eager = given(features, start)
  compiled = tf.function(given, jit_compile=True)(features, start)
  np.testing.assert_array_equal(eager[0].numpy(), compiled[0].numpy())
  np.testing.assert_allclose(eager[1].numpy(), compiled[1].numpy(), atol=1e-5)
  seeded = tf.function(lambda f, s: kmeans.kmeans(f, 4, 5, seed=s), jit_compile=True)
  first = seeded(features, tf.constant([7, 8], tf.int64))
  second = seeded(features, tf.constant([7, 8], tf.int64))
  np.testing.assert_array_equal(first[0].numpy(), second[0].numpy())
  np.testing.assert_array_equal(first[1].numpy(), second[1].numpy())


def test_bad_arguments_are_one_line():
  with pytest.raises(ValueError, match="distance must be one of"):
    kmeans.kmeans(tf.zeros([1, 4, 2]), 2, 1, seed=tf.constant([0, 0]), distance='manhattan')
  with pytest.raises(ValueError, match='needs a seed or initial centres'):
    kmeans.kmeans(tf.zeros([1, 4, 2]), 2, 1)
