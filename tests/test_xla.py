"""Every method's train step compiles under XLA (`jit_compile=True`), the CPU proxy for TPU
compilability: one tiny config per method, and BYOL for its regression loss."""

import numpy as np
import pytest

from tests.conftest import tiny_params
from tf_detcon.training import trainer


@pytest.mark.parametrize('name', ['detcon_b_tiny', 'byol_tiny', 'detco_tiny',
                                  'decon_ml_detcon_b_tiny'])
def test_the_train_step_compiles_with_xla_and_trains(name, tmp_path, embedded_files):
  del embedded_files
  params = tiny_params(name, train_steps=2, steps_per_loop=2)
  params.runtime.override({'enable_xla': True, 'distribution_strategy': 'off'})
  run = trainer.Run(params, str(tmp_path / name))
  assert run.model.jit_compile
  history = []
  fit = run.model.fit
  run.model.fit = lambda *a, **k: history.append(fit(*a, **k).history) or history[-1]
  run.train()
  assert run.step == 2 and np.isfinite(history[-1]['loss'][-1])


def test_xla_with_a_multi_device_mirrored_strategy_is_refused(two_replicas, tmp_path,
                                                              embedded_files):
  del embedded_files
  params = tiny_params('simclr_tiny', train_steps=2, steps_per_loop=1)
  params.runtime.enable_xla = True
  with pytest.raises(ValueError, match='runtime.enable_xla is not supported with '
                     'MirroredStrategy over 2 devices'):
    trainer.Run(params, str(tmp_path / 'refused'), two_replicas)
