"""The pretraining tf.data pipeline: examples → host views → batches, with Model Garden's input
settings (`official.core.config_definitions.DataConfig`, as its `InputReader` applies them).

Examples come from our TFRecords (`input_path`, or the embedded sample set) or straight from a
TFDS dataset (`tfds_name`; images only, so grid/global masks). `cache`, `sharding`,
`cycle_length`, `block_length`, `deterministic`, `prefetch_buffer_size`, `ram_budget`,
`autotune_algorithm` and the runtime's `dataset_num_private_threads` act as in Model Garden; with
`enable_tf_data_service` the whole host pipeline runs on tf.data service workers.
"""

import random
from typing import Dict, List, Optional

import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.configs import validation
from tf_detcon.data import color
from tf_detcon.data import decode
from tf_detcon.data import embedded
from tf_detcon.data import geometry

# One suffix per process, as Model Garden's InputReader does, so a restarted job (a preempted
# TPU host) does not attach to the tf.data service state of its previous life.
_JOB_SUFFIX = random.randint(0, 2**31)


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


def _shards(cfg: data_config.DataConfig, input_context: Optional[tf.distribute.InputContext]
            ) -> Optional[tf.distribute.InputContext]:
  """The input context to shard by, or None when the data is not split between pipelines."""
  if (input_context is None or input_context.num_input_pipelines <= 1 or not cfg.sharding
      or cfg.enable_tf_data_service):
    return None
  return input_context


def record_dataset(cfg: data_config.DataConfig,
                   input_context: Optional[tf.distribute.InputContext] = None
                   ) -> tf.data.Dataset:
  """One pass over the serialized records: files sharded by pipeline (`sharding`), their order
  reshuffled each pass, interleaved (`cycle_length`, `block_length`), cached in memory after the
  first pass (`cache`), then shuffled (`shuffle_buffer_size`, `seed`).

  `cache` holds the records, not decoded examples: decoding draws one of the stored FH maps at
  random, and caching its result would freeze that draw.
  """
  files = resolve_files(cfg.input_path)
  ds = tf.data.Dataset.from_tensor_slices(files)
  shard_by = _shards(cfg, input_context)
  if shard_by is not None:
    if len(files) < shard_by.num_input_pipelines:
      raise ValueError(f'{len(files)} record files cannot feed {shard_by.num_input_pipelines} '
                       'input pipelines (or set task.train_data.sharding=false)')
    ds = ds.shard(shard_by.num_input_pipelines, shard_by.input_pipeline_id)
  if cfg.is_training and not cfg.cache:
    ds = ds.shuffle(len(files), seed=cfg.seed, reshuffle_each_iteration=True)
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(cfg.cycle_length, len(files)),
                     block_length=cfg.block_length, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=cfg.deterministic)
  if cfg.cache:
    ds = ds.cache()
  if cfg.is_training and cfg.shuffle_buffer_size > 1:
    ds = ds.shuffle(cfg.shuffle_buffer_size, seed=cfg.seed, reshuffle_each_iteration=True)
  return ds


def describe_source(cfg: data_config.DataConfig) -> str:
  """Where the examples come from, for messages: the TFDS split or the record files."""
  if cfg.tfds_name:
    return f'TFDS {cfg.tfds_name}/{cfg.tfds_split}'
  files = resolve_files(cfg.input_path)
  shown = ', '.join(files[:3]) + (f' and {len(files) - 3} more' if len(files) > 3 else '')
  return f'{len(files)} record file{"s" if len(files) > 1 else ""} ({shown})'


