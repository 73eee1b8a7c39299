"""Tests for DeCon: the decoder as Mask R-CNN builds it, SL/ML objectives, α, channel dropout,
EMA targets, DeCon on DetCo, and backbone + decoder transfer into Model Garden's Mask R-CNN."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from official.core import task_factory
from tests.conftest import batch_origin, tiny_params
from tests.test_transfer import maskrcnn_params
from tf_detcon.finetuning import transfer
from tf_detcon.primitives import seeds
from tf_detcon.modeling import registry
from tf_detcon.modeling.blocks import decoders
from tf_detcon import registry_imports  # pylint: disable=unused-import  (registers the methods)
from tf_detcon.training import trainer


def _model(name):
  params = tiny_params(name)
  model = registry.build_model(params.task, 10)
  model.compile(optimizer=trainer.build_optimizer(params.trainer.optimizer_config))
  model.initialize_targets()
  return model


def _batch(local=False, seed=0):
  rng = np.random.default_rng(seed)
  masks = np.kron(rng.integers(0, 4, size=(4, 4, 4)), np.ones((1, 16, 16))).astype(np.int32)
  batch = {'view1': rng.random((4, 64, 64, 3), np.float32), 'mask1': masks,
           'view2': rng.random((4, 64, 64, 3), np.float32), 'mask2': masks, **batch_origin(4)}
  if local:
    corners = [(32 * row, 32 * col) for row in range(3) for col in range(3)]
    for v in (1, 2):
      batch[f'local{v}'] = rng.random((4, 96, 96, 3), np.float32)
      batch[f'offsets{v}'] = np.array([corners] * 4, np.int32)
  return batch


def test_decoder_is_the_fpn_mask_rcnn_builds_at_the_authors_levels():
  """Model Garden's Mask R-CNN FPN (P2–P6) restricted to P2–P5, the authors' pretraining FPN:
  the same layers, by name and shape, less Mask R-CNN's coarser P6."""
  model = _model('decon_sl_detcon_b_tiny')
  params = maskrcnn_params()
  params.override({'task': {'model': {'decoder': {'fpn': {'num_filters': 32}}}}})
  maskrcnn = task_factory.get_task(params.task).build_model()
  ours = {layer.name: [tuple(w.shape) for w in layer.weights]
          for layer in model.decoder.layers if layer.weights}
  theirs = {layer.name: [tuple(w.shape) for w in layer.weights]
            for layer in maskrcnn.decoder.layers if layer.weights}
  assert ours == {name: shapes for name, shapes in theirs.items()
                  if name not in ('coarser_6', 'norm_6')}
  assert sorted(model.decoder.output_specs) == ['2', '3', '4', '5']


@pytest.mark.parametrize('name', ['decon_sl_detcon_b_tiny', 'decon_ml_detcon_b_tiny'])
def test_the_recorded_trained_layers_are_those_the_decoder_objective_reaches(name):
  """`decoders.trained_layers`, which the export records and fine-tuning reports, against the
  gradient itself: a decoder layer is trained exactly when the decoder loss has a nonzero
  gradient on one of its weights."""
  model = _model(name)
  inputs = model.prepare_inputs({k: tf.constant(v) for k, v in _batch().items()})
  with tf.GradientTape() as tape:
    result = model.decoder_objective(model.decode(model.features(inputs, training=True), inputs,
                                                  training=True), inputs, training=True)
  variables = model.decoder.trainable_variables
  gradients = tape.gradient(result.loss, variables)
  reached = sorted({v.name.split('/')[0] for v, g in zip(variables, gradients)
                    if g is not None and np.any(tf.convert_to_tensor(g).numpy() != 0)})
  recorded = decoders.trained_layers(model.decoder, model.levels)
  assert recorded == reached
  if name.startswith('decon_sl'):
    assert recorded == ['lateral_2', 'lateral_3', 'lateral_4', 'lateral_5', 'norm_2',
                        'post_hoc_2']
  else:
    assert len(recorded) == 12  # every lateral, output convolution and norm of P2–P5
  assert model.export_metadata()['decoder']['trained_layers'] == recorded


@pytest.mark.parametrize('name,levels', [('decon_sl_detcon_b_tiny', ['2']),
                                         ('decon_ml_detcon_b_tiny', ['2', '3', '4', '5'])])
