"""The bad-input table of docs/reference.md: each input we tried and what it gets (a one-line
error naming the example or setting, or a counted skip), one test per row not covered elsewhere.
The table's last column names the test of every row;
`test_every_row_of_the_reference_table_has_a_test` holds the two together."""

import collections
import errno
import io
import os
import re
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT, blocky_ids, palette, run_pretrain, tiny_params
from tf_detcon.configs import data as data_config
from tf_detcon.configs import validation
from tf_detcon.data import datasets
from tf_detcon.data.offline import precompute
from tf_detcon.data.offline import sources
from tf_detcon.modeling.blocks import pooling
from tf_detcon.training import trainer

MASKS = precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=((100.0, 0.5, 20),)))


def _encode(array: np.ndarray, fmt: str, mode: str = None) -> bytes:
  image = Image.fromarray(array)
  if mode:
    image = image.convert(mode)
  out = io.BytesIO()
  image.save(out, format=fmt)
  return out.getvalue()


def _scene(height=64, width=64) -> np.ndarray:
  return palette(5)[blocky_ids(height, width, 5, 8)]


def _process(image_bytes: bytes, policy=None):
  stats = collections.Counter()
  record = precompute.process_example(sources.RawExample('row', image_bytes=image_bytes), MASKS,
                                      policy or precompute.Policy(), stats)
  return record, stats


@pytest.mark.parametrize('image_bytes,reason', [
    (_encode(_scene(), 'JPEG')[:300], 'corrupt or truncated image'),
    (b'name,size\nshoes,42\n', 'corrupt or truncated image'),
    (b'', 'empty image file'),
    (_encode(_scene(1, 1), 'PNG'), 'image smaller than the minimum side'),
], ids=['truncated_jpeg', 'not_an_image', 'zero_length', 'one_pixel'])
def test_unusable_images_are_named(image_bytes, reason):
  with pytest.raises(precompute.BadExampleError, match=f"^example 'row': {reason}"):
    _process(image_bytes)


@pytest.mark.parametrize('fmt,mode,converted', [
    ('PNG', None, 0), ('JPEG', 'L', 0), ('PNG', 'RGBA', 1), ('JPEG', 'CMYK', 1)],
    ids=['png', 'grayscale_jpeg', 'rgba_png', 'cmyk_jpeg'])
def test_other_image_kinds_are_read_and_conversions_counted(fmt, mode, converted):
  """PNG and grayscale are stored as received (TF decodes them to 3 channels); RGBA and CMYK
  are converted to RGB by PIL, stored as PNG and counted."""
  raw = _encode(_scene(), fmt, mode)
  record, stats = _process(raw)
  example = tf.train.Example.FromString(record)
  stored = example.features.feature['image/encoded'].bytes_list.value[0]
  assert (stored == raw) == (not converted)
  assert tf.io.decode_image(stored, channels=3).shape == (64, 64, 3)
  assert stats['converted_to_rgb'] == converted


@pytest.mark.parametrize('mode', ['I;16', 'I'])
def test_a_16_bit_png_is_rescaled_to_8_bits_not_clipped_and_counted(mode):
  """PIL's convert('RGB') clips 16-bit values at 255 (an almost white image); they are scaled by
  255/65535 instead."""
  values = (np.arange(64 * 64, dtype=np.int64).reshape(64, 64) * 16) % 65536
  image = Image.fromarray(values.astype(np.uint16 if mode == 'I;16' else np.int32),
                          mode=mode)
  out = io.BytesIO()
  image.save(out, format='PNG')
  record, stats = _process(out.getvalue())
  stored = tf.train.Example.FromString(record).features.feature['image/encoded']
  decoded = tf.io.decode_png(stored.bytes_list.value[0], channels=3).numpy()
  expected = np.round(values * 255 / 65535).astype(np.uint8)
  np.testing.assert_array_equal(decoded, np.repeat(expected[..., None], 3, axis=-1))
  assert stats['rescaled_to_8bit'] == 1 and stats['converted_to_rgb'] == 0


def test_a_huge_image_is_refused_from_its_header_before_decoding():
  """A 10k×10k PNG (100 Mpx, 300 MB decoded): refused in milliseconds, memory untouched."""
  out = io.BytesIO()
  Image.new('L', (10_000, 10_000)).save(out, format='PNG')
  begin = time.time()
  with pytest.raises(precompute.BadExampleError,
                     match="example 'row': image too large .10000x10000 > 50000000 pixels"):
    _process(out.getvalue())
  assert time.time() - begin < 1.0


