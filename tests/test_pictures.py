"""Tests for tf_detcon.evaluation.pictures and launch/visualize.py: PNGs that show something."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import REPO_ROOT
from tf_detcon.evaluation import pictures


def test_overlay_outlines_segments_and_leaves_a_global_mask_alone():
  image = np.full((8, 8, 3), 100, np.uint8)
  ids = np.zeros((8, 8), np.int32)
  np.testing.assert_array_equal(pictures.overlay(image, ids), image)
  ids[:, 4:] = 1
  out = pictures.overlay(image, ids)
  assert np.all(out[:, 4] == 255) and not np.array_equal(out[:, :3], image[:, :3])


def test_similarity_maps_peak_at_their_query():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(4, 4, 8))
  maps = pictures.similarity_maps(features, [(0.0, 0.0), (0.9, 0.6)])
  assert maps.shape == (2, 4, 4)
  assert np.unravel_index(maps[0].argmax(), (4, 4)) == (0, 0)
  assert np.unravel_index(maps[1].argmax(), (4, 4)) == (3, 2)
  np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, rtol=1e-6)


def _visualize(out, *args):
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'launch', 'visualize.py'),
                         f'--output_dir={out}', '--num_examples=2', '--image_size=64', *args],
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))


def _png(path):
  with Image.open(path) as pil:
    return np.asarray(pil)


def test_visualize_writes_views_similarity_and_retrieval(tmp_path, tiny_run, embedded_files):
  del embedded_files
  done = _visualize(tmp_path / 'b', f'--export={tiny_run.model_dir}/export')
  assert done.returncode == 0, done.stderr[-3000:]
  size = 128 + 2 * pictures.PAD
  shapes = {}
  for name in ('views.png', 'similarity.png', 'retrieval.png'):
    image = _png(tmp_path / 'b' / name)
    shapes[name] = image.shape
    assert image.ndim == 3 and image.std() > 20, name  # not blank
  assert shapes['views.png'] == (2 * size, 4 * size, 3)  # image, id map, two views
  assert shapes['similarity.png'] == (2 * size, 7 * size, 3)  # image + 3 × (marked, map)
  assert shapes['retrieval.png'][1] == 6 * (96 + 2 * pictures.PAD)  # query + 5 neighbours
  detco = _visualize(tmp_path / 'detco', '--experiment=detco_tiny')
  assert detco.returncode == 0, detco.stderr[-3000:]
  assert _png(tmp_path / 'detco' / 'views.png').shape[1] == 5 * size  # + the nine patches
