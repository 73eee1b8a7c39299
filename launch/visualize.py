r"""Pictures of the data, the views and what an encoder learned, as PNG files.

  python launch/visualize.py --output_dir=pictures
  python launch/visualize.py --output_dir=pictures --experiment=detco_tiny
  python launch/visualize.py --output_dir=pictures --export=runs/detcon_b_tiny/export

Writes, on the embedded sample data unless --input_path names pretraining shards:
  views.png       per example: the image, its id map, the two augmented views with their aligned
                  masks, and DetCo's nine patches when the experiment has local views;
  similarity.png  for query points (yellow), the cosine similarity of every position's feature
                  to the query's, over synthetic scenes (or --image_dir images);
  retrieval.png   a query mask (left) and its nearest masks in other images, by the cosine
                  similarity of mask-pooled features (ground-truth masks of synthetic scenes).
The encoder is --export, or a random-init encoder of --experiment.
"""

import json
import os
from typing import List

from absl import flags
import numpy as np

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position

console.start_launcher()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf
from official.core import exp_factory
from tf_detcon.support import cli
from tf_detcon import registry_imports  # pylint: disable=unused-import
from tf_detcon.configs import pretrain
from tf_detcon.data import datasets
from tf_detcon.data.offline import build_embedded
from tf_detcon.data.offline import precompute
from tf_detcon.data.offline import scenes
from tf_detcon.data.offline import sources
from tf_detcon.evaluation import labelled_sets
from tf_detcon.evaluation import frozen
from tf_detcon.evaluation import pictures
from tf_detcon.evaluation import report
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('output_dir', None, 'Where the PNGs go.')
flags.DEFINE_string('export', None, 'An export directory to take the encoder from.')
flags.DEFINE_string('experiment', 'detcon_b_tiny', 'The experiment whose views are drawn (and '
                    'whose random-init encoder is used without --export).')
flags.DEFINE_string('input_path', None, 'Pretraining shards (default: the embedded samples).')
flags.DEFINE_string('image_dir', None, 'Images for the similarity maps (default: synthetic).')
flags.DEFINE_integer('num_examples', 4, 'Rows of each picture.')
flags.DEFINE_string('level', '3', 'Feature level of the similarity maps and retrieval.')
flags.DEFINE_integer('image_size', 128, 'Size of the images the encoder sees.')
flags.DEFINE_integer('seed', 0, 'Seed of the views and of a random-init encoder.')

QUERY_POINTS = ((0.5, 0.5), (0.3, 0.7), (0.75, 0.25))


def save(name: str, image: np.ndarray) -> str:
  path = os.path.join(FLAGS.output_dir, name)
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(pictures.encode_png(image))
  print(f'wrote {path} ({image.shape[1]}x{image.shape[0]})', flush=True)
  return path


def image_files(folder: str) -> List[str]:
  """The first --num_examples image files of `folder` (subfolders and other files ignored)."""
  if not tf.io.gfile.isdir(folder):
    raise ValueError(f'--image_dir {folder!r} is not a folder')
  names = sorted(n for n in tf.io.gfile.listdir(folder)
                 if os.path.splitext(n)[1].lower() in sources.IMAGE_EXTENSIONS
                 and not tf.io.gfile.isdir(os.path.join(folder, n)))
  if not names:
    raise ValueError(f'no images ({", ".join(sorted(sources.IMAGE_EXTENSIONS))}) in --image_dir '
                     f'{folder!r}')
  return [os.path.join(folder, n) for n in names[:FLAGS.num_examples]]


def read_image(path: str, size: int) -> np.ndarray:
  """An image file as uint8 RGB at size x size, or one line naming the file."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    raw = sources.RawExample(key=path, image_bytes=f.read())
  try:  # as make_masks reads images: any format, deep images rescaled
    image, _, _ = precompute.decode_image(raw)
  except precompute.BadExampleError as e:
    raise ValueError(f'--image_dir: {e}') from e
  resized = tf.image.resize(image, [size, size])
  return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.output_dir:
    raise ValueError('--output_dir is required')
  try:
    params = exp_factory.get_exp_config(FLAGS.experiment)
  except LookupError as e:
    raise ValueError(f'unknown experiment {FLAGS.experiment!r}') from e
  if not isinstance(params, pretrain.PretrainExperiment):
    raise ValueError(f'{FLAGS.experiment!r} is not a pretraining experiment')
  cli.check_minimums(FLAGS, (('num_examples', 1), ('image_size', 32), ('seed', 0)))
  image_paths = image_files(FLAGS.image_dir) if FLAGS.image_dir else []
  cli.ensure_writable(FLAGS.output_dir, '--output_dir')
  # The pictures are replaced only by a rerun of the same settings (visualize.json says which).
  settings = {name: FLAGS[name].value for name in (
      'export', 'experiment', 'input_path', 'image_dir', 'num_examples', 'level', 'image_size',
      'seed')}
  record = os.path.join(FLAGS.output_dir, 'visualize.json')
  report.check_same_settings(record, settings, 'use another --output_dir')
  data_cfg = params.task.train_data
  if FLAGS.input_path:
    data_cfg.input_path = FLAGS.input_path
  else:
    build_embedded.ensure()
  files = datasets.resolve_files(data_cfg.input_path)
  encoder = (frozen.load(FLAGS.export) if FLAGS.export else
             frozen.from_experiment(FLAGS.experiment, FLAGS.seed))
  if FLAGS.level not in encoder.levels:
    raise ValueError(f'--level {FLAGS.level}: {encoder.name} has levels '
                     f'{",".join(encoder.levels)}')
  size = FLAGS.image_size
  encoder.check_image_size(size)
  # Every setting checked, before any picture: an interrupted run is rerun the same way.
  with tf.io.gfile.GFile(record, 'w') as f:
    json.dump(settings, f, indent=2, sort_keys=True)

  records = [r.numpy() for r in tf.data.TFRecordDataset(files).take(FLAGS.num_examples)]
  local_views = params.task.method.get().view_recipe()
  save('views.png', pictures.view_panels(records, data_cfg, seed=FLAGS.seed,
                                         local_views=local_views))
  if image_paths:
    images = np.stack([read_image(path, size) for path in image_paths])
  else:
    images = labelled_sets.synthetic('eval', FLAGS.num_examples, size).images
  features = pictures.level_features(encoder, images, FLAGS.level)
  save('similarity.png', pictures.similarity_panel(images, features, QUERY_POINTS))

  scene_list = [s for _, s in scenes.scenes('eval', 12, size)]
  scene_images = np.stack([s.image for s in scene_list])
  scene_features = pictures.level_features(encoder, scene_images, FLAGS.level)
  save('retrieval.png', pictures.retrieval_panel(
      scene_images, np.stack([s.instances for s in scene_list]), scene_features,
      queries=min(FLAGS.num_examples, 4)))


def run() -> None:
  """The `tf-detcon-visualize` command (setup.py's entry point) and `python launch/visualize.py`."""
  cli.run(main)


if __name__ == '__main__':
  run()
