"""The exported SavedModel as users load it: a Reusable SavedModel that `hub.KerasLayer` fine-tunes
in a tf_keras model, with its serving signatures beside it (training/export.py)."""

import json
import os
import subprocess
import sys

import numpy as np

from tf_detcon.primitives import color

# Run in a fresh process, as a user would: load, compare, fine-tune, misuse.
USER_SCRIPT = r'''
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

path, images_path, out_path = sys.argv[1:4]
images = np.load(images_path)
layer = hub.KerasLayer(path, trainable=True, output_key='level_5')
features = layer(tf.constant(images), training=False).numpy()
inputs = tf_keras.Input([64, 64, 3])
pooled = tf_keras.layers.GlobalAveragePooling2D()(layer(inputs))
model = tf_keras.Model(inputs, tf_keras.layers.Dense(2)(pooled))
model.compile(optimizer=tf_keras.optimizers.SGD(0.1),
              loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
before = {v.name: v.numpy() for v in layer.weights}
model.fit(images, np.array([0, 1, 0, 1]), batch_size=4, epochs=3, verbose=0)
changed = {name: bool(np.any(v.numpy() != before[v.name]))
           for name, v in ((v.name, v) for v in layer.weights)}
errors = {}
for name, bad in (('range', images * 255.0), ('channels', images[..., :1])):
  try:
    layer(tf.constant(bad))
    errors[name] = ''
  except tf.errors.InvalidArgumentError as e:
    errors[name] = e.message
np.save(out_path + '.npy', features)
with open(out_path, 'w') as f:
  json.dump({'trainable': [v.name for v in layer.trainable_weights],
             'non_trainable': [v.name for v in layer.non_trainable_weights],
             'changed': changed, 'errors': errors}, f)
'''


def test_hub_keras_layer_fine_tunes_the_export_and_refuses_misread_images(tiny_run, tmp_path):
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(4, 64, 64, 3)).astype(np.float32)
  np.save(tmp_path / 'images.npy', images)
  out = str(tmp_path / 'result.json')
  result = subprocess.run(
      [sys.executable, '-c', USER_SCRIPT,
       os.path.join(tiny_run.model_dir, 'export', 'saved_model'), str(tmp_path / 'images.npy'),
       out], capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='1'))
  assert result.returncode == 0, result.stderr[-3000:]
  # No "Importing a function ... with ops with unsaved custom gradients" warnings (there were
  # ~150, from the pretraining model's synchronised BN, while gradients worked).
  assert 'unsaved custom gradients' not in result.stderr, result.stderr[-2000:]
  with open(out) as f:
    report = json.load(f)

  live = tiny_run.model.encoder(color.normalize(images), training=False)['5'].numpy()
  np.testing.assert_allclose(np.load(out + '.npy'), live, rtol=1e-4, atol=1e-4)

  encoder_weights = tiny_run.model.encoder.weights
  assert len(report['trainable']) == len(tiny_run.model.encoder.trainable_weights)
  assert len(report['trainable']) + len(report['non_trainable']) == len(encoder_weights)
  changed = report['changed']
  assert all(changed[name] for name in report['trainable']), 'a trainable weight did not move'
  moving = [n for n in report['non_trainable'] if 'moving_mean' in n or 'moving_variance' in n]
  assert moving and all(changed[n] for n in moving), 'BN statistics did not update'

  # Keras and TF wrap the assertion in their own lines; its sentence names the problem.
  assert ('the encoder takes float images in [0, 1]; these look like [0, 255]: divide by 255'
          in report['errors']['range'])
  assert 'the encoder takes RGB images [N, H, W, 3]' in report['errors']['channels']