def test_an_image_smaller_than_the_view_is_cropped_and_resized_up(tmp_path):
  """A 40×40 image and 64 px views: the random crop is resized up, as in the papers."""
  image = _scene(40, 40)
  record, _ = _process(_encode(image, 'PNG'))
  path = str(tmp_path / 'small.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(record)
  cfg = data_config.DataConfig(input_path=path, global_batch_size=2, shuffle_buffer_size=1,
                               **data_config.byol_views(64))
  batch = next(iter(datasets.build_dataset(cfg)))
  assert batch['view1'].shape == (2, 64, 64, 3) and batch['mask1'].shape == (2, 64, 64)


def test_mask_ids_beyond_max_mask_ids_share_the_last_id():
  """16-bit maps may hold more ids than `max_mask_ids`: ids are ordered by area, so the
  smallest segments (the largest ids) are pooled together as the last id."""
  mask = np.zeros([1, 4, 4], np.int32)
  mask[0, :2, :2] = 300
  mask[0, 2:, 2:] = 700
  cells = pooling.assign_cells(tf.constant(mask), 2, 2, num_ids=256).numpy()
  np.testing.assert_array_equal(cells, [[255, 0, 0, 255]])


@pytest.mark.parametrize('override,message', [
    ('trainer.train_steps=abc', "trainer.train_steps must be an int, got 'abc'"),
    ('task.train_data.global_batch_size=1.5',
     'task.train_data.global_batch_size must be an int, got 1.5'),
    ('task.train_data.view1.color.hue=x', "task.train_data.view1.color.hue must be a number"),
])
def test_a_value_of_the_wrong_type_names_the_setting(override, message):
  """Model Garden's override accepts any type; validation names the field."""
  from official.modeling import hyperparams  # pylint: disable=g-import-not-at-top
  params = hyperparams.override_params_dict(tiny_params('simclr_tiny'), override, is_strict=True)
  with pytest.raises(validation.ConfigError, match=re.escape(message)):
    validation.validate(params)


def test_an_unwritable_model_dir_is_one_line(tmp_path):
  """/proc refuses writes even to root (tests may run as root, which ignores permissions)."""
  result = run_pretrain('--experiment=simclr_tiny', '--model_dir=/proc/tf_detcon_run')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      'pretrain.py: error: --model_dir /proc/tf_detcon_run is not writable ('), result.stderr


def test_a_full_disk_while_checkpointing_is_one_line(tmp_path, monkeypatch, embedded_files):
  """ENOSPC from the checkpoint write (simulated) stops the run with one sentence."""
  del embedded_files

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')

  run = trainer.Run(tiny_params('simclr_tiny', train_steps=2, steps_per_loop=1,
                                checkpoint_interval=1), str(tmp_path / 'full'))
  monkeypatch.setattr(run.manager, 'save', full)
  with pytest.raises(ValueError, match=r'cannot write the checkpoint of step 1 to .*\(\[Errno 28\] '
                     r'No space left on device\); free space or use another --model_dir'):
    run.train()


def test_fewer_files_than_input_pipelines_is_one_line(tmp_path, embedded_files):
  context = tf.distribute.InputContext(num_input_pipelines=4, input_pipeline_id=0,
                                       num_replicas_in_sync=4)
  cfg = data_config.DataConfig(input_path=','.join(embedded_files), global_batch_size=4)
  with pytest.raises(ValueError, match='2 record files cannot feed 4 input pipelines'):
    datasets.build_dataset(cfg, context)


def test_every_row_of_the_reference_table_has_a_test():
  with open(os.path.join(REPO_ROOT, 'docs', 'reference.md')) as f:
    readme = f.read()
  table = readme.split('<!-- bad-inputs:begin -->')[1].split('<!-- bad-inputs:end -->')[0]
  rows = [line for line in table.splitlines() if line.startswith('| ') and '---' not in line][1:]
  assert len(rows) >= 26
  for row in rows:
    module, name = re.search(r'`(test_\w+\.py)::(\w+)`', row).groups()
    with open(os.path.join(REPO_ROOT, 'tests', module)) as f:
      assert re.search(rf'^def {name}\(', f.read(), re.M), row