def test_sl_and_ml_objectives_and_the_weighted_loss(name, levels):
  model = _model(name)
  assert sorted(model.decoder_objective.level_objectives) == levels
  weights = model.decoder_objective.weights_by_level
  np.testing.assert_allclose(sorted(weights.values()), [1 / len(levels)] * len(levels))
  inputs = model.prepare_inputs({k: tf.constant(v) for k, v in _batch().items()})
  result = model.compute_objective(inputs, training=False)
  loss, stats = result.loss, result.stats
  alpha = model.settings.alpha
  np.testing.assert_allclose(
      float(loss), alpha * float(stats['loss_encoder']) + (1 - alpha) * float(
          stats['loss_decoder']), rtol=1e-6)
  if len(levels) > 1:
    np.testing.assert_allclose(
        float(stats['loss_decoder']),
        np.mean([float(stats[f'decoder_loss_level{l}']) for l in levels]), rtol=1e-5)


def test_channel_dropout_zeroes_whole_channels_and_scales_the_rest():
  features = tf.ones([8, 4, 4, 64])
  seed = tf.constant([3, 4], tf.int64)
  dropped = decoders.channel_dropout(features, 0.5, seed).numpy()
  np.testing.assert_array_equal(decoders.channel_dropout(features, 0.5, seed), dropped)
  per_channel = dropped.reshape(8, 16, 64)
  assert np.all(per_channel.min(axis=1) == per_channel.max(axis=1))  # constant per channel
  assert set(np.unique(per_channel)) == {0.0, 2.0}  # kept channels scaled by 1 / (1 − 0.5)
  assert 0.4 < np.mean(per_channel[:, 0, :] == 0) < 0.6
  np.testing.assert_array_equal(decoders.channel_dropout(features, 1.0, seed), 0.0)


def _features(model, seed=0):
  rng = np.random.default_rng(seed)
  return {level: tf.constant(rng.normal(size=(4, 64 // 2**int(level), 64 // 2**int(level),
                                              spec[-1])), tf.float32)
          for level, spec in model.encoder.output_specs.items()}


def _fpn_by_hand(fpn, laterals, training):
  """Model Garden's FPN written out from its lateral outputs: the top lateral starts the path;
  each level below adds its lateral to the 2× nearest upsampling of the level above; then the
  3×3 output convs and the norms (P2–P5: no coarser level)."""
  levels = sorted(laterals, key=int)
  path = {levels[-1]: np.asarray(laterals[levels[-1]])}
  for level in reversed(levels[:-1]):
    above = path[str(int(level) + 1)]
    path[level] = np.repeat(np.repeat(above, 2, axis=1), 2, axis=2) + np.asarray(laterals[level])
  out = {level: fpn.get_layer(f'post_hoc_{level}')(value) for level, value in path.items()}
  return {level: fpn.get_layer(f'norm_{level}')(value, training=training).numpy()
          for level, value in out.items()}


def _laterals_by_hand(fpn, features):
  return {level: fpn.get_layer(f'lateral_{level}')(value).numpy()
          for level, value in features.items()}


def test_channel_dropout_acts_on_the_skip_laterals_only():
  """The authors' FPNDecoder: Dropout2d on the lateral outputs of res4, res3 and res2 where they
  join the top-down path; the top level's lateral is never dropped."""
  model = _model('decon_sl_detcon_b_tiny')
  fpn, split = model.decoder, model._skip_lateral_decoder  # pylint: disable=protected-access
  assert split.skip_levels == ('2', '3', '4')
  features = _features(model)
  level_seeds = {level: tf.constant([7, int(level)], tf.int64) for level in split.skip_levels}
  laterals = _laterals_by_hand(fpn, features)
  for level in split.skip_levels:
    keep = tf.random.stateless_uniform([4, 1, 1, laterals[level].shape[-1]],
                                       level_seeds[level]).numpy() >= 0.5
    laterals[level] = laterals[level] * np.where(keep, 2.0, 0.0)
  expected = _fpn_by_hand(fpn, laterals, training=True)
  out = split(features, 0.5, level_seeds, training=True)
  for level, value in expected.items():
    np.testing.assert_allclose(out[level].numpy(), value, atol=1e-4, err_msg=level)


def test_with_rate_one_the_top_down_path_alone_reaches_the_output():
  model = _model('decon_sl_detcon_b_tiny')
  fpn, split = model.decoder, model._skip_lateral_decoder  # pylint: disable=protected-access
  features = _features(model, seed=1)
  laterals = _laterals_by_hand(fpn, features)
  laterals = {level: value if level == '5' else np.zeros_like(value)
              for level, value in laterals.items()}
  expected = _fpn_by_hand(fpn, laterals, training=True)
  level_seeds = {level: tf.constant([1, 2], tf.int64) for level in split.skip_levels}
  out = split(features, 1.0, level_seeds, training=True)
  for level, value in expected.items():
    np.testing.assert_allclose(out[level].numpy(), value, atol=1e-4, err_msg=level)


