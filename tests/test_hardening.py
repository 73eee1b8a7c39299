"""Invariants of the third hardening pass, each by the mechanism that enforces it: images as a
viewer shows them, folders searched through links, results never replaced by another
measurement, a full disk leaving no debris, the workers of one job agreeing, and the launchers'
own words (help, unknown settings)."""

import collections
import io
import json
import importlib.metadata
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT, blocky_ids, palette
from tf_detcon.support import cli
from tf_detcon.data.offline import precompute
from tf_detcon.data.offline import sources
from tf_detcon.evaluation import labelled_sets
from tf_detcon.evaluation import report
from tf_detcon.exports import manifest
from tf_detcon.training import export as export_lib

# EXIF orientation k: how the stored pixels are turned to be shown (EXIF 2.3, tag 0x0112),
# written with NumPy, independently of PIL's exif_transpose. `stored(k)` inverts each.
SHOWN = {2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
         5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
         7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}
STORED = {2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
          5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, 1),
          7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, -1)}


def _upright() -> np.ndarray:
  """A 48×80 image of 16-pixel blocks, every block another colour: any turn or mirror shows."""
  return palette(15)[blocky_ids(48, 80, 15, 16, seed=1)]


def _jpeg(pixels: np.ndarray, orientation: int) -> bytes:
  image = Image.fromarray(np.ascontiguousarray(pixels))
  exif = Image.Exif()
  exif[precompute.EXIF_ORIENTATION] = orientation
  out = io.BytesIO()
  image.save(out, format='JPEG', quality=100, subsampling=0, exif=exif.tobytes())
  return out.getvalue()


@pytest.mark.parametrize('orientation', range(2, 9))
def test_a_jpeg_is_read_as_a_viewer_shows_it_and_counted(orientation):
  upright = _upright()
  stored = STORED[orientation](upright)
  np.testing.assert_array_equal(SHOWN[orientation](stored), upright)  # the table is consistent
  raw = sources.RawExample('phone.jpg', image_bytes=_jpeg(stored, orientation))
  image, kept_bytes, conversion = precompute.decode_image(raw)
  assert conversion == 'exif_rotated' and image.shape == upright.shape
  assert np.abs(image.astype(int) - upright.astype(int)).mean() < 2.0
  # What is stored decodes, by TF as training reads it, to the same upright pixels.
  np.testing.assert_array_equal(tf.io.decode_image(kept_bytes, channels=3).numpy(), image)
  stats = collections.Counter()
  precompute.process_example(
      raw, precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=((100.0, 0.5, 20),))), precompute.Policy(),
      stats)
  assert stats['exif_rotated'] == 1


def test_an_unturned_jpeg_keeps_its_bytes():
  raw = sources.RawExample('plain.jpg', image_bytes=_jpeg(_upright(), 1))
  _, kept_bytes, conversion = precompute.decode_image(raw)
  assert conversion == '' and kept_bytes == raw.image_bytes


def test_evaluation_folders_read_images_as_shown_so_labels_drawn_on_them_fit(tmp_path):
  upright = _upright()
  label = blocky_ids(48, 80, 3, 16, seed=2).astype(np.uint8)
  for folder in ('images', 'labels'):
    os.makedirs(tmp_path / folder)
  with open(tmp_path / 'images' / 'a.jpg', 'wb') as f:
    f.write(_jpeg(STORED[6](upright), 6))  # stored 80×48, shown 48×80 as its label
  Image.fromarray(label).save(tmp_path / 'labels' / 'a.png')
  labelled = labelled_sets.from_folders(str(tmp_path / 'images'), str(tmp_path / 'labels'), 32)
  expected = tf.image.resize(upright[None].astype(np.float32), [32, 32]).numpy()[0]
  assert np.abs(labelled.images[0].astype(float) - expected).mean() < 3.0


def test_linked_folders_are_searched_once_and_a_dangling_link_is_a_named_bad_example(tmp_path):
  root, elsewhere = tmp_path / 'photos', tmp_path / 'elsewhere'
  os.makedirs(root / 'real')
  os.makedirs(elsewhere)
  pixels = _upright()
  Image.fromarray(pixels).save(root / 'real' / 'a.png')
  Image.fromarray(pixels[::-1]).save(elsewhere / 'b.png')
  os.symlink(elsewhere, root / 'linked')          # a linked folder: followed
  os.symlink(root, root / 'real' / 'loop')        # a link back up: no loop
  os.symlink(tmp_path / 'gone.png', root / 'dangling.png')
  source = sources.ImageFolderSource(str(root))
  assert source.files == ['dangling.png', 'linked/b.png', 'real/a.png']
  spec = precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=((100.0, 0.5, 20),)))
  with pytest.raises(precompute.BadExampleError,
                     match=r"^example 'dangling.png': unreadable file \(No such file"):
    precompute.Job(source, str(tmp_path / 'out-error'), spec=spec).run()
  manifest = precompute.Job(source, str(tmp_path / 'out'), spec=spec,
                            policy=precompute.Policy(on_bad_example='skip')).run()
  assert manifest['totals']['examples'] == 2
  assert manifest['totals']['skipped/unreadable file'] == 1


