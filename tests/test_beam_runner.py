"""Tests for tf_detcon.data.offline.beam_runner: the Beam precompute writes exactly the
single-machine output, survives a kill -9 and names bad examples in one line."""

import filecmp
import os
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from tests.conftest import REPO_ROOT
from tests.test_precompute import SMALL_FH, _coloured, _read_records, _save
from tf_detcon.data import records
from tf_detcon.data.offline import beam_runner
from tf_detcon.data.offline import masks
from tf_detcon.data.offline import precompute
from tf_detcon.data.offline import sources

pytest.importorskip('apache_beam')

LAUNCHER = os.path.join(REPO_ROOT, 'launch', 'make_masks.py')


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('beam') / 'images')
  for i in range(6):
    _save(f'{root}/{"ab"[i % 2]}/{i}.jpg', _coloured(i))
  _save(f'{root}/b/gray.png', _coloured(9)[..., 0])
  _save(f'{root}/b/cmyk.jpg', _coloured(7), mode='CMYK', fmt='JPEG')  # converted to RGB PNG
  return root


def _job(root: str, out_dir: str, num_shards: int) -> precompute.Job:
  return precompute.Job(source=sources.ImageFolderSource(root), out_dir=out_dir,
                        num_shards=num_shards,
                        spec=precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=SMALL_FH)))


def _output_files(out_dir: str):
  return sorted(name for name in os.listdir(out_dir) if '.tmp' not in name)


def test_beam_output_equals_the_single_machine_output(image_folder, tmp_path):
  local = _job(image_folder, str(tmp_path / 'local'), 3).run()
  beam = beam_runner.run(_job(image_folder, str(tmp_path / 'beam'), 3))
  assert beam == local and beam['totals']['examples'] == 8
  assert beam['totals']['converted_to_rgb'] == 1
  names = _output_files(tmp_path / 'local')
  assert names == _output_files(tmp_path / 'beam') and len(names) == 3 * 2 + 2  # + job.json
  for path in records.shard_paths_from_manifest(str(tmp_path / 'beam')):
    reference = os.path.join(tmp_path / 'local', os.path.basename(path))
    for (key, image, maps), (key0, image0, maps0) in zip(
        _read_records(path), _read_records(reference), strict=True):
      assert key == key0
      np.testing.assert_array_equal(image, image0)
      for m, m0 in zip(maps, maps0, strict=True):
        np.testing.assert_array_equal(m, m0)
    assert filecmp.cmp(path, reference, shallow=False)  # and byte for byte


def test_a_rerun_writes_only_the_missing_shards(image_folder, tmp_path, monkeypatch):
  out = str(tmp_path / 'out')
  job = _job(image_folder, out, 4)
  job.prepare()
  job.write_shard(1)
  written = []
  original = precompute.Job.write_shard
  monkeypatch.setattr(precompute.Job, 'write_shard',
                      lambda self, i: written.append(i) or original(self, i))
  manifest = beam_runner.run(job)
  assert sorted(written) == [0, 2, 3]
  assert manifest['totals']['examples'] == 8


def _big_folder(root: str, count: int) -> None:
  """Images large enough that FH takes a visible fraction of a second each."""
  rng = np.random.default_rng(0)
  for i in range(count):
    image = rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)
    os.makedirs(root, exist_ok=True)
    Image.fromarray(image).save(f'{root}/{i:03d}.png')


def _launch(*args: str, **kwargs) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, LAUNCHER, '--runner=beam', '--fh_setting=100:0.5:50',
                           *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True, **kwargs)


def test_killed_beam_run_reruns_to_the_full_output_without_reading_partial_shards(tmp_path):
  root, out = str(tmp_path / 'images'), str(tmp_path / 'out')
  _big_folder(root, 24)
  args = (f'--image_dir={root}', f'--output_dir={out}', '--num_shards=12')
  proc = _launch(*args)
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(out) and any(n.endswith('.tfrecord.json') for n in os.listdir(out)):
      break
    time.sleep(0.01)
  assert proc.poll() is None, 'the run finished before it could be killed:\n' + proc.stdout.read()
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  finished = [n for n in os.listdir(out) if n.endswith('.tfrecord')]
  assert 1 <= len(finished) < 12
  assert not os.path.exists(os.path.join(out, records.MANIFEST_NAME))

  rerun = _launch(*args)
  output, _ = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, output
  assert 'wrote 24 examples in 12 shards' in output
  paths = records.shard_paths_from_manifest(out)
  assert [os.path.basename(p) for p in paths] == [
      f'pretrain-{i:05d}-of-00012.tfrecord' for i in range(12)]
  keys = [key for path in paths for key, _, _ in _read_records(path)]
  assert keys == [f'{i:03d}.png' for i in range(24)]

  reference = str(tmp_path / 'reference')
  precompute.Job(source=sources.ImageFolderSource(root), out_dir=reference, num_shards=12,
                 spec=precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(
                     settings=((100.0, 0.5, 50),), downscale=masks.FAST_FH_DOWNSCALE))).run()
  for path in paths:
    assert filecmp.cmp(path, os.path.join(reference, os.path.basename(path)), shallow=False)


def test_a_bad_example_stops_the_beam_run_with_one_line(image_folder, tmp_path):
  root = str(tmp_path / 'images')
  _save(f'{root}/ok.jpg', _coloured(0))
  with open(f'{root}/broken.jpg', 'wb') as f:
    f.write(b'not a jpeg')
  proc = _launch(f'--image_dir={root}', f'--output_dir={tmp_path / "out"}')
  output, _ = proc.communicate(timeout=300)
  assert proc.returncode != 0
  assert output.strip().splitlines()[-1].startswith(
      "make_masks.py: error: example 'broken.jpg': corrupt or truncated image")
  assert 'Traceback' not in output
  assert sorted(os.listdir(tmp_path / 'out')) == [
      'job.json', 'pretrain-00000-of-00001.tfrecord.error']


@pytest.mark.parametrize('args,message', [
    (('--num_processes=2',), 'leave --num_workers, --worker_index and --num_processes unset'),
    (('--beam_pipeline_options=direct_num_workers',), "item 'direct_num_workers' is not"),
])
def test_settings_the_beam_runner_would_ignore_are_refused(image_folder, tmp_path, args,
                                                           message):
  proc = _launch(f'--image_dir={image_folder}', f'--output_dir={tmp_path}', *args)
  output, _ = proc.communicate(timeout=300)
  assert proc.returncode != 0 and message in output.strip().splitlines()[-1]