def test_the_split_decoder_is_the_fpn_and_dropout_is_for_training_only():
  model = _model('decon_sl_detcon_b_tiny')
  features = _features(model, seed=2)
  whole = model.decoder(features, training=False)
  split = model._skip_lateral_decoder  # pylint: disable=protected-access
  halves = split.top_down(split.laterals(features), training=False)
  for level in whole:
    np.testing.assert_array_equal(halves[level].numpy(), whole[level].numpy())
  halves_weights = split._laterals.weights + split._top_down.weights  # pylint: disable=protected-access
  assert {w.ref() for w in model.decoder.weights} == {w.ref() for w in halves_weights}
  inputs = model.prepare_inputs({k: tf.constant(v) for k, v in _batch().items()})
  encoded = model.features(inputs, training=False)
  decoded = model.decode(encoded, inputs, training=False)
  direct = model.decoder(encoded.online.views[0], training=False)
  for level in direct:
    np.testing.assert_array_equal(decoded.online.views[0][level].numpy(), direct[level].numpy())


def test_ema_targets_cover_the_decoder_for_byol_and_none_for_simclr():
  byol = _model('decon_sl_detcon_b_tiny')
  targets = {t.ref() for t, _ in byol.ema_pairs()}
  assert all(t.ref() in targets for t in byol.target_decoder.trainable_weights)
  simclr = _model('decon_sl_detcon_s_tiny')
  assert simclr.ema_pairs() == [] and simclr.target_decoder is None


def test_lars_excludes_fpn_norm_and_bias_of_a_decon_model():
  model = _model('decon_ml_detcon_b_tiny')
  optimizer = trainer.build_optimizer(
      tiny_params('decon_ml_detcon_b_tiny').trainer.optimizer_config)
  names = [v.name for v in model.decoder.variables]
  assert any('norm' in n for n in names) and any(n.endswith('bias:0') for n in names)
  for variable in model.variables:
    excluded = variable.name.split('/')[-1].split(':')[0] in ('gamma', 'beta', 'bias')
    assert optimizer._use_weight_decay(variable.name) != excluded  # pylint: disable=protected-access


def test_decon_on_detco_is_configuration():
  model = _model('decon_sl_detco_tiny')
  assert sorted(model.decoder_objective.queues) == ['g2', 'l2']
  assert sorted(model.objective.queues) == ['g2', 'g3', 'g4', 'g5', 'l2', 'l3', 'l4', 'l5']
  data = tf.data.Dataset.from_tensors(_batch(local=True)).repeat()
  history = model.fit(data, steps_per_epoch=1, epochs=1, verbose=0).history
  assert np.isfinite(history['loss_decoder'][0]) and np.isfinite(history['loss_encoder'][0])
  assert int(model.decoder_objective.queues['g2'].pointer.numpy()) == 4


def test_export_holds_backbone_decoder_and_decon_metadata(tiny_decon_run):
  export = os.path.join(tiny_decon_run.model_dir, 'export')
  with open(os.path.join(export, 'metadata.json')) as f:
    metadata = json.load(f)
  assert metadata['init_checkpoint_modules'] == ['backbone', 'decoder']
  assert metadata['decon'] == {'alpha': 0.5, 'base_method': 'detcon', 'channel_dropout': 0.5,
                               'decoder_levels': ['2'], 'variant': 'sl'}
  names = [name for name, _ in tf.train.list_variables(
      tf.train.latest_checkpoint(os.path.join(export, 'checkpoint')))]
  assert any(n.startswith('decoder/') for n in names)
  assert any(n.startswith('backbone/') for n in names)


def test_mask_rcnn_loads_backbone_and_decoder_from_a_decon_export(tiny_decon_run):
  """Mask R-CNN's P2–P6 FPN from DeCon's P2–P5 (launch/finetune.py's path): every backbone
  weight and every FPN layer of P2–P5 by value; P6's coarser level keeps its initialisation."""
  params = maskrcnn_params()
  params.override({'task': {'model': {'decoder': {'fpn': {'num_filters': 32}}}}})
  transfer.resolve_init_checkpoint(params, os.path.join(tiny_decon_run.model_dir, 'export'))
  assert list(params.task.init_checkpoint_modules) == ['backbone', 'decoder']
  task = transfer.build_task(params)
  model = task.build_model()
  task.initialize(model)
  loaded = model.backbone.weights
  assert len(loaded) == len(tiny_decon_run.model.encoder.weights)
  for a, b in zip(loaded, tiny_decon_run.model.encoder.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f'backbone: {a.name}')
  pretrained = {layer.name: layer for layer in tiny_decon_run.model.decoder.layers
                if layer.weights}
  fresh = []
  for layer in model.decoder.layers:
    if not layer.weights:
      continue
    if layer.name not in pretrained:
      fresh.append(layer.name)
      continue
    for a, b in zip(layer.weights, pretrained[layer.name].weights):
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f'decoder: {a.name}')
  assert sorted(fresh) == ['coarser_6', 'norm_6']


