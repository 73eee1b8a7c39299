"""What pretraining does with each field it inherits from Model Garden's `ExperimentConfig`.

Every inherited leaf is either SUPPORTED, acting as Model Garden documents it (each entry names
the test that shows it), or REFUSED: a non-default value is a one-line `ConfigError` naming the
field, never silently ignored. Fields of our own blocks (OURS) are used by the modules named.
`tests/test_fields.py` walks the whole config and holds every leaf to this table.
"""

import dataclasses
import typing
from typing import Any, Dict, List, Tuple

from tf_detcon.configs import checks
from tf_detcon.configs import pretrain

# field → the test (file::name) that shows its behaviour.
SUPPORTED: Dict[str, str] = {
    'runtime.distribution_strategy':
        'test_trainer.py::test_two_replicas_keep_every_mirrored_variable_bit_identical',
    'runtime.enable_xla': 'test_xla.py::test_the_train_step_compiles_with_xla_and_trains',
    'runtime.run_eagerly': 'test_trainer.py::test_execution_settings_compile_as_configured',
    'runtime.tpu': 'test_fields.py::test_runtime_settings_that_cannot_apply_here_are_refused',
    'runtime.num_gpus': 'test_fields.py::test_runtime_settings_that_cannot_apply_here_are_refused',
    'runtime.all_reduce_alg': 'test_fields.py::test_cross_device_settings_reach_the_strategy',
    'runtime.num_packs': 'test_fields.py::test_cross_device_settings_reach_the_strategy',
    'runtime.mixed_precision_dtype':
        'test_trainer.py::test_bfloat16_precision_reaches_the_model_and_keeps_float32_variables',
    'runtime.dataset_num_private_threads': 'test_datasets.py::test_model_garden_dataset_options',
    'trainer.optimizer_config': 'test_optimization.py::test_a_model_garden_optimizer_yaml_works_unchanged',
    'trainer.train_tf_function': 'test_trainer.py::test_execution_settings_compile_as_configured',
    'trainer.steps_per_loop': 'test_trainer.py::test_execution_settings_compile_as_configured',
    'trainer.summary_interval':
        'test_monitors.py::test_pretraining_probes_every_validation_interval_and_draws_views',
    'trainer.checkpoint_interval':
        'test_trainer.py::test_training_writes_checkpoints_summaries_and_export',
    'trainer.max_to_keep': 'test_trainer.py::test_loss_recovery_restores_the_last_good_checkpoint',
    'trainer.train_steps': 'test_trainer.py::test_training_writes_checkpoints_summaries_and_export',
    'trainer.validation_steps': 'test_monitors.py::test_probe_sets_honour_validation_steps',
    'trainer.validation_interval':
        'test_monitors.py::test_pretraining_probes_every_validation_interval_and_draws_views',
    'trainer.validation_summary_subdir':
        'test_monitors.py::test_pretraining_probes_every_validation_interval_and_draws_views',
    'trainer.loss_upper_bound': 'test_trainer.py::test_a_loss_above_the_bound_stops_naming_the_step',
    'trainer.recovery_begin_steps':
        'test_trainer.py::test_a_loss_above_the_bound_stops_naming_the_step',
    'trainer.recovery_max_trials':
        'test_trainer.py::test_loss_recovery_restores_the_last_good_checkpoint',
    'trainer.preemption_on_demand_checkpoint':
        'test_preemption.py::test_a_multi_worker_run_saves_through_tfs_preemption_handler',
    'task.allow_image_summary':
        'test_trainer.py::test_loss_recovery_restores_the_last_good_checkpoint',
    'task.train_data.input_path':
        'test_datasets.py::test_make_masks_launcher_writes_shards_the_pipeline_reads',
    'task.train_data.tfds_name': 'test_datasets.py::test_tfds_images_train_grid_mask_methods',
    'task.train_data.tfds_split': 'test_datasets.py::test_tfds_images_train_grid_mask_methods',
    'task.train_data.tfds_data_dir': 'test_datasets.py::test_tfds_images_train_grid_mask_methods',
    'task.train_data.global_batch_size':
        'test_datasets.py::test_input_context_shards_files_and_splits_the_batch',
    'task.train_data.shuffle_buffer_size': 'test_datasets.py::test_record_order_settings',
    'task.train_data.cache': 'test_datasets.py::test_cache_serves_later_epochs_from_memory',
    'task.train_data.cycle_length': 'test_datasets.py::test_record_order_settings',
    'task.train_data.block_length': 'test_datasets.py::test_record_order_settings',
    'task.train_data.ram_budget': 'test_datasets.py::test_model_garden_dataset_options',
    'task.train_data.deterministic': 'test_datasets.py::test_model_garden_dataset_options',
    'task.train_data.sharding': 'test_datasets.py::test_record_order_settings',
    'task.train_data.enable_tf_data_service':
        'test_data_service.py::test_pretraining_reads_batches_from_tf_data_service_workers',
    'task.train_data.tf_data_service_address':
        'test_data_service.py::test_pretraining_reads_batches_from_tf_data_service_workers',
    'task.train_data.tf_data_service_job_name':
        'test_data_service.py::test_pretraining_reads_batches_from_tf_data_service_workers',
    'task.train_data.seed': 'test_datasets.py::test_record_order_settings',
    'task.train_data.prefetch_buffer_size': 'test_datasets.py::test_model_garden_dataset_options',
    'task.train_data.autotune_algorithm': 'test_datasets.py::test_model_garden_dataset_options',
}

