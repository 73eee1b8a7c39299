"""The miniature transfer table (benchmarks/transfer_table.py): its labelled data against the
scenes' ground truth, its verdicts, and its smoke version through launch/finetune.py."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from pycocotools import mask as coco_mask

from tests.conftest import REPO_ROOT
from tf_detcon.data.offline import scenes

import transfer_table


def test_coco_annotations_are_the_scenes_objects(tmp_path):
  path = transfer_table.write_coco(str(tmp_path), 'transfer_eval', 6, 96)
  with open(path) as f:
    coco = json.load(f)
  objects = 0
  for seed, s in scenes.scenes('transfer_eval', 6, 96):
    mine = [a for a in coco['annotations'] if a['image_id'] == seed]
    assert len(mine) == len(s.instance_masks()), seed
    for annotation, mask in zip(mine, s.instance_masks()):
      objects += 1
      ys, xs = np.nonzero(mask)
      assert annotation['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                    ys.max() - ys.min() + 1]
      assert annotation['category_id'] == np.bincount(s.semantic[mask]).argmax() > 0
      drawn = coco_mask.decode(coco_mask.merge(
          coco_mask.frPyObjects(annotation['segmentation'], 96, 96))).astype(bool)
      assert (drawn & mask).sum() / (drawn | mask).sum() > 0.99, (seed, annotation['id'])
  assert objects > 6 and len(coco['images']) == 6
  assert [c['id'] for c in coco['categories']] == list(range(1, scenes.NUM_CLASSES))


def _result(row, value, p, f, task='retinanet', labels='train'):
  return {'row': row, 'task': task, 'labels': labels, 'value': value, 'pretrain_seed': p,
          'finetune_seed': f, 'seconds': 60.0, 'norm_ratio': None}


def test_orderings_are_paired_intervals_and_random_init_pairs_by_fine_tuning_seed():
  results = ([_result('random', v, None, f) for f, v in enumerate((0.30, 0.20, 0.25))]
             + [_result('simclr', v, p, p) for p, v in enumerate((0.20, 0.22, 0.21))]
             + [_result('detcon_s_fh', v, p, p) for p, v in enumerate((0.30, 0.31, 0.29))]
             + [_result('byol', v, p, p) for p, v in enumerate((0.20, 0.30, 0.25))]
             + [_result('detcon_b', v, p, p) for p, v in enumerate((0.27, 0.28, 0.26))])
  text = transfer_table.table(results, list(transfer_table.ROWS))
  # DetCon_S − SimCLR: differences 0.10, 0.09, 0.08: mean 0.09, sd 0.01, t(0.975, 2) = 4.303.
  half = 4.302652729749 * 0.01 / np.sqrt(3)
  assert (f'DetCon_S (FH)              vs SimCLR: +0.090 [{0.09 - half:+.3f}, {0.09 + half:+.3f}]'
          ' (n=3): holds') in text, text
  # Against random init each pair is the same fine-tuning seed: 0.30−0.30, 0.31−0.20, 0.29−0.25.
  d = np.array([0.0, 0.11, 0.04])
  half = 4.302652729749 * d.std(ddof=1) / np.sqrt(3)
  assert (f'vs random init: {d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] '
          '(n=3): not shown') in text, text
  assert 'DetCon_B (FH)              vs BYOL: +0.020' in text
  assert '15 fine-tunings took 15.0 min in all (1.0 min each)' in text
  # Each row: mean ± sample std over its pairs.
  assert re.search(r'^random init +- +0\.250 ± 0\.050 \(3\)$', text, re.M), text


def test_the_budget_rule_takes_the_first_flat_candidate_else_the_largest():
  def values(gaps):
    out = {}
    for task in ('retinanet', 'segmentation'):
      for seed in transfer_table.BUDGET_SEEDS:
        out[(task, transfer_table.BUDGET_REFERENCE, seed)] = 0.8
        for steps, gap in zip(transfer_table.BUDGET_CANDIDATES, gaps[task]):
          out[(task, steps, seed)] = 0.8 - gap
    return out
  steps, lines = transfer_table.budget_rule(
      values({'retinanet': (0.1, 0.015, 0.0), 'segmentation': (0.03, 0.019, 0.05)}),
      ['retinanet', 'segmentation'])
  assert steps == 1200 and lines[1].endswith('<- within the tolerance'), lines
  steps, _ = transfer_table.budget_rule(
      values({'retinanet': (0.1, 0.1, 0.1), 'segmentation': (0.0, 0.0, 0.0)}),
      ['retinanet', 'segmentation'])
  assert steps == transfer_table.BUDGET_CANDIDATES[-1]


def test_smoke_fine_tunes_decon_with_its_fpn_for_detection_and_segmentation(tmp_path):
  command = [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'transfer_table.py'),
             '--smoke', f'--work_dir={tmp_path}', f'--plot={tmp_path / "table.png"}']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  result = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  row = next(line for line in result.stdout.splitlines()
             if line.startswith('DeCon-SL (encoder + FPN)'))
  values = [float(v) for v in re.findall(r'(-?\d+\.\d+) ± ', row)]
  assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values), row
  with open(tmp_path / 'table.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  runs = tmp_path / 'steps3-scenes16' / f'transfer-v{transfer_table.VERSION}' / 'runs'
  for task in ('retinanet', 'segmentation'):
    with open(runs / f'{task}-train-decon_sl_fpn-p0-f0' / 'finetune.log') as f:
      log = f.read()
    # From P2: DeCon-SL's trained output convolution (P2's) loads; P3–P5's are its untrained ones.
    assert ('pretrained FPN layers loaded: lateral_2, lateral_3, lateral_4, lateral_5, norm_2, '
            'post_hoc_2; loaded but untrained in pretraining (at their pretraining '
            'initialisation): norm_3, norm_4, norm_5, post_hoc_3, post_hoc_4, post_hoc_5') in log
  kept = tmp_path / f'transfer-v{transfer_table.VERSION}' / 'pretrain3-finetune2'
  assert sorted(os.listdir(kept)) == ['retinanet-train-decon_sl_fpn-p0-f0.json',
                                      'segmentation-train-decon_sl_fpn-p0-f0.json']
  # Cached per run: a second call fine-tunes nothing and prints the same table.
  again = subprocess.run(command[:-1], capture_output=True, text=True, timeout=600, env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert row in again.stdout and ' min)' not in again.stdout
  # --kept prints the kept results' table and computes nothing, not even the labelled data.
  for labelled in tmp_path.glob('labelled-*'):
    shutil.rmtree(labelled)
  kept_only = subprocess.run(command[:-1] + ['--kept'], capture_output=True, text=True,
                             timeout=600, env=env)
  assert kept_only.returncode == 0, kept_only.stderr[-3000:]
  assert f'kept in {kept}: 2 of 2 fine-tunings' in kept_only.stdout and row in kept_only.stdout
  assert not list(tmp_path.glob('labelled-*'))
