r"""Pretrains any registered method (DetCon, BYOL, SimCLR, DetCo, MoCo v2, DeCon), then exports.

Model Garden's flag conventions:
  python launch/pretrain.py --experiment=detcon_b_tiny --model_dir=runs/detcon_b_tiny
  python launch/pretrain.py --experiment=detcon_b_imagenet \
      --config_file=official_configs/pretrain/detcon_b_imagenet_1000ep.yaml \
      --params_override=task.train_data.input_path=gs://bucket/detcon/imagenet/*.tfrecord \
      --tpu=local --model_dir=gs://bucket/runs/detcon_b
  python launch/pretrain.py --experiment=... --model_dir=... --mode=export

--mode=train (default) resumes from --model_dir if it holds checkpoints, trains to
trainer.train_steps and exports; --mode=export exports the latest checkpoint.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from official.core import train_utils
from tf_detcon import cli
from tf_detcon.configs import experiments  # pylint: disable=unused-import  (registers them)
from tf_detcon.configs import pretrain
from tf_detcon.data.offline import build_embedded
from tf_detcon.training import trainer
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
MODES = ('train', 'export')


def main(argv):
  mode = cli.check_flags(FLAGS, argv, MODES, 'detcon_b_tiny',
                         accepts=lambda c: isinstance(c, pretrain.PretrainExperiment))
  params = train_utils.parse_configuration(FLAGS, print_return=False)
  train_utils.serialize_config(params, FLAGS.model_dir)
  if mode == 'train' and not params.task.train_data.input_path:
    build_embedded.ensure()  # the embedded sample set, built once on first use
  if mode == 'train':
    trainer.train_and_export(params, FLAGS.model_dir)
  else:
    trainer.export_only(params, FLAGS.model_dir)


if __name__ == '__main__':
  cli.define_flags(MODES)
  cli.run(main)
