r"""How far Model Garden's own settings move each pretrained encoder's function, and why.

  .venv/bin/python benchmarks/network_drift.py --seed=0

Version 1 of the transfer table fine-tuned every export under Model Garden's experiments' own
activation and batch-norm epsilon (RetinaNet ReLU and 1e-3, the FPN segmenter swish and 1e-3)
instead of the pretrained ReLU and 1e-5. For each export of the mini table this prints, on 16
held-out scenes, the relative change of its res2–res5 features under those settings, and the
batch-norm statistics that decide it: a channel whose moving variance v is small against ε
moves by about (1 − sqrt(v / (v + ε))), and γ scales what it passes on.
"""

import argparse
import dataclasses
import json
import os

from tf_detcon.support import console  # pylint: disable=g-import-not-at-top,wrong-import-position
console.quiet_native_logs()  # before TensorFlow is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf
import tf_keras
import common
import mini_table
from tf_detcon.primitives import color
from tf_detcon.evaluation import frozen
from tf_detcon.evaluation import labelled_sets
from tf_detcon.exports import manifest
# pylint: enable=g-import-not-at-top,wrong-import-position

SETTINGS = {'retinanet': ('relu', 1e-3), 'segmenter': ('swish', 1e-3)}


def backbone_with(metadata: manifest.Manifest, activation: str,
                  epsilon: float) -> tf_keras.Model:
  changed = manifest.Manifest.from_dict(json.loads(json.dumps(metadata.as_dict())))
  changed.encoder['norm_activation'].update(activation=activation, norm_epsilon=epsilon)
  return frozen.backbone_from_metadata(changed)


def drift(export: str, images: tf.Tensor) -> dict:
  """Relative feature change per setting, and the BN statistics of the export."""
  metadata = manifest.read(export)
  checkpoint = tf.train.latest_checkpoint(os.path.join(export, 'checkpoint'))
  own = frozen.backbone_from_metadata(metadata)
  tf.train.Checkpoint(backbone=own).read(checkpoint).expect_partial()
  inputs = color.normalize(images)
  reference = own(inputs, training=False)
  out = {}
  for name, (activation, epsilon) in SETTINGS.items():
    other = backbone_with(metadata, activation, epsilon)
    tf.train.Checkpoint(backbone=other).read(checkpoint).expect_partial()
    features = other(inputs, training=False)
    out[name] = max(float(tf.norm(features[k] - reference[k]) / tf.norm(reference[k]))
                    for k in reference)
  variances = np.concatenate([w.numpy().ravel() for w in own.weights
                              if 'moving_variance' in w.name])
  gammas = np.concatenate([w.numpy().ravel() for w in own.weights if 'gamma' in w.name])
  out['var_p5'], out['var_p50'] = np.percentile(variances, [5, 50])
  out['var_below_1e-3'] = float(np.mean(variances < 1e-3))
  out['gamma_abs_mean'] = float(np.mean(np.abs(gammas)))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--work_dir', default=common.WORK_DIR)
  parser.add_argument('--pretrain_steps', type=int, default=2000)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  setup = dataclasses.replace(mini_table.Setup(), steps=args.pretrain_steps)
  runs = os.path.join(args.work_dir, f'steps{setup.steps}-scenes{setup.scenes}',
                      f'runs-v{mini_table.RESULTS_VERSION}')
  images = tf.constant(labelled_sets.synthetic('eval', 16, 128).images, tf.float32) / 255.0
  print(f'{"export":<14} {"RetinaNet":>10} {"segmenter":>10} {"var p5":>9} {"var p50":>9} '
        f'{"var<1e-3":>9} {"|gamma|":>8}   relative change of res2-res5 (largest level)')
  for name in mini_table.METHODS:
    export = os.path.join(runs, f'{name}-seed{args.seed}', 'export')
    if not manifest.exists(export):
      continue
    d = drift(export, images)
    print(f'{name:<14} {d["retinanet"]:10.4f} {d["segmenter"]:10.4f} {d["var_p5"]:9.2e} '
          f'{d["var_p50"]:9.2e} {d["var_below_1e-3"]:9.3f} {d["gamma_abs_mean"]:8.3f}')


if __name__ == '__main__':
  main()
