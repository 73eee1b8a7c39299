"""The input contract's proof (tests/toy_pixpro.py): a PixPro-style method that needs each
view's box and flip gets them from the unchanged data pipeline, computes PixPro's loss (checked
against NumPy), and trains through the unchanged trainer under XLA and on two replicas."""

import numpy as np
import tensorflow as tf

from tests import toy_pixpro
from tests.conftest import tiny_params
from tests.test_trainer import _mirrored_copies_differ
from tf_detcon.modeling import base
from tf_detcon.training import trainer


def _numpy_centres(box, flip, size):
  y0, x0, y1, x1 = box
  centre = (np.arange(size) + 0.5) / size
  xs = 1 - centre if flip else centre
  return np.array([(y0 + (y1 - y0) * cy, x0 + (x1 - x0) * cx) for cy in centre for cx in xs])


def _numpy_head(head, x):
  w1, b1 = head.hidden.get_weights()
  gamma, beta, mean, variance = head.norm.get_weights()
  hidden = (x @ w1 + b1 - mean) / np.sqrt(variance + head.norm.epsilon) * gamma + beta
  return np.maximum(hidden, 0) @ head.output_layer.get_weights()[0]


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_the_loss_is_pixpros_computed_independently():
  size, channels = 4, 8
  objective = toy_pixpro.PixProObjective(channels, '3', 16, 8, threshold=0.7, sharpness=2.0)
  rng = np.random.default_rng(0)
  features = [rng.normal(size=(2, size, size, channels)).astype(np.float32) for _ in range(4)]
  box_list = [np.array([[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0]], np.float32),
              np.array([[0.2, 0.1, 0.8, 0.8], [0.0, 0.0, 1.0, 1.0]], np.float32)]
  flip_list = [np.array([False, True]), np.array([True, True])]
  encoded = base.Encoded(online=base.Branch(views=[{'3': tf.constant(f)} for f in features[:2]]),
                         target=base.Branch(views=[{'3': tf.constant(f)} for f in features[2:]]))
  inputs = base.Inputs(views=(None, None), masks=(None, None), seed=tf.constant([0, 0]),
                       boxes=tuple(tf.constant(b) for b in box_list),
                       flips=tuple(tf.constant(f) for f in flip_list))
  loss = float(objective(encoded, inputs, training=False).loss)

  transform_w, transform_b = objective.transform.get_weights()
  expected = 0.0
  for a, b in ((0, 1), (1, 0)):
    per_image = []
    for i in range(2):
      x = _numpy_head(objective.projector, features[a][i].reshape(-1, channels))
      similarity = np.maximum(_unit(x) @ _unit(x).T, 0) ** 2
      prediction = _unit(similarity @ _unit(x @ transform_w + transform_b))
      target = _unit(_numpy_head(objective.target_projector,
                                 features[2 + b][i].reshape(-1, channels)))
      centres_a = _numpy_centres(box_list[a][i], flip_list[a][i], size)
      centres_b = _numpy_centres(box_list[b][i], flip_list[b][i], size)
      diagonal = max(np.hypot((bx[2] - bx[0]) / size, (bx[3] - bx[1]) / size)
                     for bx in (box_list[a][i], box_list[b][i]))
      distance = np.linalg.norm(centres_a[:, None] - centres_b[None], axis=-1) / diagonal
      mask = distance < 0.7
      assert mask.sum() > 0
      per_image.append((prediction @ target.T)[mask].sum() / (mask.sum() + 1e-6))
    expected += -2 * np.mean(per_image)
  np.testing.assert_allclose(loss, expected, rtol=1e-4)


def _pixpro_params(**trainer_overrides):
  params = tiny_params('simclr_tiny', **trainer_overrides)
  params.task.method = toy_pixpro.PixProMethodConfig(type='pixpro')
  return params


def test_it_trains_on_the_pipelines_boxes_under_xla(tmp_path, embedded_files):
  """The boxes and flips reach the method from the unchanged pipeline (positive pairs are
  found), and its step compiles with XLA and trains."""
  del embedded_files
  params = _pixpro_params(train_steps=2, steps_per_loop=2)
  params.runtime.override({'enable_xla': True, 'distribution_strategy': 'off'})
  run = trainer.Run(params, str(tmp_path / 'pixpro'))
  assert isinstance(run.model, toy_pixpro.PixProModel) and run.model.jit_compile
  before = [v.numpy().copy() for v in run.model.encoder.trainable_variables]
  history = []
  fit = run.model.fit
  run.model.fit = lambda *a, **k: history.append(fit(*a, **k).history) or history[-1]
  run.train()
  assert run.step == 2 and np.isfinite(history[-1]['loss'][-1])
  assert history[-1]['positive_pairs'][-1] > 0
  assert any(not np.array_equal(b, v.numpy())
             for b, v in zip(before, run.model.encoder.trainable_variables))


def test_two_replicas_keep_its_mirrored_variables_bit_identical(two_replicas, tmp_path,
                                                                embedded_files):
  del embedded_files
  run = trainer.Run(_pixpro_params(train_steps=3, steps_per_loop=1), str(tmp_path / 'two'),
                    strategy=two_replicas)
  run.train()
  assert run.step == 3
  assert _mirrored_copies_differ(two_replicas, run.model.variables) == []
