r"""Precomputes DetCon masks into TFRecord shards (image + PNG id maps) with a manifest.

Examples:
  # An image folder, FH masks with ImageNet settings, 4 local processes:
  python launch/make_masks.py --image_dir=/data/images --output_dir=/data/detcon \
      --num_shards=64 --num_processes=4
  # ImageNet from TFDS on 16 machines (run once per machine with its --worker_index):
  python launch/make_masks.py --tfds_name=imagenet2012 --tfds_split=train \
      --data_dir=gs://bucket/tfds --output_dir=gs://bucket/detcon/imagenet \
      --num_shards=1024 --num_workers=16 --worker_index=$i
  # COCO with FH at three scales, or with ground-truth instance masks:
  python launch/make_masks.py --preset=coco --tfds_name=coco/2017 --tfds_split=train ...
  python launch/make_masks.py --mask_kind=gt --coco_annotations=instances_train2017.json \
      --coco_image_dir=train2017 --output_dir=...
  # On Apache Beam (pip install -e .[beam]): the DirectRunner with 4 processes, or Dataflow:
  python launch/make_masks.py --runner=beam --image_dir=... --output_dir=... --num_shards=64 \
      --beam_pipeline_options=direct_num_workers=4,direct_running_mode=multi_processing
  python launch/make_masks.py --runner=beam --tfds_name=imagenet2012 ... --num_shards=1024 \
      --beam_pipeline_options=runner=DataflowRunner,project=P,region=R,temp_location=gs://...

Rerunning skips finished shards; an interrupted run resumes. A rerun with other settings into a
folder that holds shards is refused (the request is kept in job.json), as is a second process for
the same --worker_index. The manifest (manifest.json) is written once every shard exists, by
whichever worker finishes last.
"""

import json
import os

from absl import flags
from absl import logging

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position

console.start_launcher()  # before TensorFlow is imported
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position
# pylint: disable=g-import-not-at-top,wrong-import-position
from tf_detcon.support import cli
from tf_detcon.support import locks
from tf_detcon.data import records
from tf_detcon.data.offline import beam_runner
from tf_detcon.data.offline import mask_report
from tf_detcon.data.offline import masks
from tf_detcon.data.offline import precompute
from tf_detcon.data.offline import shards
from tf_detcon.data.offline import sources
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('image_dir', None, 'A folder of images (searched recursively).')
flags.DEFINE_string('mask_dir', None, "With --mask_kind=file: id-map PNGs named like the images.")
flags.DEFINE_string('tfds_name', None, 'A TFDS dataset prepared under --data_dir.')
flags.DEFINE_string('tfds_split', 'train', 'The TFDS split.')
flags.DEFINE_string('data_dir', None, 'The TFDS data directory.')
flags.DEFINE_string('coco_annotations', None, 'COCO instances JSON, for --mask_kind=gt.')
flags.DEFINE_string('coco_image_dir', None, 'The COCO image folder, for --mask_kind=gt.')
flags.DEFINE_string('output_dir', None, 'Where shards and manifest.json go.')
flags.DEFINE_string('prefix', 'pretrain', 'Shard file name prefix.')
flags.DEFINE_integer('num_shards', 1, 'Number of output shards.')
flags.DEFINE_integer('worker_index', 0, 'This worker, for a distributed run.')
flags.DEFINE_integer('num_workers', 1, 'Number of workers of a distributed run.')
flags.DEFINE_integer('num_processes', 1, 'Local processes (shards written in parallel).')
flags.DEFINE_enum('runner', 'local', ['local', 'beam'],
                  'local: this machine (--num_processes, --num_workers); beam: an Apache Beam '
                  'pipeline (--beam_pipeline_options).')
flags.DEFINE_string('beam_pipeline_options', '',
                    "With --runner=beam: Beam options as 'name=value,...', e.g. "
                    "'runner=DataflowRunner,project=P'. Empty: the DirectRunner.")
flags.DEFINE_enum('mask_kind', 'fh', list(precompute.MASK_KINDS), 'Which id maps to store.')
flags.DEFINE_enum('preset', 'imagenet', ['imagenet', 'coco'],
                  'FH settings: imagenet (scale 1000) or coco (scales 500, 1000, 1500).')
flags.DEFINE_multi_string('fh_setting', None,
                          "Explicit FH 'scale:sigma:min_size' (repeatable); overrides --preset.")
flags.DEFINE_float('fh_downscale', masks.FAST_FH_DOWNSCALE,
                   'Segment a copy resized by this factor, settings scaled to match, ids '
                   'upsampled: 4.6x faster at 0.5, at the same ABO (benchmarks/README.md, "FH '
                   "masks at ImageNet scale\"); 1 is the paper's full resolution. Per image, "
                   'never below --fh_min_working_side.')
