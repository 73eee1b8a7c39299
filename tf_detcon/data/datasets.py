"""The pretraining tf.data pipeline: records → validated examples → host views → batches."""

from typing import List, Optional

import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.configs import validation
from tf_detcon.data import color
from tf_detcon.data import decode
from tf_detcon.data import embedded
from tf_detcon.data import geometry


def resolve_files(input_path: str) -> List[str]:
  """Record files of a comma-separated list of paths/patterns; '' is the embedded sample set."""
  if not input_path:
    return embedded.files()
  files = []
  for pattern in (p.strip() for p in input_path.split(',')):
    if not pattern:
      continue
    matched = sorted(tf.io.gfile.glob(pattern))
    if not matched:
      raise ValueError(f'input_path {pattern!r} matches no file')
    files.extend(matched)
  return files


def build_dataset(cfg: data_config.DataConfig,
                  input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
  """Batches of two views (and masks, and DetCo patches) for one input pipeline.

  With `cfg.color_on_device` the batches hold un-coloured views in [0, 1] and the train step
  calls `color.finalize_batch`; otherwise that runs here and the batches are final.
  """
  validation.validate_data(cfg)
  files = resolve_files(cfg.input_path)
  batch_size = cfg.global_batch_size
  ds = tf.data.Dataset.from_tensor_slices(files)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(cfg.global_batch_size)
    if input_context.num_input_pipelines > 1:
      if len(files) < input_context.num_input_pipelines:
        raise ValueError(f'{len(files)} record files cannot feed '
                         f'{input_context.num_input_pipelines} input pipelines')
      ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if cfg.is_training:
    ds = ds.shuffle(len(files), seed=cfg.seed).repeat()
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(cfg.cycle_length, len(files)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=cfg.deterministic)
  if cfg.is_training and cfg.shuffle_buffer_size > 1:
    ds = ds.shuffle(cfg.shuffle_buffer_size, seed=cfg.seed)
  ds = ds.map(lambda record: decode.decode_example(record, cfg.masks),
              num_parallel_calls=tf.data.AUTOTUNE)
  if cfg.on_bad_example == 'skip':
    ds = ds.filter(lambda example: example['valid'])
  else:
    ds = ds.map(decode.check_example, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(lambda example: geometry.host_views(example, cfg),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=cfg.drop_remainder)
  if not cfg.color_on_device:
    ds = ds.map(lambda batch: color.finalize_batch(batch, cfg),
                num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)
