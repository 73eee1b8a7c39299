"""Tests for tf_detcon.data.precompute, records and sources: shards, bad input, resume."""

import io
import json
import os
import re

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tests.conftest import blocky_ids, palette
from tf_detcon.data import mask_sources
from tf_detcon.data.offline import masks as masks_lib
from tf_detcon.data.offline import precompute
from tf_detcon.data.offline import shards
from tf_detcon.data import records
from tf_detcon.data.offline import sources

SMALL_FH = ((100.0, 0.5, 50),)


def _coloured(seed: int, size=(48, 64)) -> np.ndarray:
  return palette(8)[blocky_ids(*size, num_ids=8, block=8, seed=seed)]


def _save(path: str, array: np.ndarray, mode=None, fmt=None) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(array)
  if mode:
    image = image.convert(mode)
  image.save(path, format=fmt)


def _read_records(path: str):
  out = []
  for record in tf.data.TFRecordDataset(path):
    parsed = records.parse_example(record)
    image = tf.io.decode_image(parsed[records.IMAGE_ENCODED], channels=3).numpy()
    maps = [mask_sources.decode_mask_png(png).numpy() for png in parsed[records.MASK_ENCODED]]
    out.append((parsed[records.IMAGE_KEY].numpy().decode(), image, maps))
  return out


@pytest.fixture
def folder(tmp_path):
  root = str(tmp_path / 'images')
  _save(f'{root}/a/rgb.jpg', _coloured(0))
  _save(f'{root}/a/gray.png', _coloured(1)[..., 0])
  _save(f'{root}/b/rgba.png', _coloured(2), mode='RGBA')
  _save(f'{root}/b/cmyk.jpg', _coloured(3), mode='CMYK', fmt='JPEG')
  return root


def _job(source, out_dir, **kwargs):
  kwargs.setdefault('spec', precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=SMALL_FH)))
  return precompute.Job(source=source, out_dir=out_dir, **kwargs)


def test_folder_job_writes_shards_that_decode_to_the_fh_masks(folder, tmp_path):
  out = str(tmp_path / 'out')
  manifest = _job(sources.ImageFolderSource(folder), out, num_shards=2).run()
  assert manifest['totals']['examples'] == 4
  assert manifest['totals']['converted_to_rgb'] == 2  # RGBA and CMYK
  assert len(manifest['files']) == 2
  found = {}
  for name in manifest['files']:
    for key, image, maps in _read_records(os.path.join(out, name)):
      found[key] = (image, maps)
  assert sorted(found) == ['a/gray.png', 'a/rgb.jpg', 'b/cmyk.jpg', 'b/rgba.png']
  for key, (image, maps) in found.items():
    assert image.shape == (48, 64, 3), key
    expected = masks_lib.fh_mask(image, *SMALL_FH[0])
    np.testing.assert_array_equal(maps[0], expected)
  np.testing.assert_array_equal(found['b/rgba.png'][0], _coloured(2))  # alpha dropped, lossless


def test_fh_runs_at_each_images_working_factor_and_counts_them(tmp_path):
  """With fh_downscale 0.5, an image under the working-side threshold is segmented at full
  resolution, a larger one at the factor that keeps its short side at the threshold; the
  manifest counts the factors."""
  root = str(tmp_path / 'images')
  _save(f'{root}/small.png', _coloured(0, size=(48, 64)))
  _save(f'{root}/large.png', _coloured(1, size=(120, 96)))
  spec = precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(
      settings=SMALL_FH, downscale=0.5, min_working_side=64))
  out = str(tmp_path / 'out')
  manifest = _job(sources.ImageFolderSource(root), out, spec=spec).run()
  assert manifest['totals']['fh_working_factor/1.00'] == 1  # 48 px short side <= 64
  assert manifest['totals']['fh_working_factor/0.65'] == 1  # 96 px: 64 / 96 = 0.667
  assert manifest['fh_min_working_side'] == 64
  for name in manifest['files']:
    for key, image, maps in _read_records(os.path.join(out, name)):
      factor = 1.0 if key == 'small.png' else 64 / 96
      np.testing.assert_array_equal(maps[0], masks_lib.fh_mask(image, *SMALL_FH[0],
                                                               downscale=factor))


def test_uint16_masks_round_trip_through_png():
  ids = np.arange(300 * 4, dtype=np.uint16).reshape(30, 40) % 300
  png = shards.encode_png(ids)
  np.testing.assert_array_equal(mask_sources.decode_mask_png(tf.constant(png)).numpy(), ids)
  small = (ids % 200).astype(np.uint8)
  np.testing.assert_array_equal(
      mask_sources.decode_mask_png(tf.constant(shards.encode_png(small))).numpy(), small)


