r"""Fine-tunes a pretrained encoder with Model Garden's own tasks (Mask R-CNN, segmentation).

  python launch/finetune.py --experiment=maskrcnn_resnetfpn_coco \
      --config_file=official_configs/finetune/maskrcnn_detcon_coco_1x.yaml \
      --init_checkpoint=gs://B/runs/detcon_b_1000ep/export \
      --tpu=local --model_dir=gs://B/runs/maskrcnn_detcon_1x --mode=train_and_eval

--init_checkpoint takes a tf_detcon export (its directory), a checkpoint directory or prefix.
task.init_checkpoint_modules, where a config file or override sets it, says what loads; else the
export's metadata does (backbone, plus decoder for DeCon). A backbone or decoder that does not
match the pretrained one stops with one line before anything is built; a pretrained FPN whose
levels differ from the task's loads the levels both have, and says which did not load. The
fields that decide the pretrained network's function (architecture, activation, batch-norm
epsilon) are the export's unless a config file or override sets them: a conflicting setting
stops with one line.

--seed makes a fine-tuning repeatable: it seeds the new layers' initialisation, the data order
and the augmentation, and turns on TF's deterministic ops; it is recorded in params.yaml as
task.train_data.seed. Two runs with one seed end with the same weights and metrics (on one
machine); Model Garden's own launcher seeds nothing.
"""

from absl import flags

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position

console.start_launcher()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
from official.core import exp_factory
from official.core import train_utils
from tf_detcon import registry_imports  # pylint: disable=unused-import  (experiments, VOC task)
from tf_detcon.finetuning import transfer
from tf_detcon.support import cli
from tf_detcon.support import locks
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
MODES = ('train_and_eval', 'train', 'eval', 'continuous_eval')
flags.DEFINE_string('init_checkpoint', None,
                    'A tf_detcon export directory, checkpoint directory or prefix.')
flags.DEFINE_integer('seed', None,
                     'Seeds initialisation, data order and augmentation, with deterministic '
                     'ops (recorded as task.train_data.seed).')


def check_data(params, mode: str) -> None:
  """The task's inputs for this mode are set (Model Garden's defaults leave them empty)."""
  needed = (['train_data'] if 'train' in mode else []) + (
      ['validation_data'] if 'eval' in mode else [])
  for name in needed:
    data = getattr(params.task, name)
    if not (data.input_path or getattr(data, 'tfds_name', '')):
      raise ValueError(f'task.{name}.input_path is empty: set it with --config_file or '
                       f'--params_override=task.{name}.input_path=...')


def main(argv):
  mode = cli.check_flags(FLAGS, argv, MODES, 'maskrcnn_resnetfpn_coco')
  cli.check_minimums(FLAGS, [('seed', 0)])
  params = cli.parse_configuration(FLAGS)
  if FLAGS.seed is not None:
    recorded = params.task.train_data.seed
    if recorded is not None and recorded != FLAGS.seed:
      raise ValueError(f'--seed={FLAGS.seed} but task.train_data.seed is {recorded}: give one')
    params.task.train_data.seed = FLAGS.seed
  if FLAGS.init_checkpoint:
    default = exp_factory.get_exp_config(FLAGS.experiment).task.init_checkpoint_modules
    transfer.resolve_init_checkpoint(
        params, FLAGS.init_checkpoint,
        modules_given=params.task.init_checkpoint_modules != default,
        explicit=cli.explicit_keys(FLAGS))
  check_data(params, mode)
  params.validate()
  params.lock()
  cli.ensure_writable(FLAGS.model_dir)
  if 'train' not in mode:  # an evaluator may watch a training run's model_dir
    transfer.run(params, FLAGS.model_dir, mode, seed=FLAGS.seed)
    return
  with locks.DirectoryLock(FLAGS.model_dir, '--model_dir', command=f'finetune {mode}'):
    train_utils.serialize_config(params, FLAGS.model_dir)
    transfer.run(params, FLAGS.model_dir, mode, seed=FLAGS.seed)


def run() -> None:
  """The `tf-detcon-finetune` command (setup.py's entry point) and `python launch/finetune.py`."""
  cli.define_flags(MODES)
  cli.run(main, info_logs=True)  # Model Garden's trainer reports progress in its INFO log


if __name__ == '__main__':
  run()
