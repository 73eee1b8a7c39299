"""Every config check in one pass, before anything is built: ranges, divisibility, sizes, kinds.

Each problem is a `ConfigError` (a ValueError, so the launchers print it as one line) that names
the setting by its full path, says what it holds and what would be valid. The method blocks
check themselves (`configs/methods.py`); this module runs them with the data, optimisation,
runtime and trainer checks. Code below this layer assumes a validated config.
"""

import re
from typing import Optional

from official.core import config_definitions as cfg

from tf_detcon.configs import checks
from tf_detcon.configs import data as data_config
from tf_detcon.configs import fields
from tf_detcon.configs import pretrain

ConfigError = checks.ConfigError
STRATEGIES = ('tpu', 'mirrored', 'multi_worker_mirrored', 'one_device', 'off')
PRECISIONS = ('float32', 'bfloat16')


def validate_data(data: data_config.DataConfig, path: str = 'task.train_data') -> None:
  """The input pipeline's settings (`datasets.build_dataset` runs this for a caller of its own;
  the trainer's pipelines rely on `validate`)."""
  checks.one_of(data.on_bad_example, ('error', 'skip'), f'{path}.on_bad_example')
  checks.one_of_config(data.masks, f'{path}.masks').check(f'{path}.masks.{data.masks.type}')
  checks.require(data.global_batch_size >= 1,
                 f'{path}.global_batch_size must be >= 1, got {data.global_batch_size}')
  validate_input_source(data, path)
  for name in ('view1', 'view2'):
    view = getattr(data, name)
    where = f'{path}.{name}'
    checks.require(0 < view.crop_area_min <= view.crop_area_max <= 1,
                   f'{where}: need 0 < crop_area_min <= crop_area_max <= 1, got '
                   f'{view.crop_area_min}, {view.crop_area_max}')
    checks.require(0 < view.aspect_ratio_min <= view.aspect_ratio_max,
                   f'{where}: need 0 < aspect_ratio_min <= aspect_ratio_max')
    checks.require(view.output_size >= 8,
                   f'{where}.output_size must be >= 8, got {view.output_size}')
    checks.probability(view.flip_prob, f'{where}.flip_prob')
    for prob in ('jitter_prob', 'grayscale_prob', 'blur_prob', 'solarize_prob'):
      checks.probability(getattr(view.color, prob), f'{where}.color.{prob}')
    checks.one_of(view.color.jitter_semantics, data_config.JITTER_SEMANTICS,
                  f'{where}.color.jitter_semantics')
    for strength in ('brightness', 'contrast', 'saturation'):
      value = getattr(view.color, strength)
      checks.require(value >= 0, f'{where}.color.{strength} must be >= 0, got {value}')
    checks.require(0 <= view.color.hue <= 0.5,
                   f'{where}.color.hue must be in [0, 0.5], got {view.color.hue}')


def validate_input_source(data: data_config.DataConfig, path: str) -> None:
  """Where the examples come from (records or TFDS) and how they are served (tf.data service)."""
  if data.tfds_name:
    checks.require(not data.input_path, f'{path}: set input_path or tfds_name, not both')
    checks.require(bool(data.tfds_split), f"{path}.tfds_split is required with tfds_name "
                   f"(e.g. 'train')")
    checks.require(not data.masks.get().reads_stored_masks(),
                   f'{path}.tfds_name reads images only; masks.type {data.masks.type!r} (FH or '
                   'ground truth) needs records with masks: run launch/make_masks.py and set '
                   'input_path to its shards')
  else:
    checks.require(not (data.tfds_split or data.tfds_data_dir),
                   f'{path}.tfds_split / tfds_data_dir are set but tfds_name is not')
  if data.enable_tf_data_service:
    checks.require(bool(data.tf_data_service_address),
                   f'{path}.enable_tf_data_service needs tf_data_service_address (or '
                   '--tf_data_service=grpc://host:port)')
    checks.require(bool(re.fullmatch(r'((grpc|grpc\+local)://)?[^\s/]+:\d+',
                                     data.tf_data_service_address)),
                   f'--tf_data_service / {path}.tf_data_service_address '
                   f'{data.tf_data_service_address!r} is not a dispatcher address '
                   '(grpc://host:port)')
    checks.require(data.seed is None,
                   f'{path}.seed with tf.data service would give every worker the same views; '
                   'unset it')
  else:
    checks.require(not data.tf_data_service_address,
                   f'{path}.tf_data_service_address is set but enable_tf_data_service is false')
  if data.autotune_algorithm:
    names = ('DEFAULT', 'HILL_CLIMB', 'GRADIENT_DESCENT', 'MAX_PARALLELISM', 'STAGE_BASED')
    checks.one_of(data.autotune_algorithm, names, f'{path}.autotune_algorithm')
  for name in ('block_length', 'cycle_length'):
    checks.require(getattr(data, name) >= 1, f'{path}.{name} must be >= 1')
  checks.require(data.shuffle_buffer_size >= 1,
                 f'{path}.shuffle_buffer_size must be >= 1, got {data.shuffle_buffer_size}')
  checks.require(data.prefetch_buffer_size is None or data.prefetch_buffer_size >= 1,
                 f'{path}.prefetch_buffer_size must be >= 1 (or unset: autotuned)')


