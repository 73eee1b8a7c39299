r"""Imports a released ResNet into an export of ours, for fine-tuning through Model Garden.

  python launch/import_weights.py --format=haiku --allow_pickle \
      --input=resnet50_detcon_b_imagenet_1k.npy --output_dir=weights/detcon_b_r50
  python launch/import_weights.py --format=torchvision \
      --input=moco_v2_800ep_pretrain.pth.tar --output_dir=weights/mocov2_r50
  python launch/import_weights.py --format=detectron2 --allow_pickle \
      --input=detco_200ep.pkl --output_dir=weights/detco_r50
  python launch/finetune.py --experiment=maskrcnn_resnetfpn_coco \
      --config_file=official_configs/finetune/maskrcnn_detcon_coco_1x.yaml \
      --init_checkpoint=weights/detcon_b_r50 --model_dir=runs/maskrcnn_detcon_b

--format=haiku: DeepMind's `.npy` releases (DetCon, BYOL). --format=torchvision: PyTorch state
dicts in torchvision's (or detectron2's) ResNet layout, with wrappers such as `module.`,
`encoder_q.` or `backbone.` found and stripped. --format=detectron2: a detectron2 `.pkl` of numpy
arrays (DetCo's release), read with --allow_pickle by an unpickler that admits numpy arrays only. The depth is read from the file; --model_id, if
given, must agree. --output_dir gets saved_model/, checkpoint/ and metadata.json (the source
file, its format and sha256).
"""

from absl import flags

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position

console.start_launcher()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
from tf_detcon.support import cli
from tf_detcon.weights import importer
from tf_detcon.weights import source_files
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('format', None, f'One of: {", ".join(importer.FORMATS)}.')
flags.DEFINE_string('input', None, 'The released weights file (.npy, .pth, .pth.tar, .pt).')
flags.DEFINE_string('output_dir', None, 'The export directory to write.')
flags.DEFINE_integer('model_id', None, "The ResNet's depth, if you want it checked (50, 200, "
                     '...); read from the file otherwise.')
flags.DEFINE_bool('allow_pickle', False, 'Read a .npy that holds pickled objects (the DetCon '
                  'and BYOL releases do), or a detectron2 .pkl (numpy arrays only). A pickle '
                  'can run code: only for files you trust.')
flags.DEFINE_enum('padding', 'same', ['same', 'symmetric'], "'symmetric' (PyTorch-trained: "
                  "torchvision, detectron2): the "
                  "export's SavedModel, evaluate.py and visualize.py pad stride-2 layers as "
                  "PyTorch does, computing the source network's features exactly; fine-tuning "
                  "in Model Garden pads as TF does either way.")
flags.DEFINE_string('source_scope', '', 'Of a file holding several ResNets, the one whose '
                    "name contains this, e.g. 'encoder_k' or 'target'.")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  for name in ('format', 'input', 'output_dir'):
    if not FLAGS[name].value:
      raise ValueError(f'--{name} is required')
  importer.check_settings(FLAGS.format, FLAGS.padding, FLAGS.allow_pickle)
  cli.check_minimums(FLAGS, [('model_id', 1)])
  source_files.check_file(FLAGS.input)
  cli.ensure_writable(FLAGS.output_dir, '--output_dir')
  importer.run(FLAGS.format, FLAGS.input, FLAGS.output_dir, model_id=FLAGS.model_id,
               allow_pickle=FLAGS.allow_pickle, scope=FLAGS.source_scope,
               padding=FLAGS.padding)


def run() -> None:
  """The `tf-detcon-import-weights` command (setup.py's entry point) and `python launch/import_weights.py`."""
  cli.run(main)


if __name__ == '__main__':
  run()
