"""Tests for tf_detcon.configs.validation: every bad setting is one line naming it, before any
model is built."""

import pytest

from tests.conftest import tiny_params
from tf_detcon.configs import validation


def _error(name: str, override: dict, num_replicas=None) -> str:
  """The one-line error of a tiny experiment with `override` applied."""
  params = tiny_params(name)
  params.override(override, is_strict=True)
  with pytest.raises(validation.ConfigError) as info:
    validation.validate(params, num_replicas)
  message = str(info.value)
  assert '\n' not in message
  return message


@pytest.mark.parametrize('override,message', [
    ({'method': {'detco': {'queue_size': 10}}}, 'not a multiple of the global batch'),
    ({'method': {'detco': {'level_weights': [1.0]}}}, 'differ in length'),
    ({'method': {'detco': {'local': False}}},
     r'^task.method.detco.local_views is set but task.method.detco.local is false: remove it$'),
    ({'method': {'detco': {'key_bn': 'frozen'}}}, "key_bn must be one of 'sync', 'shuffle'"),
    ({'method': {'detco': {'levels': ['2', '3', '4', '6']}}}, r"levels \['6'\] are not levels"),
])
def test_detco_config_errors_are_clear(override, message):
  with pytest.raises(ValueError, match=message):
    validation.validate(tiny_params('detco_tiny').replace(task=override))


@pytest.mark.parametrize('override,message', [
    ({'variant': 'x'}, "task.method.detcon.variant must be one of 'b', 's'"),
    ({'feature_level': '7'}, "feature_level '7' is not a level of the encoder"),
    ({'loss': 'l2'}, "task.method.detcon.loss must be one of 'contrastive', 'regression'"),
    ({'temperature': 0.0}, 'task.method.detcon.temperature must be > 0'),
    ({'num_samples': 0}, 'task.method.detcon.num_samples must be >= 1'),
])
def test_detcon_config_errors_are_clear(override, message):
  assert message in _error('detcon_b_tiny', {'task': {'method': {'detcon': override}}})


def test_regression_loss_needs_the_byol_variant():
  with pytest.raises(validation.ConfigError, match="loss 'regression'.*needs .*variant 'b'"):
    validation.validate(tiny_params('detcon_s_tiny').replace(
        task={'method': {'detcon': {'loss': 'regression'}}}))


def test_input_sizes_that_the_fpn_cannot_take_are_a_clear_error():
  params = tiny_params('decon_sl_detcon_b_tiny')
  params.task.train_data.view1.output_size = 48
  with pytest.raises(ValueError, match='view1.output_size to be a multiple of 32, got 48'):
    validation.validate(params)


def test_views_must_tile_the_feature_grid_the_masks_are_pooled_to():
  assert 'view2.output_size 72 is not a multiple of 32, the stride of feature level 5' in _error(
      'detcon_b_tiny', {'task': {'train_data': {'view2': {'output_size': 72}}}})


def test_a_block_of_a_method_that_is_not_chosen_is_refused():
  """A DetCo YAML with a leftover detcon: block would be accepted and ignored."""
  assert _error('detco_tiny', {'task': {'method': {'detcon': {'temperature': 0.3}}}}) == (
      "task.method.detcon is set but task.method.type is 'detco': remove it")
  assert _error('decon_sl_detcon_b_tiny', {'task': {'method': {'decon': {'base': {'detco': {
      'queue_size': 32}}}}}}).startswith('task.method.decon.base.detco is set')


def test_unknown_method_unset_optimizer_or_schedule_and_precision_are_clear():
  assert _error('detcon_b_tiny', {'task': {'method': {'type': 'swav'}}}) == (
      "task.method.type must be one of 'detcon', 'detco', 'decon', got 'swav'")
  assert 'trainer.optimizer_config.optimizer.type is not set' in _error(
      'detcon_b_tiny', {'trainer': {'optimizer_config': {'optimizer': {'type': None}}}})
  assert 'trainer.optimizer_config.learning_rate.type is not set' in _error(
      'detcon_b_tiny', {'trainer': {'optimizer_config': {'learning_rate': {'type': None}}}})
  assert 'runtime.mixed_precision_dtype must be one of' in _error(
      'detcon_b_tiny', {'runtime': {'mixed_precision_dtype': 'float16'}})


def test_the_global_batch_must_split_over_the_replicas():
  assert _error('detcon_b_tiny', {'task': {'train_data': {'global_batch_size': 6}}},
                num_replicas=4) == (
                    'task.train_data.global_batch_size 6 is not divisible by the 4 replicas')


def test_local_view_cells_must_hold_their_patches():
  assert 'cannot hold patches of 40 px' in _error(
      'detco_tiny', {'task': {'method': {'detco': {'local_views': {'patch_size': 40}}}}})
