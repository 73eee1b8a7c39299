"""Tests for tf_detcon.evaluation.probes: scores by hand, probes on features that separate."""

import numpy as np
import pytest

from tf_detcon.evaluation import probes


def test_scores_by_hand():
  labels = np.array([[0, 0, 1, 1, 255]])
  guess = np.array([[0, 1, 1, 1, 0]])
  out = probes.scores(guess, labels, num_classes=3, ignore_label=255)
  # class 0: TP 1, FP 0, FN 1 → 1/2; class 1: TP 2, FP 1 → 2/3; class 2 absent from both.
  assert out['iou'] == [0.5, pytest.approx(2 / 3), None]
  assert out['miou'] == pytest.approx((0.5 + 2 / 3) / 2)
  assert out['acc'] == pytest.approx(3 / 4)


def test_pixel_labels_sample_cell_centres():
  labels = np.arange(64).reshape(1, 8, 8)
  np.testing.assert_array_equal(probes.pixel_labels(labels, 4), [[[18, 22], [50, 54]]])


def _separable(seed, n=40, grid=6, classes=4, dim=16):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, size=(n, grid, grid))
  centres = np.random.default_rng(99).normal(size=(classes, dim)) * 3
  features = centres[labels] + rng.normal(size=(n, grid, grid, dim))
  labels[:, 0, 0] = 255  # some unlabelled pixels
  return features.astype(np.float32), labels.astype(np.int32)


@pytest.mark.parametrize('probe', ['linear', 'knn'])
def test_probes_recover_separable_classes_and_ignore_unlabelled_pixels(probe):
  train_x, train_y = _separable(0)
  eval_x, eval_y = _separable(1)
  if probe == 'linear':
    guess = probes.linear_probe(train_x, train_y, eval_x, 4, steps=300)
  else:
    guess = probes.knn_probe(train_x, train_y, eval_x, 4, k=5)
  assert guess.shape == eval_y.shape
  assert probes.scores(guess, eval_y, 4)['miou'] > 0.95
  # Shuffled labels leave nothing to learn: chance level.
  shuffled = np.random.default_rng(2).permutation(train_y.ravel()).reshape(train_y.shape)
  if probe == 'linear':
    chance = probes.linear_probe(train_x, shuffled, eval_x, 4, steps=300)
  else:
    chance = probes.knn_probe(train_x, shuffled, eval_x, 4, k=5)
  assert probes.scores(chance, eval_y, 4)['miou'] < 0.4


def test_the_linear_probe_is_reproducible_with_its_seed():
  train_x, train_y = _separable(0)
  first = probes.linear_probe(train_x, train_y, train_x, 4, seed=3, steps=20)
  np.testing.assert_array_equal(first, probes.linear_probe(train_x, train_y, train_x, 4, seed=3,
                                                           steps=20))


def test_labels_beyond_num_classes_are_a_clear_error():
  train_x, train_y = _separable(0)
  with pytest.raises(ValueError, match='labels hold class 3 but --num_classes is 3'):
    probes.linear_probe(train_x, train_y, train_x, 3)