def test_a_decoder_width_set_otherwise_is_refused_and_an_unset_one_is_the_exports(
    tiny_decon_run):
  export = os.path.join(tiny_decon_run.model_dir, 'export')
  params = maskrcnn_params()  # 256 filters, the export has 32
  with pytest.raises(ValueError, match=r"task.model.decoder.fpn.num_filters is set to 256 but "
                                       r"the export was pretrained with 32"):
    transfer.resolve_init_checkpoint(params, export,
                                     explicit={'task.model.decoder.fpn.num_filters'})
  params = maskrcnn_params()
  transfer.resolve_init_checkpoint(params, export)
  assert params.task.model.decoder.fpn.num_filters == 32


def test_decoder_levels_no_objective_reaches_are_not_decayed():
  """MoCo's coupled L2 must not shrink FPN weights that get no gradient (for SL, P3..P5's
  post-hoc convs and norms): they are exported into Mask R-CNN."""
  params = tiny_params('decon_sl_detco_tiny')
  params.task.losses.l2_weight_decay = 0.1
  params.trainer.optimizer_config.learning_rate.cosine.initial_learning_rate = 0.1
  model = registry.build_model(params.task, 10)
  model.compile(optimizer=trainer.build_optimizer(params.trainer.optimizer_config))
  model.initialize_targets()
  unused = ('post_hoc_3', 'post_hoc_4', 'post_hoc_5', 'norm_3', 'norm_4', 'norm_5')
  frozen = [v for v in model.decoder.trainable_variables if v.name.split('/')[0] in unused]
  trained = [v for v in model.decoder.trainable_variables
             if v.name.split('/')[0] not in unused]
  assert len(frozen) == 12 and trained
  # What the trainer makes no optimiser slot for.
  assert {v.ref() for v in model.untrained_variables()} == {v.ref() for v in frozen}
  before = {id(v): v.numpy().copy() for v in model.decoder.trainable_variables}
  data = tf.data.Dataset.from_tensors(_batch(local=True)).repeat()
  model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
  for variable in frozen:
    np.testing.assert_array_equal(variable.numpy(), before[id(variable)], err_msg=variable.name)
  assert all(not np.array_equal(v.numpy(), before[id(v)]) for v in trained)


def test_decon_on_detco_decodes_keys_inside_the_key_shuffle():
  """The target decoder runs on the shuffled key batch in the key encoder's BN groups (MoCo
  §3.3), written out here: permute the batch, run key encoder and decoder on each of the
  bn_splits groups, undo the permutation."""
  model = _model('decon_sl_detco_tiny')
  assert model.decodes_in_shuffle and model.base_model.bn_splits == 2
  assert {bool(getattr(layer, 'synchronized', False)) for layer in model.target_decoder.submodules
          if isinstance(layer, tf.keras.layers.BatchNormalization)} <= {False}
  inputs = model.prepare_inputs({k: tf.constant(v) for k, v in _batch(local=True).items()})
  decoded = model.decode(model.features(inputs, training=True), inputs, training=True)
  got = decoded.target.views[0]['2'].numpy()
  view = inputs.views[1].numpy()
  permutation = np.argsort(tf.random.stateless_uniform(
      [4], inputs.seed_for(seeds.KEY_SHUFFLE)).numpy(), kind='stable')
  shuffled = view[permutation]
  groups = [model.target_decoder(model.target_encoder(part, training=True),
                                 training=True)['2'].numpy()
            for part in (shuffled[:2], shuffled[2:])]
  expected = np.empty_like(got)
  expected[permutation] = np.concatenate(groups)
  np.testing.assert_allclose(got, expected, atol=1e-4)
  unshuffled = model.target_decoder(model.target_encoder(view, training=True), training=True)
  assert np.abs(got - unshuffled['2'].numpy()).max() > 1e-3
  # The encoder objective sees the encoder levels only; the decoded ones are the target tail.
  encoded = model.features(inputs, training=False)
  assert sorted(encoded.target.views[0]) == ['2', '3', '4', '5']
  assert sorted(encoded.target_tail.views[0]) == ['2', '3', '4', '5']
  assert model.decode(encoded, inputs, training=False).target is encoded.target_tail
