"""Dense probes on frozen features: per-pixel linear and kNN classification, mIoU and accuracy.

Features of one level are upsampled bilinearly to the probe grid (the image at 1/`stride`), and
labels are sampled at the grid's pixel centres. The linear probe is a multinomial logistic
regression on standardised features, trained with a fixed seed; the kNN probe retrieves, for each
evaluation pixel, the k most cosine-similar training pixels from a memory and takes their
similarity-weighted vote. Both report mIoU (over the classes present in the labels or the
predictions) and pixel accuracy, ignoring `ignore_label`.
"""

import time
from typing import Dict, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from tf_detcon.evaluation import frozen


def check_settings(encoder: frozen.FrozenEncoder, image_size: int, stride: int,
                   levels: Sequence[str]) -> None:
  """One line naming the flag (evaluate.py's) unless the probes can run on `encoder` with
  images of side `image_size`, a probe grid of 1/`stride` and these `levels`."""
  missing = [level for level in levels if level not in encoder.levels]
  if missing:
    raise ValueError(f'--level {",".join(missing)}: {encoder.name} has levels '
                     f'{",".join(encoder.levels)}')
  encoder.check_image_size(image_size)
  if stride > image_size:
    raise ValueError(f'--probe_stride {stride} is larger than --image_size {image_size}: the '
                     'probes would have no cell to classify')


def pixel_features(encoder: frozen.FrozenEncoder, images: np.ndarray, level: str,
                   stride: int = 4, batch_size: int = 32,
                   progress_every: int = 10) -> np.ndarray:
  """float32 [N, S/stride, S/stride, C]: level `level` upsampled to the probe grid."""
  if level not in encoder.levels:
    raise ValueError(f'level {level!r} is not a level of {encoder.name} '
                     f'({", ".join(encoder.levels)})')
  grid = images.shape[1] // stride
  out, begin = [], time.time()
  batches = range(0, len(images), batch_size)
  for index, start in enumerate(batches):
    features = encoder(tf.constant(images[start:start + batch_size]))[level]
    out.append(tf.image.resize(features, [grid, grid], method='bilinear').numpy())
    if progress_every and (index + 1) % progress_every == 0:
      logging.info('features of %s at level %s: %d/%d images, %.1f images/s', encoder.name,
                   level, start + batch_size, len(images),
                   (start + batch_size) / (time.time() - begin))
  return np.concatenate(out)


def pixel_labels(labels: np.ndarray, stride: int = 4) -> np.ndarray:
  """int32 [N, S//stride, S//stride]: the label at each probe cell's centre pixel, on the same
  grid as `pixel_features` (a stride that does not divide S leaves the last pixels out)."""
  grid = labels.shape[1] // stride
  end = stride // 2 + grid * stride
  return labels[:, stride // 2:end:stride, stride // 2:end:stride]


def _valid(features: np.ndarray, labels: np.ndarray, ignore_label: int):
  flat_x = features.reshape(-1, features.shape[-1])
  flat_y = labels.reshape(-1)
  keep = flat_y != ignore_label
  return flat_x[keep], flat_y[keep]


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, num_classes: int,
                 ignore_label: int = 255, seed: int = 0, steps: int = 500,
                 learning_rate: float = 0.01, batch_size: int = 4096,
                 weight_decay: float = 1e-4) -> np.ndarray:
  """Per-pixel logistic regression, `steps` Adam steps on shuffled minibatches of labelled
  pixels; returns the predicted class of every evaluation pixel."""
  x, y = _valid(train_x, train_y, ignore_label)
  if not len(y):
    raise ValueError('the training set has no labelled pixel')
  if y.max() >= num_classes or y.min() < 0:
    raise ValueError(f'labels hold class {int(y.max())} but --num_classes is {num_classes}')
  mean, std = x.mean(0), x.std(0) + 1e-6
  x = ((x - mean) / std).astype(np.float32)
  # Plain NumPy (no TF variables), so it runs the same inside a training strategy's scope.
  rng = np.random.default_rng(seed)
  limit = np.sqrt(6.0 / (x.shape[1] + num_classes))
  params = [rng.uniform(-limit, limit, (x.shape[1], num_classes)).astype(np.float32),
            np.zeros(num_classes, np.float32)]
  moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
  beta1, beta2, epsilon = 0.9, 0.999, 1e-7
  order, position = rng.permutation(len(y)), 0
  for step in range(1, steps + 1):
    if position >= len(y):
      order, position = rng.permutation(len(y)), 0
    index = order[position:position + batch_size]
    position += batch_size
    features, labels = x[index], y[index]
    logits = features @ params[0] + params[1]
    logits -= logits.max(-1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(-1, keepdims=True)
    probabilities[np.arange(len(labels)), labels] -= 1.0  # d(cross-entropy)/d(logits)
    probabilities /= len(labels)
    gradients = [features.T @ probabilities + 2 * weight_decay * params[0],
                 probabilities.sum(0)]
    for param, gradient, (m, v) in zip(params, gradients, moments):
      m[:] = beta1 * m + (1 - beta1) * gradient
      v[:] = beta2 * v + (1 - beta2) * gradient**2
      param -= learning_rate * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + epsilon)
  flat = ((eval_x.reshape(-1, eval_x.shape[-1]) - mean) / std).astype(np.float32)
  logits = flat @ params[0] + params[1]
  return logits.argmax(-1).reshape(eval_x.shape[:-1]).astype(np.int32)


