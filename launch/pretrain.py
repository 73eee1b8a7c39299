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
--tf_data_service=grpc://host:port runs the input pipeline on that tf.data service's workers
(task.train_data.enable_tf_data_service and tf_data_service_address).
"""

from absl import flags

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position

console.start_launcher()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
from official.core import train_utils
from tf_detcon.support import cli
from tf_detcon import registry_imports  # pylint: disable=unused-import
from tf_detcon.configs import fields
from tf_detcon.configs import pretrain
from tf_detcon.data.offline import build_embedded
from tf_detcon.training import trainer
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
MODES = ('train', 'export')


def parse(flags_obj) -> pretrain.PretrainExperiment:
  """Model Garden's parse (experiment, config files, --tpu, --params_override); --tf_data_service
  turns the service on for the training input (the probe's labelled set is read in-process)."""
  options = train_utils.ParseConfigOptions(
      experiment=flags_obj.experiment, config_file=flags_obj.config_file, tpu=flags_obj.tpu,
      params_override=flags_obj.params_override or '')
  params = cli.parse_configuration(options)
  if flags_obj.tf_data_service:
    params.override({'task': {'train_data': {
        'enable_tf_data_service': True, 'tf_data_service_address': flags_obj.tf_data_service}}})
  fields.ints_to_floats(params)
  params.lock()
  return params


def main(argv):
  mode = cli.check_flags(FLAGS, argv, MODES, 'detcon_b_tiny',
                         accepts=lambda c: isinstance(c, pretrain.PretrainExperiment))
  params = parse(FLAGS)
  cli.ensure_writable(FLAGS.model_dir)  # params.yaml is written once the run can start
  data = params.task.train_data
  if mode == 'train' and not (data.input_path or data.tfds_name):
    build_embedded.ensure()  # the embedded sample set, built once on first use
  if mode == 'train':
    trainer.train_and_export(params, FLAGS.model_dir)
  else:
    trainer.export_only(params, FLAGS.model_dir)


def run() -> None:
  """The `tf-detcon-pretrain` command (setup.py's entry point) and `python launch/pretrain.py`."""
  cli.define_flags(MODES)
  cli.run(main)


if __name__ == '__main__':
  run()