def test_a_result_is_replaced_only_by_the_same_measurement(tmp_path):
  results = {'linear/level4': {'miou': 0.5, 'acc': 0.9}}
  info = {'eval': 'scenes', 'image_size': 96, 'seed': 0}
  path = report.save(str(tmp_path), 'scenes', results, info)
  report.save(str(tmp_path), 'scenes', {'linear/level4': {'miou': 0.6, 'acc': 0.9}}, info)
  with open(path) as f:
    assert json.load(f)['results']['linear/level4']['miou'] == 0.6  # a rerun replaces itself
  with pytest.raises(ValueError, match=r"holds a result made otherwise \(results "
                                       r"\['linear/level4'\] there, \['linear/level3'\] now\): "
                                       r'give this one another --name'):
    report.save(str(tmp_path), 'scenes', {'linear/level3': {'miou': 0.1, 'acc': 0.2}}, info)
  with pytest.raises(ValueError, match=r'image_size 96 there, 64 now'):
    report.save(str(tmp_path), 'scenes', results, dict(info, image_size=64))
  with open(path) as f:
    assert json.load(f)['results']['linear/level4']['miou'] == 0.6


@pytest.fixture
def small_disk(tmp_path):
  """A 256 KiB tmpfs (CI runs as root); where mounting is not allowed, the test is skipped by
  the injected-error twin below."""
  mount = tmp_path / 'disk'
  os.makedirs(mount)
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mount)],
                          capture_output=True, check=False)
  if result.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {result.stderr.decode()[:200]}')
  yield str(mount)
  subprocess.run(['umount', str(mount)], check=False)


def _modules(run):
  return {name: export_lib.float32_copy(module)
          for name, module in run.model.checkpoint_items.items()}


def _manifest(run, step):
  return manifest.Manifest(config=run.params.as_dict(), method='detcon', step=step)


def test_an_export_on_a_full_disk_is_one_line_and_leaves_no_debris(tiny_run, small_disk):
  final = os.path.join(small_disk, 'export')
  with pytest.raises(ValueError, match=r'^cannot write the export to .*export \(.*\): free space '
                                       r'there or choose another place, then rerun$') as failure:
    export_lib.write(final, _modules(tiny_run), _manifest(tiny_run, 4))
  assert '\n' not in str(failure.value)
  assert os.listdir(small_disk) == []


def test_a_failed_export_keeps_the_previous_one_whole(tiny_run, tmp_path, monkeypatch):
  final = str(tmp_path / 'export')
  export_lib.write(final, _modules(tiny_run), _manifest(tiny_run, 1))

  def no_space(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(tf.train.Checkpoint, 'save', no_space)
  with pytest.raises(ValueError, match='No space left on device'):
    export_lib.write(final, _modules(tiny_run), _manifest(tiny_run, 2))
  assert sorted(os.listdir(tmp_path)) == ['export']
  with open(os.path.join(final, 'metadata.json')) as f:
    assert json.load(f)['step'] == 1


def test_a_worker_with_other_job_settings_than_a_running_one_is_refused(tmp_path):
  pixels = _upright()
  folder = tmp_path / 'photos'
  os.makedirs(folder)
  for i in range(4):
    Image.fromarray(np.roll(pixels, i * 8, axis=1)).save(folder / f'{i}.png')
  out = str(tmp_path / 'out')
  spec = precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=((100.0, 0.5, 20),)))
  source = sources.ImageFolderSource(str(folder))
  first = precompute.Job(source, out, num_shards=4, spec=spec, worker_index=0, num_workers=2)
  first.prepare()  # writes job.json; its shards are not written yet
  from tf_detcon.support import locks  # pylint: disable=g-import-not-at-top
  with locks.DirectoryLock(out, '--output_dir', '.lock-worker-0'):  # worker 0 runs
    other = precompute.Job(source, out, num_shards=2, spec=spec, worker_index=1, num_workers=2)
    with pytest.raises(ValueError, match=r'holds shards made with other settings \(num_shards 4 '
                                         r'there, 2 now\)'):
      other.prepare()
    same = precompute.Job(source, out, num_shards=4, spec=spec, worker_index=1, num_workers=2)
    assert same.prepare() == [1, 3]
  with open(os.path.join(out, precompute.JOB_NAME)) as f:
    assert json.load(f)['num_shards'] == 4