def knn_probe(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, num_classes: int,
              ignore_label: int = 255, k: int = 10, memory_size: int = 50000,
              seed: int = 0, chunk: int = 4096) -> np.ndarray:
  """Dense nearest-neighbour label retrieval with cosine similarity."""
  x, y = _valid(train_x, train_y, ignore_label)
  if not len(y):
    raise ValueError('the training set has no labelled pixel')
  if len(y) > memory_size:
    keep = np.random.default_rng(seed).choice(len(y), memory_size, replace=False)
    x, y = x[keep], y[keep]
  memory = tf.math.l2_normalize(tf.constant(x, tf.float32), -1)
  memory_labels = tf.constant(y, tf.int32)
  k = min(k, len(y))
  flat = eval_x.reshape(-1, eval_x.shape[-1]).astype(np.float32)
  predictions = []
  for start in range(0, len(flat), chunk):
    query = tf.math.l2_normalize(tf.constant(flat[start:start + chunk]), -1)
    similarity, index = tf.math.top_k(tf.matmul(query, memory, transpose_b=True), k)
    votes = tf.one_hot(tf.gather(memory_labels, index), num_classes) * (
        tf.maximum(similarity, 0.0)[..., None] + 1e-6)
    predictions.append(tf.argmax(tf.reduce_sum(votes, axis=1), -1, output_type=tf.int32))
  return tf.concat(predictions, 0).numpy().reshape(eval_x.shape[:-1])


def scores(predictions: np.ndarray, labels: np.ndarray, num_classes: int,
           ignore_label: int = 255) -> Dict[str, object]:
  """{'miou', 'acc', 'iou'}: mean IoU over classes with a non-empty union, pixel accuracy."""
  keep = labels != ignore_label
  truth, guess = labels[keep].astype(np.int64), predictions[keep].astype(np.int64)
  confusion = np.bincount(truth * num_classes + guess,
                          minlength=num_classes**2).reshape(num_classes, num_classes)
  intersection = np.diag(confusion).astype(np.float64)
  union = confusion.sum(0) + confusion.sum(1) - intersection
  present = union > 0
  iou = np.where(present, intersection / np.maximum(union, 1), np.nan)
  return {'miou': float(np.nanmean(iou)) if present.any() else 0.0,
          'acc': float(intersection.sum() / max(confusion.sum(), 1)),
          'iou': [None if np.isnan(v) else float(v) for v in iou]}


def evaluate(encoder: frozen.FrozenEncoder, train_images: np.ndarray,
             train_labels: np.ndarray, eval_images: np.ndarray, eval_labels: np.ndarray,
             num_classes: int, levels, probes=('linear', 'knn'), ignore_label: int = 255,
             stride: int = 4, k: int = 10, seed: int = 0,
             steps: int = 500) -> Dict[str, Dict[str, object]]:
  """{'<probe>/level<L>': scores} for every probe and level."""
  unknown = sorted(set(probes) - {'linear', 'knn'})
  if unknown:
    raise ValueError(f'unknown probe(s) {unknown}: use linear and/or knn')
  train_y, eval_y = pixel_labels(train_labels, stride), pixel_labels(eval_labels, stride)
  results = {}
  for level in levels:
    train_x = pixel_features(encoder, train_images, level, stride)
    eval_x = pixel_features(encoder, eval_images, level, stride)
    for probe in probes:
      if probe == 'linear':
        guess = linear_probe(train_x, train_y, eval_x, num_classes, ignore_label, seed, steps)
      else:
        guess = knn_probe(train_x, train_y, eval_x, num_classes, ignore_label, k, seed=seed)
      results[f'{probe}/level{level}'] = scores(guess, eval_y, num_classes, ignore_label)
  return results