def tfds_examples(cfg: data_config.DataConfig,
                  input_context: Optional[tf.distribute.InputContext] = None
                  ) -> tf.data.Dataset:
  """Examples (image, grid mask) read directly from TFDS: `tfds_name`, `tfds_split`,
  `tfds_data_dir`. No precompute: the masks are the grid / global mask of `masks.grid_size`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (optional path)
  try:
    builder = tfds.builder(cfg.tfds_name, data_dir=cfg.tfds_data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f'task.train_data.tfds_name {cfg.tfds_name!r} is not a TFDS dataset '
                     f'(or not prepared in tfds_data_dir {cfg.tfds_data_dir!r})') from e
  if not tf.io.gfile.exists(builder.data_dir):
    raise ValueError(f'TFDS dataset {cfg.tfds_name!r} is not prepared in '
                     f'{cfg.tfds_data_dir or "the default TFDS data_dir"}: run '
                     f'`tfds build {cfg.tfds_name}` (or set task.train_data.tfds_data_dir)')
  shard_by = _shards(cfg, input_context)
  read_config = tfds.ReadConfig(input_context=shard_by, shuffle_seed=cfg.seed,
                                interleave_cycle_length=cfg.cycle_length,
                                interleave_block_length=cfg.block_length, add_tfds_id=True)
  try:
    ds = builder.as_dataset(split=cfg.tfds_split, shuffle_files=cfg.is_training,
                            read_config=read_config)
  except ValueError as e:
    raise ValueError(f'task.train_data.tfds_split {cfg.tfds_split!r} of {cfg.tfds_name!r}: '
                     f'{str(e).splitlines()[0]}') from e

  def example(element: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    image = element['image']
    if image.shape.rank == 3 and image.shape[-1] == 1:
      image = tf.image.grayscale_to_rgb(image)
    shape = tf.shape(image)
    return {'key': element['tfds_id'], 'image': image,
            'mask': decode.grid_ids(shape[0], shape[1], cfg.masks.grid_size),
            'valid': tf.constant(True), 'error': tf.constant('')}

  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
  if cfg.cache:
    ds = ds.cache()
  if cfg.is_training and cfg.shuffle_buffer_size > 1:
    ds = ds.shuffle(cfg.shuffle_buffer_size, seed=cfg.seed, reshuffle_each_iteration=True)
  return ds


def examples(cfg: data_config.DataConfig,
             input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
  """Validated examples {key, image, mask, valid, error}, from TFDS or from our records,
  repeated when training. The repeat comes last, so a source with no (valid) example ends the
  dataset instead of being reread forever (the trainer then says so)."""
  if cfg.tfds_name:
    ds = tfds_examples(cfg, input_context)
  else:
    ds = record_dataset(cfg, input_context).map(
        lambda record: decode.decode_example(record, cfg.masks),
        num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.on_bad_example == 'skip':
      ds = ds.filter(lambda example: example['valid'])
    else:
      ds = ds.map(decode.check_example, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.repeat() if cfg.is_training else ds


def with_options(ds: tf.data.Dataset, cfg: data_config.DataConfig,
                 private_threads: Optional[int] = None) -> tf.data.Dataset:
  """Model Garden's dataset options: determinism, autotuning and a private thread pool."""
  options = tf.data.Options()
  if cfg.deterministic is not None:
    options.deterministic = cfg.deterministic
  if cfg.autotune_algorithm:
    options.autotune.autotune_algorithm = (
        tf.data.experimental.AutotuneAlgorithm[cfg.autotune_algorithm])
  if cfg.ram_budget:
    options.autotune.ram_budget = int(cfg.ram_budget * 1024**3)
  if private_threads:
    options.threading.private_threadpool_size = private_threads
  return ds.with_options(options)


def data_service_job(cfg: data_config.DataConfig) -> str:
  """The job name readers share: Model Garden's `<name>_bs<global batch>_<process suffix>`."""
  return f'{cfg.tf_data_service_job_name or "tf_detcon"}_bs{cfg.global_batch_size}_{_JOB_SUFFIX}'


def build_dataset(cfg: data_config.DataConfig,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  private_threads: Optional[int] = None) -> tf.data.Dataset:
  """Batches of two views (and masks, and DetCo patches) for one input pipeline.

  With `cfg.color_on_device` the batches hold un-coloured views in [0, 1] and the train step
  calls `color.finalize_batch`; otherwise that runs here and the batches are final. With
  `enable_tf_data_service`, everything up to the batch runs on the service's workers.
  """
  validation.validate_data(cfg)
  batch_size = cfg.global_batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(cfg.global_batch_size)
  ds = examples(cfg, input_context)
  ds = ds.map(lambda example: geometry.host_views(example, cfg),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=cfg.drop_remainder)
  if not cfg.color_on_device:
    ds = ds.map(lambda batch: color.finalize_batch(batch, cfg),
                num_parallel_calls=tf.data.AUTOTUNE)
  if cfg.enable_tf_data_service:
    ds = ds.apply(tf.data.experimental.service.distribute(
        processing_mode='parallel_epochs', service=cfg.tf_data_service_address,
        job_name=data_service_job(cfg)))
  ds = with_options(ds, cfg, private_threads)
  return ds.prefetch(cfg.prefetch_buffer_size or tf.data.AUTOTUNE)