@pytest.mark.parametrize('name,payload,reason', [
    ('corrupt.jpg', b'not an image at all', 'corrupt or truncated image'),
    ('truncated.jpg', 'truncate', 'corrupt or truncated image'),
    ('tiny.png', 'tiny', 'image smaller than the minimum side'),
])
def test_bad_images_error_naming_the_example_or_are_skipped_and_counted(
    folder, tmp_path, name, payload, reason):
  path = os.path.join(folder, 'bad', name)
  os.makedirs(os.path.dirname(path))
  if payload == 'truncate':
    buffer = io.BytesIO()
    Image.fromarray(_coloured(5)).save(buffer, format='JPEG')
    payload = buffer.getvalue()[:300]
  elif payload == 'tiny':
    _save(path, _coloured(6, size=(8, 8)))
    payload = None
  if payload is not None:
    with open(path, 'wb') as f:
      f.write(payload)
  source = sources.ImageFolderSource(folder)
  with pytest.raises(precompute.BadExampleError, match=f"bad/{name}.*{reason}"):
    _job(source, str(tmp_path / 'strict')).run()
  assert not tf.io.gfile.glob(str(tmp_path / 'strict' / '*.tfrecord'))  # nothing half-written
  manifest = _job(source, str(tmp_path / 'lenient'),
                  policy=precompute.Policy(on_bad_example='skip')).run()
  assert manifest['totals']['examples'] == 4
  assert manifest['totals'][f'skipped/{reason}'] == 1


def test_single_segment_image_is_counted_or_rejected(tmp_path):
  root = str(tmp_path / 'flat')
  _save(f'{root}/flat.png', np.full((40, 40, 3), 128, np.uint8))
  manifest = _job(sources.ImageFolderSource(root), str(tmp_path / 'o1')).run()
  assert manifest['totals']['single_segment'] == 1
  with pytest.raises(precompute.BadExampleError, match="'flat.png': too few segments"):
    _job(sources.ImageFolderSource(root), str(tmp_path / 'o2'),
         policy=precompute.Policy(min_segments=2)).run()


def test_missing_and_mismatched_mask_files(tmp_path):
  root, mask_dir = str(tmp_path / 'img'), str(tmp_path / 'masks')
  _save(f'{root}/x.png', _coloured(0))
  _save(f'{root}/y.png', _coloured(1))
  _save(f'{mask_dir}/x.png', blocky_ids(48, 64, 4, 8).astype(np.uint8))
  spec = precompute.MaskSpec(kind='file')
  with pytest.raises(precompute.BadExampleError, match="'y.png': missing mask file"):
    _job(sources.ImageFolderSource(root, mask_dir=mask_dir), str(tmp_path / 'o1'),
         spec=spec).run()
  _save(f'{mask_dir}/y.png', blocky_ids(40, 64, 4, 8).astype(np.uint8))
  with pytest.raises(precompute.BadExampleError, match="'y.png': mask does not match"):
    _job(sources.ImageFolderSource(root, mask_dir=mask_dir), str(tmp_path / 'o2'),
         spec=spec).run()


def test_rerun_skips_finished_shards_and_resumes_after_interruption(folder, tmp_path,
                                                                    monkeypatch):
  out = str(tmp_path / 'out')
  job = _job(sources.ImageFolderSource(folder), out, num_shards=4)
  original = precompute.Job.write_shard
  written = []

  def interrupted(self, index):
    if index == 2:
      raise KeyboardInterrupt('preempted')
    written.append(index)
    return original(self, index)

  monkeypatch.setattr(precompute.Job, 'write_shard', interrupted)
  with pytest.raises(KeyboardInterrupt):
    job.run()
  assert written == [0, 1]
  assert not os.path.exists(os.path.join(out, records.MANIFEST_NAME))
  monkeypatch.setattr(precompute.Job, 'write_shard',
                      lambda self, i: written.append(i) or original(self, i))
  manifest = job.run()
  assert written == [0, 1, 2, 3]  # only the unfinished shards were written again
  assert manifest['totals']['examples'] == 4
  assert not tf.io.gfile.glob(os.path.join(out, '*.tmp*'))


