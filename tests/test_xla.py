"""Every method's train step compiles under XLA (`jit_compile=True`), the CPU proxy for TPU
compilability: tiny configs that together train every method of the registry (a composed
method, DeCon on DetCo, compiles its base's step within its own)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tinies_covering_every_method
from tests.conftest import tiny_params
from tf_detcon.training import trainer


@pytest.mark.parametrize('name', tinies_covering_every_method())
def test_the_train_step_compiles_with_xla_and_trains(name, tmp_path, embedded_files):
  """Also when the process runs under op determinism (another seeded run before it), and, for
  DetCon_B (BYOL's regression loss and EMA target, with masks), seeded for exact resume: a
  compiled step runs without op determinism, and two seeded compiled runs end with the same
  weights."""
  del embedded_files
  tf.config.experimental.enable_op_determinism()
  seeded = name == 'detcon_b_tiny'

  def train(model_dir):
    params = tiny_params(name, train_steps=2)
    params.runtime.override({'enable_xla': True, 'distribution_strategy': 'off'})
    if seeded:
      params.task.train_data.override({'seed': 5, 'deterministic': True})
    run = trainer.Run(params, str(tmp_path / model_dir))
    assert run.model.jit_compile and run.exact_resume == seeded
    history = []
    fit = run.model.fit
    run.model.fit = lambda *a, **k: history.append(fit(*a, **k).history) or history[-1]
    run.train()
    assert run.step == 2 and np.isfinite(history[-1]['loss'][-1])
    return [v.numpy() for v in run.model.weights]

  first = train('first')
  if seeded:
    second = train('second')
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_xla_with_a_multi_device_mirrored_strategy_is_refused(two_replicas, tmp_path,
                                                              embedded_files):
  del embedded_files
  params = tiny_params('simclr_tiny', train_steps=2, steps_per_loop=1)
  params.runtime.enable_xla = True
  with pytest.raises(ValueError, match='runtime.enable_xla is not supported with '
                     'MirroredStrategy over 2 devices'):
    trainer.Run(params, str(tmp_path / 'refused'), two_replicas)