# field → why it is refused (the error says: leave it at its default).
REFUSED: Dict[str, str] = {
    'runtime.gpu_thread_mode': 'GPU thread tuning is not applied',
    'runtime.per_gpu_thread_count': 'GPU thread tuning is not applied',
    'runtime.batchnorm_spatial_persistent': 'a cuDNN setting that is not applied',
    'runtime.worker_hosts': 'multi-worker clusters are read from TF_CONFIG; set that instead',
    'runtime.task_index': 'multi-worker clusters are read from TF_CONFIG; set that instead',
    'runtime.loss_scale': 'float16 is not supported; bfloat16 needs no loss scale',
    'runtime.tpu_enable_xla_dynamic_padder': 'the TPU strategy is built with its defaults',
    'runtime.num_cores_per_replica': 'model parallelism is not supported',
    'runtime.default_shard_dim': 'model parallelism is not supported',
    'runtime.use_tpu_mp_strategy': 'model parallelism is not supported',
    'trainer.train_tf_while_loop': 'steps_per_loop steps always run in one compiled loop',
    'trainer.eval_tf_function': 'pretraining has no eval loop; the periodic probe is NumPy',
    'trainer.eval_tf_while_loop': 'pretraining has no eval loop; the periodic probe is NumPy',
    'trainer.allow_tpu_summary': 'summaries are written on the host between loops',
    'trainer.continuous_eval_timeout': 'there is no continuous-eval mode; use launch/evaluate.py',
    'trainer.best_checkpoint_export_subdir': 'there is no eval metric to pick a best checkpoint',
    'trainer.best_checkpoint_eval_metric': 'there is no eval metric to pick a best checkpoint',
    'trainer.best_checkpoint_metric_comp': 'there is no eval metric to pick a best checkpoint',
    'task.init_checkpoint': 'pretraining starts from scratch; resume by reusing --model_dir',
    'task.model': 'the model is task.method and task.encoder',
    'task.name': 'the method is task.method.type',
    'task.differential_privacy_config': 'differentially private training is not supported',
    'task.train_data.is_training': 'pretraining input is always training input',
    'task.train_data.drop_remainder': 'every step needs a full global batch',
    'task.train_data.tfds_as_supervised': 'images are read by feature name',
    'task.train_data.tfds_skip_decoding_feature': 'images are decoded by TFDS',
    'task.train_data.enable_shared_tf_data_service_between_parallel_trainers':
        'one trainer per tf.data service job',
    'task.train_data.apply_tf_data_service_before_batching':
        'the service always serves whole batches',
    'task.train_data.trainer_id': 'one trainer per tf.data service job',
}

# Our own blocks: prefix → the module that reads them (its test module covers them).
OURS: Dict[str, str] = {
    'task.method': 'tf_detcon/configs/methods.py',
    'task.encoder': 'tf_detcon/modeling/blocks/encoders.py',
    'task.losses': 'tf_detcon/modeling/base.py',
    'task.log_every_steps': 'tf_detcon/training/callbacks.py',
    'task.validation_data': 'tf_detcon/training/monitors.py',
    'task.train_data.view1': 'tf_detcon/data/geometry.py',
    'task.train_data.view2': 'tf_detcon/data/geometry.py',
    'task.train_data.masks': 'tf_detcon/data/mask_sources.py',
    'task.train_data.color_on_device': 'tf_detcon/primitives/color.py',
    'task.train_data.on_bad_example': 'tf_detcon/data/decode.py',
}