def test_an_exception_inside_a_shard_leaves_no_partial_file(folder, tmp_path, monkeypatch):
  out = str(tmp_path / 'out')
  calls = []

  def failing(raw, spec, policy, stats):
    calls.append(raw.key)
    if len(calls) == 2:
      raise RuntimeError('disk full')
    return shards.make_example(raw.key, b'x', 1, 1, [np.zeros((1, 1), np.uint8)], ['m'])

  monkeypatch.setattr(precompute, 'process_example', failing)
  with pytest.raises(RuntimeError):
    _job(sources.ImageFolderSource(folder), out).run()
  assert os.listdir(out) == [precompute.JOB_NAME]  # the request, written before any shard


def test_workers_split_shards_and_the_last_one_writes_the_manifest(folder, tmp_path):
  out = str(tmp_path / 'out')
  source = sources.ImageFolderSource(folder)
  assert _job(source, out, num_shards=4, worker_index=0, num_workers=2).run() is None
  assert sorted(os.path.basename(p) for p in tf.io.gfile.glob(f'{out}/*.tfrecord')) == [
      'pretrain-00000-of-00004.tfrecord', 'pretrain-00002-of-00004.tfrecord']
  manifest = _job(source, out, num_shards=4, worker_index=1, num_workers=2,
                  num_processes=2).run()
  assert manifest['totals']['examples'] == 4
  with open(os.path.join(out, records.MANIFEST_NAME)) as f:
    assert json.load(f)['num_shards'] == 4


def test_ground_truth_source_from_coco_annotations(tmp_path):
  image_dir = str(tmp_path / 'coco')
  _save(f'{image_dir}/0001.png', _coloured(0))
  annotation = {
      'images': [{'id': 1, 'file_name': '0001.png', 'height': 48, 'width': 64}],
      'annotations': [
          {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0, 'area': 400,
           'bbox': [0, 0, 20, 20], 'segmentation': [[0, 0, 20, 0, 20, 20, 0, 20]]},
          {'id': 2, 'image_id': 1, 'category_id': 1, 'iscrowd': 0, 'area': 100,
           'bbox': [30, 10, 10, 10], 'segmentation': [[30, 10, 40, 10, 40, 20, 30, 20]]}],
      'categories': [{'id': 1, 'name': 'thing'}]}
  path = str(tmp_path / 'instances.json')
  with open(path, 'w') as f:
    json.dump(annotation, f)
  out = str(tmp_path / 'out')
  _job(sources.CocoSource(path, image_dir), out, spec=precompute.MaskSpec(kind='gt')).run()
  [(key, _, maps)] = _read_records(os.path.join(out, 'pretrain-00000-of-00001.tfrecord'))
  assert key == '0001.png'
  assert len(np.unique(maps[0])) == 3
  assert maps[0][5, 5] != maps[0][15, 35] != maps[0][40, 60]


def test_embedded_dataset_is_built_once_with_three_fh_scales(embedded_files):
  manifest = records.read_manifest(os.path.dirname(embedded_files[0]))
  assert manifest['totals']['examples'] == len(sources.SAMPLE_IMAGE_NAMES)
  assert manifest['source'] == 'skimage-samples'
  [(key, image, maps)] = _read_records(embedded_files[0])[:1]
  assert key == sources.SAMPLE_IMAGE_NAMES[0]
  assert max(image.shape[:2]) == 256 and len(maps) == 3
  assert all(m.shape == image.shape[:2] for m in maps)


