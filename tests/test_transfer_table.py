"""The miniature transfer table (benchmarks/transfer_table.py): its labelled data against the
scenes' ground truth, its verdicts, and its smoke version through launch/finetune.py."""

import json
import os
import re
import subprocess
import sys

import numpy as np
from pycocotools import mask as coco_mask

from tests.conftest import REPO_ROOT
from tf_detcon.data.offline import scenes

sys.path.insert(0, os.path.join(REPO_ROOT, 'benchmarks'))
import transfer_table  # pylint: disable=g-import-not-at-top,wrong-import-position


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


def test_an_ordering_holds_only_beyond_the_larger_seed_std():
  def result(row, value, seed):
    return {'row': row, 'task': 'retinanet', 'labels': 'train', 'value': value, 'seed': seed,
            'seconds': 60.0}
  results = ([result('simclr', v, i) for i, v in enumerate((0.20, 0.22, 0.21))]
             + [result('detcon_s_fh', v, i) for i, v in enumerate((0.30, 0.31, 0.29))]
             + [result('byol', v, i) for i, v in enumerate((0.20, 0.30, 0.25))]
             + [result('detcon_b', v, i) for i, v in enumerate((0.27, 0.28, 0.26))])
  text = transfer_table.table(results, list(transfer_table.ROWS))
  assert re.search(r'DetCon_S \(FH\) vs SimCLR: \+0\.090 \(holds', text), text
  assert re.search(r'DetCon_B \(FH\) vs BYOL: \+0\.020 \(does not hold: std 0\.041', text), text
  assert '12 fine-tunings took 12.0 min in all (1.0 min each)' in text


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
    with open(runs / f'{task}-train-decon_sl_fpn-seed0' / 'finetune.log') as f:
      log = f.read()
    assert re.search(r"loaded the pretrained FPN's coarser_6, lateral_3, .*; not pretrained, "
                     r'left at their initialisation: coarser_7, norm_7', log), task
  # Cached per run: a second call fine-tunes nothing and prints the same table.
  again = subprocess.run(command[:-1], capture_output=True, text=True, timeout=600, env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert row in again.stdout and ' min)' not in again.stdout
