"""Tests for tf_detcon.data.offline.mask_report: ABO against a hand computation, the report."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from tests.conftest import REPO_ROOT
from tf_detcon.data.offline import mask_report
from tf_detcon.data.offline import scenes


def test_best_overlap_by_hand():
  # 4x4 id map: segment 0 the left half, 1 the top-right quarter, 2 the bottom-right quarter.
  segments = np.array([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [0, 0, 2, 2],
                       [0, 0, 2, 2]])
  right_half = np.zeros((4, 4), bool)
  right_half[:, 2:] = True  # overlaps 1 and 2 with IoU 4/8 each
  square = np.zeros((4, 4), bool)
  square[:2, :3] = True  # segment 0: 4/(6+8-4) = 0.4; segment 1: 2/(6+4-2) = 0.25
  empty = np.zeros((4, 4), bool)
  assert mask_report.best_overlaps(segments, [right_half, square, empty]) == [0.5, 0.4]
  assert mask_report.best_overlaps(segments, [segments == 1]) == [1.0]
  with pytest.raises(ValueError, match='does not match'):
    mask_report.best_overlaps(segments, [np.ones((3, 3), bool)])


def test_segment_statistics():
  stats = mask_report.segment_statistics([2, 4, 6, 8])
  assert stats['mean'] == 5 and stats['min'] == 2 and stats['max'] == 8 and stats['median'] == 5


def test_make_masks_reports_abo_segments_and_merges_into_the_manifest(tmp_path):
  images, instances = tmp_path / 'images', tmp_path / 'instances'
  images.mkdir()
  instances.mkdir()
  for seed, s in scenes.scenes('eval', 4, 64):
    Image.fromarray(s.image).save(images / f'{seed}.png')
    Image.fromarray(s.instances.astype(np.uint8)).save(instances / f'{seed}.png')
  out = tmp_path / 'shards'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'launch', 'make_masks.py'),
       f'--image_dir={images}', f'--output_dir={out}', '--fh_setting=100:0.8:20',
       '--max_segments=8', '--report', f'--report_instances={instances}'],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'mask report:' in result.stdout
  with open(out / 'manifest.json') as f:
    report = json.load(f)['report']
  fh = report['fh_100_0.8_20']
  assert fh['images'] == 4 and 0.0 < fh['abo'] < 1.0 and fh['ground_truth_instances'] >= 4
  assert fh['segments_per_image']['max'] <= 8
  assert report['merged_segments'] > 0  # FH at this scale finds more than 8 segments
  assert report['images_with_ground_truth'] == 4
  # The same ground truth stored as the masks scores a perfect ABO.
  gt = tmp_path / 'gt'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'launch', 'make_masks.py'),
       f'--image_dir={images}', f'--output_dir={gt}', '--mask_kind=file',
       f'--mask_dir={instances}', '--report', f'--report_instances={instances}'],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr[-2000:]
  with open(gt / 'manifest.json') as f:
    assert json.load(f)['report']['file']['abo'] == pytest.approx(1.0)
