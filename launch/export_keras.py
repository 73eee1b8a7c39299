r"""Writes a KerasHub preset of an export or an import, for Keras 3 on any backend.

  python launch/export_keras.py --export=runs/detcon_b/export --output_dir=presets/detcon_b
  python launch/export_keras.py --export=weights/mocov2_r50 --output_dir=presets/mocov2_r50 \
      --check_backends=tensorflow,jax

Then, in Keras 3 (any backend):
  import keras_hub, tf_detcon.keras3  # the import registers our backbone class
  backbone = keras_hub.models.Backbone.from_preset('presets/detcon_b')

A bottleneck ResNet imported with PyTorch's padding becomes KerasHub's own ResNetBackbone; other
exports become our DenseResNetBackbone (Model Garden's ResNet: TF's padding, the export's
activation and BN epsilon), with DeCon's FPN decoder when there is one. The preset is checked
on each of --check_backends, each in a process of its own: its features must equal the
export's, level by level, before --output_dir is written (docs/reference.md, "Keras 3 and
KerasHub").
"""

from absl import flags

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position

console.start_launcher()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
from tf_detcon.support import cli
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('export', None, 'An export of ours (<model_dir>/export) or of '
                    'launch/import_weights.py.')
flags.DEFINE_string('output_dir', None, 'The preset folder to write; new or empty.')
flags.DEFINE_list('check_backends', ['tensorflow'], 'Keras backends on which the preset is '
                  'loaded and its features compared with the export\'s before it is written '
                  '(tensorflow, jax, torch), each in a process of its own.')


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  for name in ('export', 'output_dir'):
    if not FLAGS[name].value:
      raise ValueError(f'--{name} is required')
  from tf_detcon.keras3 import preset  # pylint: disable=g-import-not-at-top
  preset.check_backends(FLAGS.check_backends)
  chosen, errors = preset.write(FLAGS.export, FLAGS.output_dir, FLAGS.check_backends)
  print(f'wrote {FLAGS.output_dir}: {chosen.class_name} ({chosen.reason})')
  for backend, levels in errors.items():
    worst = max(levels.values())
    print(f'  {backend}: features equal the export\'s at {len(levels)} levels (largest relative '
          f'difference {worst:.1e})')


def run() -> None:
  """The `tf-detcon-export-keras` command (setup.py's entry point) and `python launch/export_keras.py`."""
  cli.run(main)


if __name__ == '__main__':
  run()