def validate_probe_data(data: data_config.ProbeDataConfig,
                        path: str = 'task.validation_data') -> None:
  """The labelled set of the periodic probe (nothing to check when it is off)."""
  checks.one_of(data.source, ('', 'synthetic', 'tfrecord', 'folder'), f'{path}.source')
  if not data.source:
    return
  if data.source == 'tfrecord':
    checks.require(bool(data.input_path and data.eval_input_path),
                   f"{path}.source 'tfrecord' needs {path}.input_path and eval_input_path")
  if data.source == 'folder':
    checks.require(all((data.train_images, data.train_labels, data.eval_images,
                        data.eval_labels)),
                   f"{path}.source 'folder' needs train_images, train_labels, eval_images and "
                   'eval_labels')
  if data.source != 'synthetic':
    checks.require(data.num_classes >= 2, f'{path}.num_classes must be >= 2')
  for name in ('num_train', 'num_eval', 'global_batch_size', 'image_size', 'fit_steps'):
    checks.require(getattr(data, name) >= 1, f'{path}.{name} must be >= 1')
  levels = checks.RESNET_LEVELS
  checks.one_of(data.level, levels, f'{path}.level')
  checks.require(data.image_size % 2 ** int(data.level) == 0,
                 f'{path}.image_size {data.image_size} is not a multiple of the stride of level '
                 f'{data.level}')


def validate_optimization(params: pretrain.PretrainExperiment) -> None:
  """Model Garden's optimiser config (any optimiser and schedule its factory builds), and the
  coupled L2 of `task.losses`."""
  config = params.trainer.optimizer_config
  checks.require(config.optimizer.type is not None,
                 'trainer.optimizer_config.optimizer.type is not set (lars, sgd, ...)')
  checks.require(config.learning_rate.type is not None,
                 'trainer.optimizer_config.learning_rate.type is not set (cosine, stepwise, ...)')
  checks.require(params.task.losses.l2_weight_decay >= 0,
                 'task.losses.l2_weight_decay must be >= 0')
  schedules = [(f'learning_rate.{config.learning_rate.type}', config.learning_rate.get())]
  if config.warmup.type:
    schedules.append((f'warmup.{config.warmup.type}', config.warmup.get()))
  for where, schedule in schedules:
    for name, value in schedule.as_dict().items():
      values = value if isinstance(value, (list, tuple)) else [value]
      if ('learning_rate' in name or name == 'values' or name.endswith('steps')
          or name == 'boundaries') and all(isinstance(v, (int, float)) for v in values):
        checks.require(all(v >= 0 for v in values),
                       f'trainer.optimizer_config.{where}.{name} must be >= 0, got {value}')


def validate_task(task: pretrain.PretrainTask) -> None:
  """The task: data, the probe's data, the chosen method's block (and no other)."""
  validate_data(task.train_data)
  validate_probe_data(task.validation_data)
  method = checks.one_of_config(task.method, 'task.method')
  method.check(task, f'task.method.{task.method.type}')
  checks.require(task.log_every_steps >= 1, 'task.log_every_steps must be >= 1')


def validate_runtime(runtime: cfg.RuntimeConfig) -> None:
  checks.one_of(runtime.mixed_precision_dtype or 'float32', PRECISIONS,
                'runtime.mixed_precision_dtype')
  checks.one_of(runtime.distribution_strategy, STRATEGIES, 'runtime.distribution_strategy')
  checks.require(not runtime.tpu or runtime.distribution_strategy == 'tpu',
                 f'--tpu / runtime.tpu is {runtime.tpu!r} but runtime.distribution_strategy is '
                 f"{runtime.distribution_strategy!r}; set it to 'tpu'")


def validate(params: pretrain.PretrainExperiment, num_replicas: Optional[int] = None) -> None:
  """The whole experiment; with `num_replicas`, also that the global batch splits over them."""
  fields.check_types(params)
  fields.check_refused(params)
  validate_task(params.task)
  validate_optimization(params)
  validate_runtime(params.runtime)
  trainer = params.trainer
  checks.require(trainer.train_steps >= 1,
                 f'trainer.train_steps must be >= 1, got {trainer.train_steps}')
  checks.require(trainer.steps_per_loop >= 1, 'trainer.steps_per_loop must be >= 1')
  checks.require(trainer.checkpoint_interval >= 1, 'trainer.checkpoint_interval must be >= 1')
  checks.require(trainer.max_to_keep >= 1,
                 f'trainer.max_to_keep must be >= 1, got {trainer.max_to_keep}')
  checks.require(trainer.summary_interval <= 0
                 or trainer.summary_interval % trainer.steps_per_loop == 0,
                 f'trainer.summary_interval {trainer.summary_interval} must be a multiple of '
                 f'trainer.steps_per_loop {trainer.steps_per_loop} (summaries are written '
                 'between loops)')
  if num_replicas is not None:
    validate_replicas(params, num_replicas)


def validate_replicas(params: pretrain.PretrainExperiment, num_replicas: int) -> None:
  """What depends on the number of replicas, once the strategy is built: the global batch
  splits over them, and the method's own replica checks (`MethodBlock.check_replicas`)."""
  task = params.task
  batch = task.train_data.global_batch_size
  checks.require(batch % num_replicas == 0,
                 f'task.train_data.global_batch_size {batch} is not divisible by the '
                 f'{num_replicas} replicas')
  task.method.get().check_replicas(task, f'task.method.{task.method.type}', num_replicas)


def lone_batch_problem(params: pretrain.PretrainExperiment) -> Optional[str]:
  """The trained method's warning for this task (`MethodBlock.warning`), e.g. DetCon's
  contrastive loss on a global batch of one image."""
  return params.task.method.inner().get().warning(params.task)