flags.DEFINE_integer('fh_min_working_side', masks.FH_MIN_WORKING_SIDE,
                     'With --fh_downscale < 1: images whose short side is at most this are '
                     'segmented at full resolution, larger ones never below it (measured: '
                     'benchmarks/README.md, "FH working resolution by image size").')
flags.DEFINE_integer('max_segments', masks.MAX_UINT8_SEGMENTS,
                     'Merge the smallest segments until this many remain; 0 keeps all (uint16).')
flags.DEFINE_enum('on_bad_example', 'error', ['error', 'skip'],
                  'A corrupt/too small image or missing/mismatched mask: stop, or skip and count.')
flags.DEFINE_integer('min_image_side', 32, 'Images with a smaller side are bad examples.')
flags.DEFINE_integer('min_segments', 1, 'Images with fewer segments are bad examples.')
flags.DEFINE_boolean('report', False, 'After writing, report on the stored masks (segments per '
                     'image, merged segments and, with ground truth, the ABO of DetCon Fig. 7) '
                     'into the manifest and print it.')
flags.DEFINE_boolean('report_only', False, 'Only report on the shards in --output_dir.')
flags.DEFINE_string('report_instances', None, 'Ground truth for the ABO: a folder of instance-id '
                    'PNGs named like the example keys (or use --coco_annotations).')


# Flags that only one input, mask kind or mode reads: given elsewhere they would be ignored.
APPLIES_TO = {
    'mask_dir': ('--mask_kind=file', lambda: FLAGS.mask_kind == 'file'),
    'coco_image_dir': ('--coco_annotations', lambda: bool(FLAGS.coco_annotations)),
    'tfds_split': ('--tfds_name', lambda: bool(FLAGS.tfds_name)),
    'data_dir': ('--tfds_name', lambda: bool(FLAGS.tfds_name)),
    'preset': ('--mask_kind=fh', lambda: FLAGS.mask_kind == 'fh'),
    'fh_setting': ('--mask_kind=fh', lambda: FLAGS.mask_kind == 'fh'),
    'fh_downscale': ('--mask_kind=fh', lambda: FLAGS.mask_kind == 'fh'),
    'fh_min_working_side': ('--mask_kind=fh', lambda: FLAGS.mask_kind == 'fh'),
    'max_segments': ('--mask_kind=fh', lambda: FLAGS.mask_kind == 'fh'),
    'report_instances': ('--report or --report_only',
                         lambda: FLAGS.report or FLAGS.report_only),
    'beam_pipeline_options': ('--runner=beam', lambda: FLAGS.runner == 'beam'),
}


def check_folder(flag: str) -> None:
  path = FLAGS[flag].value
  if path and not tf.io.gfile.isdir(path):
    raise ValueError(f'--{flag} {path!r} ' + ('is not a folder' if tf.io.gfile.exists(path)
                                               else 'does not exist'))


def make_source() -> sources.Source:
  chosen = [n for n in ('image_dir', 'tfds_name', 'coco_annotations') if FLAGS[n].value]
  if len(chosen) != 1:
    raise ValueError('give exactly one input: --image_dir, --tfds_name or --coco_annotations')
  for flag in ('image_dir', 'mask_dir', 'coco_image_dir'):
    check_folder(flag)
  if FLAGS.image_dir:
    try:
      return sources.ImageFolderSource(FLAGS.image_dir, mask_dir=FLAGS.mask_dir)
    except ValueError as e:
      raise ValueError(f'--image_dir: {e}') from e
  if FLAGS.tfds_name:
    return sources.TfdsSource(FLAGS.tfds_name, FLAGS.tfds_split, FLAGS.data_dir)
  if not FLAGS.coco_image_dir:
    raise ValueError('--coco_annotations needs --coco_image_dir')
  try:
    return sources.CocoSource(FLAGS.coco_annotations, FLAGS.coco_image_dir)
  except (ValueError, KeyError, TypeError) as e:  # pycocotools reads any JSON
    raise ValueError(f'--coco_annotations {FLAGS.coco_annotations!r}: not COCO instance '
                     f'annotations ({cli.one_line(e)})') from e


