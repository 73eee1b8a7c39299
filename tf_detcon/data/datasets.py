"""The pretraining tf.data pipeline: examples → host views → batches, with Model Garden's input
settings (`official.core.config_definitions.DataConfig`, as its `InputReader` applies them).

Examples come from our TFRecords (`input_path`, or the embedded sample set) or straight from a
TFDS dataset (`tfds_name`; images only, so grid/global masks). `cache`, `sharding`,
`cycle_length`, `block_length`, `deterministic`, `prefetch_buffer_size`, `ram_budget`,
`autotune_algorithm` and the runtime's `dataset_num_private_threads` act as in Model Garden; with
`enable_tf_data_service` the whole host pipeline runs on tf.data service workers.
"""

import random
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import tensorflow as tf

from tf_detcon.configs import data as data_config
from tf_detcon.configs import validation
from tf_detcon.primitives import color
from tf_detcon.data import decode
from tf_detcon.data import embedded
from tf_detcon.data import geometry
from tf_detcon.data import mask_sources
from tf_detcon.primitives import seeds

# One suffix per process, as Model Garden's InputReader does, so a restarted job (a preempted
# TPU host) does not attach to the tf.data service state of its previous life.
_JOB_SUFFIX = random.randint(0, 2**31)


def _plain(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` as tf.data should trace it: as written. tf.data otherwise rewrites each function it
  is handed, and every function that one calls, with autograph (once per function and process).
  The pipeline's functions branch on tensors only through `tf.cond`/`tf.where`, so the rewrite
  changes no op, yet it takes most of the time a process spends building its first small
  pipeline. A tensor used as a Python bool fails at trace."""
  return tf.autograph.experimental.do_not_convert(fn)


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


def _pipeline_id(input_context: Optional[tf.distribute.InputContext]) -> int:
  return 0 if input_context is None else input_context.input_pipeline_id


def _pipeline_files(cfg: data_config.DataConfig,
                    input_context: Optional[tf.distribute.InputContext]) -> List[str]:
  """This pipeline's record files: all of them, or its shard (`sharding`)."""
  files = resolve_files(cfg.input_path)
  shard_by = _shards(cfg, input_context)
  if shard_by is None:
    return files
  if len(files) < shard_by.num_input_pipelines:
    raise ValueError(f'{len(files)} record files cannot feed {shard_by.num_input_pipelines} '
                     'input pipelines (or set task.train_data.sharding=false)')
  return files[shard_by.input_pipeline_id::shard_by.num_input_pipelines]


def record_stream(cfg: data_config.DataConfig,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  start: int = 0) -> tf.data.Dataset:
  """(position, serialized record) pairs of this pipeline, epoch after epoch when training.

  Epoch e reads the pipeline's files (`sharding`) in an order drawn for e, interleaved
  (`cycle_length`, `block_length`, `deterministic`), then shuffles the records
  (`shuffle_buffer_size`) with a seed drawn for e; `cache` keeps the records in memory after the
  first epoch (in file order, as Model Garden caches). A record's position is (e, its index in
  that order) (`seeds.position`), so the stream can start again at any `start` position: the
  epoch is rebuilt and the records before it are read but not decoded.

  Evaluation (`is_training` false) reads one pass in file order.
  """
  if not cfg.is_training:
    files = _pipeline_files(cfg, input_context)
    return _interleaved(cfg, files, len(files)).enumerate()
  files = _pipeline_files(cfg, input_context)
  first_epoch, epoch_records = _epoch_records(cfg, files, _pipeline_id(input_context), start)
  return _epochs(first_epoch).flat_map(epoch_records)


def _interleaved(cfg: data_config.DataConfig, files: Union[List[str], tf.Tensor],
                 num_files: int) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices(files).interleave(
      tf.data.TFRecordDataset, cycle_length=min(cfg.cycle_length, num_files),
      block_length=cfg.block_length, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=cfg.deterministic)


def _epoch_records(cfg: data_config.DataConfig, files: List[str], pipeline: int, start: int
                   ) -> Tuple[int, Callable[[tf.Tensor], tf.data.Dataset]]:
  """(the epoch of `start`, epoch → that epoch's (position, record) pairs from `start` on) of
  one pipeline's `files`."""
  base = seeds.base_seed(cfg)

  first_epoch, skip = seeds.split_position(start)
  cached = _interleaved(cfg, files, len(files)).cache() if cfg.cache else None

  def epoch_records(epoch: tf.Tensor) -> tf.data.Dataset:
    if cached is not None:
      ds = cached
    else:
      order = tf.random.experimental.stateless_shuffle(
          tf.constant(files), seeds.epoch_seed(base, pipeline, epoch, seeds.FILE_ORDER))
      ds = _interleaved(cfg, order, len(files))
    if cfg.shuffle_buffer_size > 1:
      ds = _seeded_shuffle(ds, cfg.shuffle_buffer_size,
                           seeds.epoch_seed(base, pipeline, epoch, seeds.RECORD_ORDER)[0])
    skipped = tf.where(tf.equal(epoch, first_epoch), tf.constant(skip, tf.int64), 0)
    return ds.skip(skipped).enumerate(start=seeds.position(epoch, skipped))

  return first_epoch, _plain(epoch_records)


def _seeded_shuffle(ds: tf.data.Dataset, buffer_size: int, seed: tf.Tensor) -> tf.data.Dataset:
  """`ds.shuffle` keyed by the tensor `seed` alone. tf.data pairs an op seed with the global seed
  (`tf.random.set_seed`), and a global seed of 0 with a tensor op seed fails to trace; the
  dataset function's graph is traced here without one, so the order depends on `seed` only."""
  graph = tf.compat.v1.get_default_graph()  # the dataset function's graph
  global_seed, graph.seed = graph.seed, None
  try:
    return ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=False)
  finally:
    graph.seed = global_seed


def _epochs(first: int) -> tf.data.Dataset:
  return tf.data.Dataset.range(first, 2**62)


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
  """Examples {key, image} read directly from TFDS: `tfds_name`, `tfds_split`, `tfds_data_dir`.
  No precompute: `examples` gives them the id maps of a source that needs no stored maps (the
  grid / global mask)."""
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
  # Seeded always (`seeds.base_seed`: the process's own without `seed`), so that TFDS's file
  # shuffle also runs under op determinism (a seeded run of another experiment in the process).
  seed = seeds.base_seed(cfg)
  read_config = tfds.ReadConfig(input_context=shard_by, shuffle_seed=seed,
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
    return {'key': element['tfds_id'], 'image': image}

  ds = ds.map(_plain(example), num_parallel_calls=tf.data.AUTOTUNE)
  if cfg.cache:
    ds = ds.cache()
  if cfg.is_training and cfg.shuffle_buffer_size > 1:
    ds = ds.shuffle(cfg.shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)
  return ds


def examples(cfg: data_config.DataConfig,
             input_context: Optional[tf.distribute.InputContext] = None,
             start: int = 0) -> tf.data.Dataset:
  """Validated examples {key, image, mask, valid, error, position, pipeline}, from TFDS or from
  our records (from position `start`), endless when training.

  Every host draw for an example is keyed by its pipeline and position (`seeds.record_seed`).
  A source with no (valid) example in a whole epoch ends the dataset instead of being reread
  forever (the trainer then says so).
  """
  pipeline = _pipeline_id(input_context)
  base = seeds.base_seed(cfg)

  def origin(position: tf.Tensor) -> Dict[str, tf.Tensor]:
    return {'position': position, 'pipeline': tf.constant(pipeline, tf.int32)}

  if cfg.tfds_name:
    source = mask_sources.build(cfg.masks)

    def with_ids(position: tf.Tensor, example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
      ids = source.ids(example['image'], None, example['key'],
                       seeds.record_seed(base, pipeline, position, seeds.DECODE))
      return dict(example, mask=ids.mask, valid=ids.valid, error=ids.error, **origin(position))

    ds = tfds_examples(cfg, input_context)
    ds = ds.repeat() if cfg.is_training else ds
    return ds.enumerate().map(_plain(with_ids), num_parallel_calls=tf.data.AUTOTUNE)

  def decoded(ds: tf.data.Dataset) -> tf.data.Dataset:
    def decode_record(position: tf.Tensor, record: tf.Tensor) -> Dict[str, tf.Tensor]:
      example = decode.decode_example(
          record, cfg.masks, seeds.record_seed(base, pipeline, position, seeds.DECODE))
      return dict(example, **origin(position))
    ds = ds.map(_plain(decode_record), num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.on_bad_example == 'skip':
      return ds.filter(_plain(lambda example: example['valid']))
    return ds.map(_plain(decode.check_example), num_parallel_calls=tf.data.AUTOTUNE)

  if not cfg.is_training:
    return decoded(record_stream(cfg, input_context))
  files = _pipeline_files(cfg, input_context)
  first_epoch, epoch_records = _epoch_records(cfg, files, pipeline, start)

  def has_example(epoch: tf.Tensor) -> tf.Tensor:
    # Whether the records (in file order) yield a valid example: usually the first record.
    # Validity is the records' own, the same every epoch, so only the first epoch is probed: a
    # small dataset would otherwise reopen its files for the probe on every epoch.
    def probe() -> tf.Tensor:
      records = _interleaved(cfg, files, len(files)).enumerate(start=seeds.position(epoch, 0))
      return decoded(records).take(1).reduce(
          tf.constant(False), _plain(lambda found, example: True))
    return tf.cond(tf.equal(epoch, first_epoch), probe, lambda: tf.constant(True))

  # An epoch without a valid example ends the input instead of being reread forever.
  return decoded(_epochs(first_epoch).take_while(_plain(has_example)).flat_map(epoch_records))


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
                  private_threads: Optional[int] = None, start: int = 0,
                  local_views: Optional[data_config.LocalViewConfig] = None) -> tf.data.Dataset:
  """`batches` of a `cfg` (and `local_views` recipe) checked first, for callers of their own."""
  validation.validate_data(cfg)
  if local_views is not None:
    local_views.check('local_views')
  return batches(cfg, input_context, private_threads, start, local_views)


def batches(cfg: data_config.DataConfig,
            input_context: Optional[tf.distribute.InputContext] = None,
            private_threads: Optional[int] = None, start: int = 0,
            local_views: Optional[data_config.LocalViewConfig] = None) -> tf.data.Dataset:
  """Batches of two views (and masks, and the local views of a method's `local_views` recipe,
  `MethodBlock.view_recipe`) for one input pipeline of a validated `cfg` (the trainer validates
  the experiment once), from the record position `start` (where a resumed run stopped reading,
  `seeds`).

  With `cfg.color_on_device` the batches hold un-coloured views in [0, 1] and the train step
  calls `color.finalize_batch`; otherwise that runs here and the batches are final. With
  `enable_tf_data_service`, everything up to the batch runs on the service's workers.
  """
  batch_size = cfg.global_batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(cfg.global_batch_size)
  if _pipeline_id(input_context) >= seeds.MAX_INPUT_PIPELINES:
    raise ValueError(f'at most {seeds.MAX_INPUT_PIPELINES} input pipelines are supported')
  ds = examples(cfg, input_context, start)
  ds = ds.map(_plain(lambda example: geometry.host_views(example, cfg, local_views)),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=cfg.drop_remainder)
  if not cfg.color_on_device:
    ds = ds.map(_plain(lambda batch: color.finalize_batch(batch, cfg, local_views)),
                num_parallel_calls=tf.data.AUTOTUNE)
  if cfg.enable_tf_data_service:
    ds = ds.apply(tf.data.experimental.service.distribute(
        processing_mode='parallel_epochs', service=cfg.tf_data_service_address,
        job_name=data_service_job(cfg)))
  ds = with_options(ds, cfg, private_threads)
  return ds.prefetch(cfg.prefetch_buffer_size or tf.data.AUTOTUNE)