def leaves(config: Any, prefix: str = '') -> List[Tuple[str, Any]]:
  """(dotted path, value) of every leaf; `trainer.optimizer_config` is one (Model Garden's)."""
  out = []
  for field in dataclasses.fields(config):
    path = f'{prefix}{field.name}'
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value) and path != 'trainer.optimizer_config':
      out.extend(leaves(value, path + '.'))
    else:
      out.append((path, value))
  return out


def _get(config: Any, path: str) -> Any:
  for name in path.split('.'):
    config = getattr(config, name)
  return config


def check_refused(params: pretrain.PretrainExperiment) -> None:
  """A ConfigError for the first refused field that differs from its default."""
  default = type(params)()
  for path, reason in REFUSED.items():
    value, expected = _get(params, path), _get(default, path)
    as_plain = getattr(value, 'as_dict', lambda: value)()
    checks.require(as_plain == getattr(expected, 'as_dict', lambda: expected)(),
                   f'{path} is not supported by pretraining ({reason}); leave it at '
                   f'{expected!r}, got {value!r}')


def markdown() -> str:
  """docs/reference.md's list of inherited fields (`python -m tf_detcon.configs.fields` prints it)."""
  def group(paths):
    by_section: Dict[str, List[str]] = {}
    for path in paths:
      section = path.rsplit('.', 1)[0]
      by_section.setdefault(section, []).append(path.rsplit('.', 1)[1])
    return by_section

  lines = ['Honoured as Model Garden documents them:', '']
  for section, names in group(SUPPORTED).items():
    lines.append(f'- `{section}`: ' + ', '.join(f'`{n}`' for n in names))
  lines += ['', 'Refused: a non-default value stops with one line naming the field:', '',
            '| field | why |', '| --- | --- |']
  lines += [f'| `{path}` | {reason} |' for path, reason in REFUSED.items()]
  return '\n'.join(lines)


if __name__ == '__main__':
  print(markdown())


def ints_to_floats(config: Any) -> None:
  """Turns the ints that overrides put in float fields (`initial_learning_rate=1`) into floats:
  Model Garden would hand them on as int tensors, and its schedules then fail to mix them with
  floats, in a traceback."""
  hints = typing.get_type_hints(type(config))
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      ints_to_floats(value)
    elif isinstance(value, int) and not isinstance(value, bool) and _float_field(
        hints.get(field.name)):
      setattr(config, field.name, float(value))


def _float_field(kind: Any) -> bool:
  """float or Optional[float] (not a Union that takes an int as it is)."""
  options = typing.get_args(kind) if typing.get_origin(kind) is typing.Union else (kind,)
  return float in options and int not in options


def _type_problem(value: Any, kind: Any) -> str:
  """'' if `value` fits the annotation `kind`, else the expected type's name."""
  origin = typing.get_origin(kind)
  if origin is typing.Union:
    options = typing.get_args(kind)
    return '' if any(not _type_problem(value, k) for k in options) else ' or '.join(
        _type_problem(value, k) or getattr(k, '__name__', str(k)) for k in options)
  if kind is type(None):
    return '' if value is None else 'None'
  if origin in (list, tuple) or kind in (list, tuple):
    return '' if isinstance(value, (list, tuple)) else 'a list'
  if kind is bool:
    return '' if isinstance(value, bool) else 'a bool'
  if kind is int:
    return '' if isinstance(value, int) and not isinstance(value, bool) else 'an int'
  if kind is float:
    return '' if isinstance(value, (int, float)) and not isinstance(value, bool) else 'a number'
  if kind is str:
    return '' if isinstance(value, str) else 'a string'
  return ''  # configs are walked into; other annotations are not checked here


def check_types(config: Any, prefix: str = '') -> None:
  """A ConfigError for the first leaf whose value does not have its declared type: Model
  Garden's overrides accept `trainer.train_steps=abc` and fail much later, in a traceback."""
  hints = typing.get_type_hints(type(config))
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    path = f'{prefix}{field.name}'
    if dataclasses.is_dataclass(value):
      check_types(value, path + '.')
      continue
    expected = _type_problem(value, hints.get(field.name, Any))
    checks.require(not expected, f'{path} must be {expected}, got {value!r}')
