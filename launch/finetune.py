r"""Fine-tunes a pretrained encoder with Model Garden's own tasks (Mask R-CNN, segmentation).

  python launch/finetune.py --experiment=maskrcnn_resnetfpn_coco \
      --config_file=official_configs/finetune/maskrcnn_detcon_coco_1x.yaml \
      --init_checkpoint=gs://B/runs/detcon_b_1000ep/export \
      --tpu=local --model_dir=gs://B/runs/maskrcnn_detcon_1x --mode=train_and_eval

--init_checkpoint takes a tf_detcon export (its directory), a checkpoint directory or prefix;
init_checkpoint_modules are read from the export (backbone, plus decoder for DeCon), and a
backbone that does not match the pretrained one stops with one line before anything is built.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from official.common import flags as tfm_flags
from official.core import exp_factory
from official.core import train_utils
from tf_detcon import cli
from tf_detcon import transfer
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
MODES = ('train', 'eval', 'train_and_eval', 'continuous_eval')
flags.DEFINE_string('init_checkpoint', None,
                    'A tf_detcon export directory, checkpoint directory or prefix.')


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.experiment:
    raise ValueError('--experiment is required, e.g. --experiment=maskrcnn_resnetfpn_coco')
  if FLAGS.experiment not in exp_factory._REGISTERED_CONFIGS:  # pylint: disable=protected-access
    raise ValueError(f'unknown experiment {FLAGS.experiment!r}')
  mode = FLAGS.mode or 'train_and_eval'
  if mode not in MODES:
    raise ValueError(f'--mode must be one of {", ".join(MODES)}, got {mode!r}')
  if not FLAGS.model_dir:
    raise ValueError('--model_dir is required')
  params = train_utils.parse_configuration(FLAGS, lock_return=False, print_return=False)
  if FLAGS.init_checkpoint:
    transfer.resolve_init_checkpoint(params, FLAGS.init_checkpoint)
  params.validate()
  params.lock()
  if 'train' in mode:
    train_utils.serialize_config(params, FLAGS.model_dir)
  transfer.run(params, FLAGS.model_dir, mode)


if __name__ == '__main__':
  tfm_flags.define_flags()
  cli.run(main)