def mask_quality_report(manifest) -> None:
  """Reports on the stored masks, writes it into the manifest and prints it."""
  instances = None
  if FLAGS.report_instances:
    if not os.path.isdir(FLAGS.report_instances):
      raise ValueError(f'--report_instances {FLAGS.report_instances!r} is not a folder')
    instances = mask_report.instance_pngs(FLAGS.report_instances)
  elif FLAGS.coco_annotations:
    instances = mask_report.coco_instances(FLAGS.coco_annotations)
  paths = records.shard_paths_from_manifest(FLAGS.output_dir)
  report = mask_report.report(paths, instances,
                              manifest.get('totals', {}).get('merged_segments', 0))
  shards.update_manifest(FLAGS.output_dir, report=report)
  print('mask report:', json.dumps(report, indent=2, sort_keys=True))


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.output_dir:
    raise ValueError('--output_dir is required')
  if FLAGS.report_only:
    if not os.path.exists(os.path.join(FLAGS.output_dir, records.MANIFEST_NAME)):
      raise ValueError(f'--report_only: no {records.MANIFEST_NAME} in {FLAGS.output_dir!r}')
    mask_quality_report(records.read_manifest(FLAGS.output_dir))
    return
  for name, (needs, applies) in APPLIES_TO.items():
    if FLAGS[name].present and not applies():
      raise ValueError(f'--{name} applies only with {needs}')
  if not FLAGS.prefix or '/' in FLAGS.prefix:
    raise ValueError(f'--prefix must be a file name start without "/", got {FLAGS.prefix!r}')
  cli.check_minimums(FLAGS, (('num_shards', 1), ('num_workers', 1), ('num_processes', 1),
                             ('min_image_side', 1), ('min_segments', 1), ('max_segments', 0)))
  if FLAGS.max_segments and FLAGS.max_segments < 2:
    raise ValueError(f'--max_segments must be 0 (keep all) or >= 2, got {FLAGS.max_segments}')
  if not 0 < FLAGS.fh_downscale <= 1:
    raise ValueError(f'--fh_downscale must be in (0, 1], got {FLAGS.fh_downscale}')
  if FLAGS.fh_min_working_side < 1:
    raise ValueError(f'--fh_min_working_side must be >= 1, got {FLAGS.fh_min_working_side}')
  if FLAGS.mask_kind == 'file' and not FLAGS.mask_dir:
    raise ValueError('--mask_kind=file needs --mask_dir')
  if FLAGS.mask_kind == 'gt' and not FLAGS.coco_annotations:
    raise ValueError('--mask_kind=gt needs --coco_annotations and --coco_image_dir')
  if FLAGS.fh_setting:
    settings = precompute.sequence_of_settings(FLAGS.fh_setting)
  else:
    settings = masks.COCO_FH_SETTINGS if FLAGS.preset == 'coco' else masks.IMAGENET_FH_SETTINGS
  if not 0 <= FLAGS.worker_index < FLAGS.num_workers:
    raise ValueError('need 0 <= --worker_index < --num_workers')
  # The FH flags fill the one-of's FH block; for another kind they were refused above if set.
  fh = precompute.FHMasks(settings=settings, max_segments=FLAGS.max_segments or None,
                          downscale=FLAGS.fh_downscale, min_working_side=FLAGS.fh_min_working_side)
  spec = (precompute.MaskSpec(kind='fh', fh=fh) if FLAGS.mask_kind == 'fh' else
          precompute.MaskSpec(kind=FLAGS.mask_kind))
  job = precompute.Job(
      source=make_source(),
      out_dir=FLAGS.output_dir,
      num_shards=FLAGS.num_shards,
      spec=spec,
      policy=precompute.Policy(on_bad_example=FLAGS.on_bad_example,
                               min_image_side=FLAGS.min_image_side,
                               min_segments=FLAGS.min_segments),
      prefix=FLAGS.prefix,
      worker_index=FLAGS.worker_index,
      num_workers=FLAGS.num_workers,
      num_processes=FLAGS.num_processes)
  cli.ensure_writable(FLAGS.output_dir, '--output_dir')
  # Workers of one distributed run share the folder; two processes for one worker do not.
  with locks.DirectoryLock(FLAGS.output_dir, '--output_dir',
                           f'.lock-worker-{FLAGS.worker_index}', command='make_masks'):
    if FLAGS.runner == 'beam':
      manifest = beam_runner.run(job, FLAGS.beam_pipeline_options)
    else:
      manifest = job.run()
  if manifest is not None:
    logging.info('manifest: %s', manifest['totals'])
    totals = manifest['totals']
    turned = totals.get('exif_rotated', 0)
    print(f"wrote {totals.get('examples', 0)} examples in {FLAGS.num_shards} shards to "
          f"{FLAGS.output_dir}" + (f' ({turned} turned upright by their EXIF orientation)'
                                   if turned else ''))
    if FLAGS.report:
      mask_quality_report(manifest)


def run() -> None:
  """The `tf-detcon-make-masks` command (setup.py's entry point) and `python launch/make_masks.py`."""
  cli.run(main)


if __name__ == '__main__':
  run()