def test_train_steps_beyond_the_schedule_are_warned_about(tmp_path, capsys, embedded_files):
  """Overriding trainer.train_steps alone leaves a cosine schedule's decay_steps behind (as in
  Model Garden): the run says so before it spends steps at a learning rate of 0."""
  del embedded_files
  run = trainer.Run(tiny_params('simclr_tiny', train_steps=21, steps_per_loop=1),
                    str(tmp_path / 'long'))
  run.train()
  assert ('warning: the cosine learning-rate schedule ends at step 20 but trainer.train_steps is '
          '21') in capsys.readouterr().out


@pytest.mark.parametrize('setting,message', [
    (dict(config_file=['/']), "--config_file '/' is a directory, not a YAML file"),
    (dict(config_file=['/dev/null']), "--config_file '/dev/null' is empty"),
    (dict(config_file=['/no/such.yaml']), "--config_file '/no/such.yaml' does not exist"),
    (dict(config_file=['bad.yaml']), "--config_file 'bad.yaml' is not valid YAML ("),
    (dict(config_file=['list.yaml']), "--config_file 'list.yaml' is not a mapping of settings "
                                      '(it holds a list)'),
    (dict(params_override='a: [1'), '--params_override is neither a.b=value pairs nor valid YAML'),
    (dict(params_override='foo'), "--params_override 'foo' does not exist"),
])
def test_config_files_and_overrides_that_are_not_settings_are_one_line(
    setting, message, tmp_path, monkeypatch):
  import types  # pylint: disable=g-import-not-at-top
  from tf_detcon.support import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'bad.yaml').write_text('task: {model: [1\n')
  (tmp_path / 'list.yaml').write_text('- 1\n- 2\n')
  flags_obj = types.SimpleNamespace(**dict(dict(
      experiment='simclr_tiny', mode=None, model_dir=str(tmp_path / 'run'), config_file=None,
      params_override=None), **setting))
  with pytest.raises(ValueError, match=re.escape(message)):
    cli.check_flags(flags_obj, ['prog'], ('train',), 'simclr_tiny')
  good = types.SimpleNamespace(**dict(vars(flags_obj), config_file=None,
                                      params_override='trainer.train_steps=3'))
  assert cli.check_flags(good, ['prog'], ('train',), 'simclr_tiny') == 'train'


def test_a_config_file_that_is_a_directory_stops_the_launcher_in_one_line(tmp_path):
  result = run_pretrain('--experiment=simclr_tiny', f'--model_dir={tmp_path / "run"}',
                        f'--config_file={tmp_path}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"pretrain.py: error: --config_file '{tmp_path}' is a directory, not a YAML file")
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('override,message', [
    ('task.train_data.global_batch_size=0', 'task.train_data.global_batch_size must be >= 1, got 0'),
    ('trainer.optimizer_config.learning_rate.cosine.initial_learning_rate=-0.1',
     'trainer.optimizer_config.learning_rate.cosine.initial_learning_rate must be >= 0, got -0.1'),
    ('trainer.optimizer_config.warmup.linear.warmup_learning_rate=-1',
     'trainer.optimizer_config.warmup.linear.warmup_learning_rate must be >= 0, got -1'),
])
def test_a_meaningless_batch_or_learning_rate_names_the_setting(override, message):
  from official.modeling import hyperparams  # pylint: disable=g-import-not-at-top
  params = tiny_params('simclr_tiny')
  params.override({'trainer': {'optimizer_config': {'warmup': {'type': 'linear'}}}})
  params = hyperparams.override_params_dict(params, override, is_strict=True)
  params.validate()  # Model Garden's own restrictions pass: the one line is ours
  with pytest.raises(validation.ConfigError, match=re.escape(message)):
    validation.validate(params)


def test_an_int_in_a_float_setting_becomes_a_float():
  """`initial_learning_rate=1` reached Model Garden's cosine schedule as an int tensor, which
  then failed in a traceback when mixed with floats."""
  from official.modeling import hyperparams  # pylint: disable=g-import-not-at-top
  from tf_detcon.configs import fields  # pylint: disable=g-import-not-at-top
  params = hyperparams.override_params_dict(
      tiny_params('simclr_tiny'),
      'trainer.optimizer_config.learning_rate.cosine.initial_learning_rate=1,trainer.train_steps=7',
      is_strict=True)
  fields.ints_to_floats(params)
  rate = params.trainer.optimizer_config.learning_rate.cosine.initial_learning_rate
  assert rate == 1.0 and isinstance(rate, float)
  assert params.trainer.train_steps == 7 and isinstance(params.trainer.train_steps, int)