def test_tfds_source_reads_a_prepared_dataset_by_slices(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class TinyImages(tfds.core.GeneratorBasedBuilder):
    """Five images, prepared offline like any TFDS dataset under a data_dir."""
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(encoding_format='png'),
          'image/filename': tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      for i in range(5):
        yield i, {'image': _coloured(i), 'image/filename': f'img{i}.png'}

  data_dir = str(tmp_path / 'tfds')
  TinyImages(data_dir=data_dir).download_and_prepare()
  source = sources.TfdsSource('tiny_images', 'train', data_dir)
  assert len(source) == 5
  out = str(tmp_path / 'out')
  manifest = _job(source, out, num_shards=2).run()
  assert manifest['totals']['examples'] == 5
  keys = sorted(key for name in manifest['files']
                for key, _, _ in _read_records(os.path.join(out, name)))
  assert keys == [f'img{i}.png' for i in range(5)]
  with pytest.raises(ValueError, match="split 'validation' is not prepared"):
    sources.TfdsSource('tiny_images', 'validation', data_dir)


def test_a_rerun_with_other_settings_is_refused_naming_them_and_the_same_one_resumes(
    folder, tmp_path):
  """Another shard count, FH setting or policy would mix records of two requests (and a manifest
  describing neither): refused in one line before anything is written."""
  out = str(tmp_path / 'out')
  source = sources.ImageFolderSource(folder)
  assert _job(source, out, num_shards=2).run()['totals']['examples'] == 4
  before = sorted(os.listdir(out))
  other_fh = precompute.MaskSpec(kind='fh', fh=precompute.FHMasks(settings=((500.0, 0.8, 50),)))
  refusals = [
      (dict(num_shards=4), "num_shards 2 there, 4 now"),
      (dict(num_shards=2, spec=other_fh), "fh_settings [[100.0, 0.5, 50]] there, "
                                          "[[500.0, 0.8, 50]] now"),
      (dict(num_shards=2, policy=precompute.Policy(min_image_side=8)),
       "min_image_side 32 there, 8 now"),
  ]
  for kwargs, difference in refusals:
    with pytest.raises(ValueError, match=rf'^--output_dir {out} holds shards made with other '
                                         rf'settings \({re.escape(difference)}\): use another'):
      _job(source, out, **kwargs).run()
  assert sorted(os.listdir(out)) == before
  assert _job(source, out, num_shards=2).run()['totals']['examples'] == 4  # same: resumes

  # An older run's folder (a manifest, no job.json) is compared with its manifest.
  os.remove(os.path.join(out, precompute.JOB_NAME))
  with pytest.raises(ValueError, match='num_shards 2 there, 4 now'):
    _job(source, out, num_shards=4).run()


def test_stale_record_files_in_the_output_folder_are_refused_and_training_warns_of_them(
    folder, tmp_path):
  out = str(tmp_path / 'out')
  source = sources.ImageFolderSource(folder)
  _job(source, out, num_shards=2).run()
  stale = os.path.join(out, 'pretrain-00003-of-00004.tfrecord')
  tf.io.gfile.copy(os.path.join(out, 'pretrain-00000-of-00002.tfrecord'), stale)
  with pytest.raises(ValueError, match=r'holds record files this job does not write '
                                       r'\(pretrain-00003-of-00004.tfrecord\)'):
    _job(source, out, num_shards=2).run()
  files = sorted(tf.io.gfile.glob(os.path.join(out, 'pretrain-*.tfrecord')))
  assert records.unlisted_files(files) == [stale]


def test_a_new_mask_source_is_one_class(folder, tmp_path, monkeypatch):
  """A kind of stored masks is one registered `MaskSource`: its maps reach the shards, its
  names the records and its (lack of) FH settings the job's request, with no other change."""

  class Halves(precompute.MaskSource):
    kind = 'halves'

    def make(self, raw, image, spec, stats):
      ids = np.zeros(image.shape[:2], np.uint8)
      ids[:, image.shape[1] // 2:] = 1
      return [ids]

  monkeypatch.setitem(precompute._MASK_SOURCES, 'halves', Halves())  # pylint: disable=protected-access
  out = str(tmp_path / 'halves')
  manifest = _job(sources.ImageFolderSource(folder), out,
                  spec=precompute.MaskSpec(kind='halves')).run()
  assert manifest['mask_kind'] == 'halves' and manifest['mask_names'] == ['halves']
  assert manifest['fh_settings'] == [] and manifest['fh_working_settings'] == []
  for name in manifest['files']:
    for _, image, maps in _read_records(os.path.join(out, name)):
      assert (maps[0][:, :image.shape[1] // 2] == 0).all()
      assert (maps[0][:, image.shape[1] // 2:] == 1).all()
  with pytest.raises(ValueError, match=r"^mask kind must be one of 'fh', 'gt', 'file', got "
                                       r"'slic'$"):
    precompute.MaskSpec(kind='slic').names()


def test_mask_settings_are_a_one_of_whose_other_blocks_are_refused():
  """The FH block of a spec of another kind would be ignored: it is refused instead, and the
  job records the chosen kind's settings only."""
  with pytest.raises(ValueError, match=r"^mask settings 'fh' are set but the mask kind is "
                                       r"'gt'$"):
    precompute.MaskSpec(kind='gt', fh=precompute.FHMasks(downscale=0.5))
  gt = precompute.mask_source('gt').settings(precompute.MaskSpec(kind='gt'))
  assert gt['fh_settings'] == [] and gt['fh_downscale'] is None
  fh = precompute.MaskSpec(fh=precompute.FHMasks(settings=SMALL_FH, max_segments=None))
  assert precompute.mask_source('fh').settings(fh)['fh_settings'] == [list(s) for s in SMALL_FH]
  assert precompute.mask_source('fh').settings(fh)['max_segments'] is None
