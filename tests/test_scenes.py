"""Tests for tf_detcon.data.offline.scenes: deterministic, disjoint, class only from appearance."""

import numpy as np

from tf_detcon.data.offline import precompute
from tf_detcon.data.offline import scenes


def test_a_scene_is_a_function_of_its_seed_and_its_maps_agree():
  a, b = scenes.scene(7, 64), scenes.scene(7, 64)
  np.testing.assert_array_equal(a.image, b.image)
  np.testing.assert_array_equal(a.semantic, b.semantic)
  assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8
  assert not np.array_equal(a.image, scenes.scene(8, 64).image)
  # Objects and classes agree: background is class 0, each visible object one class > 0.
  assert np.all((a.instances == 0) == (a.semantic == 0))
  for mask in a.instance_masks():
    classes = np.unique(a.semantic[mask])
    assert len(classes) == 1 and classes[0] > 0


def test_probe_and_pretraining_scenes_are_disjoint():
  seeds = {split: {seed for seed, _ in scenes.scenes(split, 50, 32)}
           for split in ('pretrain', 'train', 'eval')}
  assert not seeds['pretrain'] & seeds['train'] and not seeds['train'] & seeds['eval']
  assert not seeds['pretrain'] & seeds['eval']


def test_class_is_not_given_away_by_colour_size_or_position():
  """Per class, object colour, area and centre are distributed alike; texture differs."""
  stats = {c: {'rgb': [], 'area': [], 'centre': []} for c in range(1, scenes.NUM_CLASSES)}
  for _, s in scenes.scenes('eval', 300, 64):
    for mask in s.instance_masks():
      cls = int(s.semantic[mask][0])
      ys, xs = np.nonzero(mask)
      stats[cls]['rgb'].append(s.image[mask].mean(0))
      stats[cls]['area'].append(mask.mean())
      stats[cls]['centre'].append((ys.mean() / 64, xs.mean() / 64))
  assert all(len(v['area']) > 40 for v in stats.values())  # every class appears often
  means = {k: {name: np.mean(values, axis=0) for name, values in v.items()}
           for k, v in stats.items()}
  for name, tolerance in (('rgb', 25.0), ('area', 0.05), ('centre', 0.08)):
    spread = np.ptp(np.stack([m[name] for m in means.values()]), axis=0)
    assert np.all(spread < tolerance), (name, spread)


def test_scene_source_feeds_the_precompute_with_ground_truth(tmp_path):
  job = precompute.Job(source=scenes.SceneSource(6, 64), out_dir=str(tmp_path), num_shards=2,
                       spec=precompute.MaskSpec(kind='gt'))
  manifest = job.run()
  assert manifest['totals']['examples'] == 6
