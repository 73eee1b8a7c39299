"""PyTorch's padding for a Model Garden ResNet: symmetric at every stride-2 layer.

PyTorch pads a k×k stride-2 convolution by (k-1)//2 on each side and its 3×3 max pool by 1; TF's
SAME pads (k-2)//2 before and the rest after on an even input, so the network sees its input
shifted by a pixel at each of the ResNet's five stride-2 layers. `symmetric` makes each of those
layers pad as PyTorch does (then convolve or pool without padding): the same weights then
compute the PyTorch network's function. Model Garden's tasks build their own ResNet, which pads
as TF does: this applies to our frozen uses of an export (its SavedModel, evaluate, visualize),
not to fine-tuning.
"""

import tensorflow as tf
import tf_keras


def _pad_then(layer: tf_keras.layers.Layer, pad: int, value: float) -> None:
  call = layer.call
  layer.padding = 'valid'

  def padded_call(inputs, *args, **kwargs):
    paddings = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
    return call(tf.pad(inputs, paddings, constant_values=value), *args, **kwargs)

  layer.call = padded_call


def symmetric(model: tf_keras.layers.Layer) -> int:
  """Makes every stride-2 convolution (kernel > 1) and max pool of `model` pad as PyTorch does;
  returns how many layers changed."""
  changed = 0
  for layer in model.submodules:
    if isinstance(layer, tf_keras.layers.Conv2D) and tuple(layer.strides) == (2, 2) and (
        layer.kernel_size[0] > 1) and layer.padding == 'same':
      _pad_then(layer, (layer.kernel_size[0] - 1) // 2, 0.0)
      changed += 1
    elif isinstance(layer, tf_keras.layers.MaxPool2D) and tuple(layer.strides) == (2, 2) and (
        layer.padding == 'same'):
      _pad_then(layer, (layer.pool_size[0] - 1) // 2, float('-inf'))
      changed += 1
  return changed
