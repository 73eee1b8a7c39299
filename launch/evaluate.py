r"""Frozen dense evaluation of a pretrained encoder: linear and kNN probes on per-pixel labels.

  python launch/evaluate.py --export=runs/detcon_b/export --synthetic --level=3,4
  python launch/evaluate.py --export=random:detcon_b_tiny --synthetic --output_dir=runs/floor
  python launch/evaluate.py --export=gs://B/runs/detcon_b_1000ep/export \
      --input_path=gs://B/voc/train_aug* --eval_input_path=gs://B/voc/val* --num_classes=21
  python launch/evaluate.py --export=... --train_images=DIR --train_labels=DIR \
      --eval_images=DIR --eval_labels=DIR --num_classes=N [--ignore_label=255]

The encoder is frozen (BN in inference mode). Data: Model Garden semantic-segmentation TFRecords
(--input_path, --eval_input_path), image and label-PNG folders matched by file stem, or the
built-in synthetic scenes (--synthetic). Results: a table, eval/<name>.json and TensorBoard scalars
under the run's model_dir (or --output_dir); the last lines are
`<probe> level=<L> mIoU=<x> acc=<y>`.
"""

import os

from absl import flags

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position

console.start_launcher()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
from tf_detcon.support import cli
from tf_detcon.evaluation import labelled_sets
from tf_detcon.evaluation import frozen
from tf_detcon.evaluation import probes
from tf_detcon.evaluation import report
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
PROBES = ('linear', 'knn')  # probes.evaluate's
flags.DEFINE_string('export', None, 'An export directory (<model_dir>/export), or '
                    'random:<experiment> for a random-init encoder of that experiment.')
flags.DEFINE_string('train_images', None, 'Folder of images the probes are fitted on.')
flags.DEFINE_string('train_labels', None, 'Folder of their label PNGs (same file stems).')
flags.DEFINE_string('eval_images', None, 'Folder of images the probes are scored on.')
flags.DEFINE_string('eval_labels', None, 'Folder of their label PNGs.')
flags.DEFINE_string('input_path', None, 'Model Garden segmentation TFRecords to fit on.')
flags.DEFINE_string('eval_input_path', None, 'Model Garden segmentation TFRecords to score on.')
flags.DEFINE_boolean('synthetic', False, 'Use the built-in synthetic scenes.')
flags.DEFINE_integer('synthetic_train', 200, 'Synthetic scenes to fit on.')
flags.DEFINE_integer('synthetic_eval', 100, 'Synthetic scenes to score on.')
flags.DEFINE_integer('num_classes', None, 'Number of classes (not needed with --synthetic).')
flags.DEFINE_integer('ignore_label', 255, 'Label value of unlabelled pixels.')
flags.DEFINE_list('probe', ['linear', 'knn'], 'Probes: linear, knn.')
flags.DEFINE_list('level', ['4'], "Feature levels: '2'..'5', and 'p2'..'p6' for DeCon's FPN.")
flags.DEFINE_integer('image_size', 96, 'Images and labels are resized to this square.')
flags.DEFINE_integer('probe_stride', 4, 'The probes classify the image at 1/stride.')
flags.DEFINE_integer('knn_k', 10, 'Neighbours of the kNN probe.')
flags.DEFINE_integer('probe_steps', 500, 'Adam steps of the linear probe.')
flags.DEFINE_integer('max_train_images', 0, 'At most this many images to fit on (0: all).')
flags.DEFINE_integer('max_eval_images', 0, 'At most this many images to score on (0: all).')
flags.DEFINE_integer('seed', 0, 'Seed of the probes (and of a random-init encoder).')
flags.DEFINE_string('output_dir', None, "Where eval/<name>.json goes (default: the export's "
                    'model_dir).')
flags.DEFINE_string('name', None, 'Name of this evaluation (default: the dataset, probes, '
                    'levels and size, e.g. eval-linear+knn-4-96px).')


