"""The distribution strategy and precision from the runtime config and flags."""

from typing import Optional

from absl import logging
import tensorflow as tf
import tf_keras

from official.common import distribute_utils
from official.core import config_definitions as cfg


def configure_precision(runtime: cfg.RuntimeConfig) -> None:
  """float32, or bfloat16 compute with float32 variables (TPU). float16 needs loss scaling,
  which the pretraining step does not do: it is refused rather than silently unstable."""
  dtype = runtime.mixed_precision_dtype or 'float32'
  if dtype == 'bfloat16':
    tf_keras.mixed_precision.set_global_policy('mixed_bfloat16')
  elif dtype == 'float32':
    tf_keras.mixed_precision.set_global_policy('float32')
  else:
    raise ValueError(f"runtime.mixed_precision_dtype must be 'float32' or 'bfloat16', got {dtype!r}")


def build_strategy(runtime: cfg.RuntimeConfig,
                   tpu: Optional[str] = None) -> tf.distribute.Strategy:
  """Model Garden's strategy from the runtime config: TPUStrategy (`--tpu`, e.g. 'local' on a TPU
  VM), Mirrored over `num_gpus` GPUs (0: all local GPUs, else the CPU) with `all_reduce_alg`
  and `num_packs`, multi-worker mirrored (TF_CONFIG), one device, or the default strategy."""
  kind = runtime.distribution_strategy
  tpu = tpu or runtime.tpu
  if kind == 'tpu' and not tpu:
    raise ValueError("runtime.distribution_strategy='tpu' needs --tpu (e.g. --tpu=local on a "
                     "TPU VM); on CPU/GPU use --params_override="
                     "runtime.distribution_strategy=mirrored")
  if kind not in ('tpu', 'mirrored', 'multi_worker_mirrored', 'one_device', 'off'):
    raise ValueError(f'unknown runtime.distribution_strategy {kind!r}')
  available = len(tf.config.list_physical_devices('GPU'))
  if runtime.num_gpus > available:
    raise ValueError(f'runtime.num_gpus is {runtime.num_gpus} but this machine has {available} '
                     'GPUs')
  if runtime.all_reduce_alg == 'nccl' and kind == 'mirrored' and not available:
    raise ValueError("runtime.all_reduce_alg 'nccl' needs GPUs; on CPU use 'hierarchical_copy' "
                     'or leave it unset')
  num_gpus = runtime.num_gpus or {'mirrored': available,
                                  'one_device': min(available, 1)}.get(kind, 0)
  strategy = distribute_utils.get_distribution_strategy(
      distribution_strategy=kind, num_gpus=num_gpus, tpu_address=tpu,
      all_reduce_alg=runtime.all_reduce_alg, num_packs=runtime.num_packs)
  logging.info('strategy %s with %d replicas', type(strategy).__name__,
               strategy.num_replicas_in_sync)
  return strategy
