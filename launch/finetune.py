r"""Fine-tunes a pretrained encoder with Model Garden's own tasks (Mask R-CNN, segmentation).

  python launch/finetune.py --experiment=maskrcnn_resnetfpn_coco \
      --config_file=official_configs/finetune/maskrcnn_detcon_coco_1x.yaml \
      --init_checkpoint=gs://B/runs/detcon_b_1000ep/export \
      --tpu=local --model_dir=gs://B/runs/maskrcnn_detcon_1x --mode=train_and_eval

--init_checkpoint takes a tf_detcon export (its directory), a checkpoint directory or prefix.
task.init_checkpoint_modules, where a config file or override sets it, says what loads; else the
export's metadata does (backbone, plus decoder for DeCon). A backbone or decoder that does not
match the pretrained one stops with one line before anything is built; a pretrained FPN whose
levels differ from the task's loads the levels both have, and says which did not load.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from official.core import exp_factory
from official.core import train_utils
from tf_detcon import cli
from tf_detcon import segmentation  # pylint: disable=unused-import  (registers its experiment)
from tf_detcon import transfer
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
MODES = ('train_and_eval', 'train', 'eval', 'continuous_eval')
flags.DEFINE_string('init_checkpoint', None,
                    'A tf_detcon export directory, checkpoint directory or prefix.')


def main(argv):
  mode = cli.check_flags(FLAGS, argv, MODES, 'maskrcnn_resnetfpn_coco')
  params = train_utils.parse_configuration(FLAGS, lock_return=False, print_return=False)
  if FLAGS.init_checkpoint:
    default = exp_factory.get_exp_config(FLAGS.experiment).task.init_checkpoint_modules
    transfer.resolve_init_checkpoint(
        params, FLAGS.init_checkpoint,
        modules_given=params.task.init_checkpoint_modules != default)
  params.validate()
  params.lock()
  if 'train' in mode:
    train_utils.serialize_config(params, FLAGS.model_dir)
  transfer.run(params, FLAGS.model_dir, mode)


if __name__ == '__main__':
  cli.define_flags(MODES)
  cli.run(main)