def probe_sets():
  folders = [FLAGS.train_images, FLAGS.train_labels, FLAGS.eval_images, FLAGS.eval_labels]
  chosen = [bool(any(folders)), bool(FLAGS.input_path), FLAGS.synthetic]
  if sum(chosen) != 1:
    raise ValueError('give one dataset: the four --train/eval_images/labels folders, '
                     '--input_path with --eval_input_path, or --synthetic')
  size = FLAGS.image_size
  train_limit, eval_limit = FLAGS.max_train_images or None, FLAGS.max_eval_images or None
  if FLAGS.synthetic:
    classes = labelled_sets.SYNTHETIC_NUM_CLASSES
    if FLAGS.num_classes not in (None, classes):
      raise ValueError(f'--synthetic has {classes} classes, not --num_classes='
                       f'{FLAGS.num_classes}')
    return (labelled_sets.synthetic('train', FLAGS.synthetic_train, size),
            labelled_sets.synthetic('eval', FLAGS.synthetic_eval, size), classes)
  if not FLAGS.num_classes:
    raise ValueError('--num_classes is required (except with --synthetic)')
  if FLAGS.input_path:
    if not FLAGS.eval_input_path:
      raise ValueError('--input_path needs --eval_input_path')
    return (labelled_sets.from_tfrecords(FLAGS.input_path, size, train_limit),
            labelled_sets.from_tfrecords(FLAGS.eval_input_path, size, eval_limit),
            FLAGS.num_classes)
  if not all(folders):
    raise ValueError('folders need all four of --train_images, --train_labels, --eval_images, '
                     '--eval_labels')
  return (labelled_sets.from_folders(FLAGS.train_images, FLAGS.train_labels, size, train_limit),
          labelled_sets.from_folders(FLAGS.eval_images, FLAGS.eval_labels, size, eval_limit),
          FLAGS.num_classes)


def check_numbers() -> None:
  """Ranges of the numeric flags, and the probe names, in one line each."""
  cli.check_minimums(FLAGS, (('synthetic_train', 1), ('synthetic_eval', 1), ('image_size', 8),
                             ('probe_stride', 1), ('knn_k', 1), ('probe_steps', 1),
                             ('max_train_images', 0), ('max_eval_images', 0),
                             ('ignore_label', 0), ('seed', 0), ('num_classes', 2)))
  unknown = sorted(set(FLAGS.probe) - set(PROBES)) or ([] if FLAGS.probe else ['(none)'])
  if unknown:
    raise ValueError(f'--probe {",".join(unknown)}: the probes are {", ".join(PROBES)}')
  if FLAGS.name is not None and (not FLAGS.name or '/' in FLAGS.name or FLAGS.name in '..'):
    raise ValueError(f'--name must be a file name (eval/<name>.json), got {FLAGS.name!r}')
  if not FLAGS.level:
    raise ValueError("--level is empty; give levels such as '3,4'")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.export:
    raise ValueError('--export is required: an export directory or random:<experiment>')
  check_numbers()
  if FLAGS.output_dir:  # before the encoder is loaded and the probes fitted
    cli.ensure_writable(os.path.join(FLAGS.output_dir, 'eval'), '--output_dir')
  encoder = frozen.load(FLAGS.export, FLAGS.seed)
  probes.check_settings(encoder, FLAGS.image_size, FLAGS.probe_stride, FLAGS.level)
  output_dir = FLAGS.output_dir or encoder.model_dir
  if not output_dir:
    raise ValueError('--output_dir is required with --export=random:...')
  if not FLAGS.output_dir:
    cli.ensure_writable(os.path.join(output_dir, 'eval'), f"--output_dir (default: the export's "
                        f'model_dir)')
  train, evaluation, num_classes = probe_sets()
  print(f'{encoder.name}: fitting on {len(train.images)} images of {train.name}, scoring on '
        f'{len(evaluation.images)} of {evaluation.name}', flush=True)
  results = probes.evaluate(encoder, train.images, train.labels, evaluation.images,
                            evaluation.labels, num_classes, FLAGS.level, FLAGS.probe,
                            FLAGS.ignore_label, FLAGS.probe_stride, FLAGS.knn_k, FLAGS.seed,
                            FLAGS.probe_steps)
  # Named by what it measures, so that another level or probe is another file.
  name = FLAGS.name or (f'{evaluation.name}-{"+".join(FLAGS.probe)}-'
                        f'{"+".join(FLAGS.level)}-{FLAGS.image_size}px')
  path = report.save(output_dir, name, results, {
      'export': FLAGS.export, 'encoder': encoder.name, 'train': train.name,
      'eval': evaluation.name, 'num_classes': num_classes, 'image_size': FLAGS.image_size,
      'probe_stride': FLAGS.probe_stride, 'seed': FLAGS.seed, 'knn_k': FLAGS.knn_k,
      'probe_steps': FLAGS.probe_steps, 'train_images': len(train.images),
      'eval_images': len(evaluation.images), 'ignore_label': FLAGS.ignore_label})
  print(report.table(results))
  print(f'wrote {path}')
  print(report.final_lines(results), flush=True)


def run() -> None:
  """The `tf-detcon-evaluate` command (setup.py's entry point) and `python launch/evaluate.py`."""
  cli.run(main)


if __name__ == '__main__':
  run()