def test_unknown_settings_are_named_by_their_full_path_with_the_closest_keys():
  from official.core import exp_factory  # pylint: disable=g-import-not-at-top
  from tf_detcon.configs import experiments  # pylint: disable=g-import-not-at-top,unused-import
  config = exp_factory.get_exp_config('detcon_b_tiny')
  assert cli.unknown_setting(config, ['task.train_data.seed', 'trainer.train_steps']) is None
  # Every choice of a one-of is a setting, chosen or not (the segmenter's default schedule is
  # polynomial; a recipe sets stepwise).
  from official.vision import registry_imports  # pylint: disable=g-import-not-at-top,unused-import
  segmenter = exp_factory.get_exp_config('seg_resnetfpn_pascal')
  assert cli.unknown_setting(segmenter, [
      'trainer.optimizer_config.learning_rate.stepwise.values', 'task.model.head.level']) is None
  assert cli.unknown_setting(config, ['task.train_data.globl_batch_size']) == (
      "unknown setting 'task.train_data.globl_batch_size'; did you mean "
      "'task.train_data.global_batch_size'?")
  assert cli.unknown_setting(config, ['task.metod.type']).startswith(
      "unknown setting 'task.metod'; did you mean 'task.method'")


def _launch(name, *args):
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'launch', name), *args],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))


@pytest.mark.parametrize('launcher,own', [
    ('pretrain.py', ['--experiment', '--model_dir', '--config_file', '--params_override',
                     '--mode', '--tpu']),
    ('finetune.py', ['--init_checkpoint', '--seed', '--experiment', '--model_dir', '--tpu']),
    ('make_masks.py', ['--image_dir', '--output_dir', '--num_shards']),
])
def test_help_lists_the_launchers_own_flags_and_exits_0(launcher, own):
  result = _launch(launcher, '--help')
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  for flag in own:
    assert any(line.startswith(f'  {flag}: ') for line in lines), (flag, result.stdout)
  assert len(lines) < 120 and '--helpfull' in result.stdout


def _commands():
  """{launcher file name: its setup.py command} of the installed package."""
  return {entry.value.split(':')[0].split('.')[-1] + '.py': entry.name
          for entry in importlib.metadata.entry_points(group='console_scripts')
          if entry.value.startswith('tf_detcon_launch.')}


def test_every_launcher_is_a_command():
  scripts = {name for name in os.listdir(os.path.join(REPO_ROOT, 'launch'))
             if name.endswith('.py') and name != '__init__.py'}
  assert sorted(_commands()) == sorted(scripts)
  assert all(command == 'tf-detcon-' + script[:-3].replace('_', '-')
             for script, command in _commands().items())


@pytest.mark.parametrize('launcher', ['pretrain.py', 'make_masks.py'])
def test_a_command_prints_its_launchers_help(launcher):
  """Run as a command, `__main__` is setup.py's wrapper: the help is still the launcher's own
  (its docstring and flags), word for word as `python launch/<name>.py --help` prints it."""
  command = os.path.join(os.path.dirname(sys.executable), _commands()[launcher])
  result = subprocess.run([command, '--help'], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout == _launch(launcher, '--help').stdout
  own_flag = '--output_dir' if launcher == 'make_masks.py' else '--experiment'
  assert f'  {own_flag}: ' in result.stdout


def test_an_unknown_override_key_stops_the_launcher_in_one_line(tmp_path):
  result = _launch('pretrain.py', '--experiment=detcon_b_tiny', f'--model_dir={tmp_path}/run',
                   '--params_override=trainer.train_stpes=3')
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "pretrain.py: error: unknown setting 'trainer.train_stpes'; did you mean "
      "'trainer.train_steps'?")
  assert not os.path.exists(tmp_path / 'run')


def test_visualize_replaces_its_pictures_only_for_the_same_settings(tmp_path):
  first = _launch('visualize.py', f'--output_dir={tmp_path}', '--num_examples=1',
                  '--image_size=64')
  assert first.returncode == 0, first.stderr[-2000:]
  assert sorted(os.listdir(tmp_path)) == ['retrieval.png', 'similarity.png', 'views.png',
                                          'visualize.json']
  other = _launch('visualize.py', f'--output_dir={tmp_path}', '--num_examples=1',
                  '--image_size=64', '--level=4')
  assert other.returncode == 1 and 'Traceback' not in other.stderr
  assert other.stderr.strip().splitlines()[-1] == (
      f"visualize.py: error: {tmp_path}/visualize.json holds a result made otherwise (level "
      "'3' there, '4' now): use another --output_dir")
