"""Model Garden's ResNet, and DeCon's FPN decoder, as a Keras 3 / KerasHub backbone.

KerasHub's `ResNetBackbone` pads every stride-2 layer as PyTorch does (symmetrically) and fixes
ReLU and BN ε = 1e-5, so it holds a PyTorch-trained ResNet-50 exactly but not the networks that
Model Garden builds: TF's SAME padding puts the extra row and column after the image, its
residual blocks project the shortcut of every first block (KerasHub's basic blocks do not at
res2), and our exports may carry another activation or ε (docs/reference.md, "Keras 3 and
KerasHub"). `DenseResNetBackbone` computes Model Garden's function (its `ResNet` with stem
'v0', and its `FPN`), layer for layer, in Keras 3 on any backend.

This module imports only Keras and KerasHub, so that `import tf_detcon.keras3` (which registers
these classes for `from_preset`) works on the JAX or PyTorch backend without TensorFlow.
"""

from typing import Any, Dict, Optional, Sequence

import keras
from keras import layers
from keras import ops
import keras_hub

PACKAGE = 'tf_detcon'
BLOCK_TYPES = ('basic', 'bottleneck')
PADDINGS = ('same', 'symmetric')
FUSION_TYPES = ('sum', 'concat')
# Bottleneck blocks widen their last convolution (Model Garden's BottleneckBlock).
BOTTLENECK_EXPANSION = 4


def _check_one_of(name: str, value: Any, allowed: Sequence[Any]) -> None:
  if value not in allowed:
    raise ValueError(f'{name}={value!r}: expected one of {", ".join(map(repr, allowed))}')


class _Builder:
  """Layers named for the weight map, in channels-last float: a convolution padded as the
  network was trained (`padding`), batch norm with its ε, the activation."""

  def __init__(self, padding: str, activation: str, epsilon: float, dtype: Any):
    self.padding = padding
    self.activation = activation
    self.epsilon = epsilon
    self.dtype = dtype

  def conv(self, x, filters: int, kernel: int, stride: int, name: str, bias: bool = False,
           separable: bool = False):
    padding = 'same'
    if self.padding == 'symmetric' and stride > 1 and kernel > 1:
      x = layers.ZeroPadding2D((kernel - 1) // 2, dtype=self.dtype, name=f'{name}_pad')(x)
      padding = 'valid'
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    return conv(filters, kernel, strides=stride, padding=padding, use_bias=bias,
                dtype=self.dtype, name=name)(x)

  def norm(self, x, name: str):
    return layers.BatchNormalization(epsilon=self.epsilon, dtype=self.dtype, name=name)(x)

  def act(self, x, name: str):
    return layers.Activation(self.activation, dtype=self.dtype, name=name)(x)

  def max_pool(self, x, name: str):
    if self.padding == 'symmetric':
      x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=float('-inf'))
      return layers.MaxPooling2D(3, strides=2, padding='valid', dtype=self.dtype, name=name)(x)
    return layers.MaxPooling2D(3, strides=2, padding='same', dtype=self.dtype, name=name)(x)


def _block(build: _Builder, x, block_type: str, filters: int, stride: int, project: bool,
           name: str):
  """Model Garden's ResidualBlock (two 3×3) or BottleneckBlock (1×1, 3×3 with the stride,
  1×1 widened), ResNet v1.5; the shortcut is a strided 1×1 convolution and BN when `project`."""
  out_filters = filters * (BOTTLENECK_EXPANSION if block_type == 'bottleneck' else 1)
  shortcut = x
  if project:
    shortcut = build.conv(x, out_filters, 1, stride, f'{name}_shortcut_conv')
    shortcut = build.norm(shortcut, f'{name}_shortcut_bn')
  if block_type == 'basic':
    convs = [(filters, 3, stride), (filters, 3, 1)]
  else:
    convs = [(filters, 1, 1), (filters, 3, stride), (out_filters, 1, 1)]
  for index, (width, kernel, conv_stride) in enumerate(convs, 1):
    x = build.conv(x, width, kernel, conv_stride, f'{name}_conv{index}')
    x = build.norm(x, f'{name}_bn{index}')
    if index < len(convs):
      x = build.act(x, f'{name}_act{index}')
  x = layers.Add(dtype=build.dtype, name=f'{name}_add')([x, shortcut])
  return build.act(x, f'{name}_out')


def _fpn(build: _Builder, pyramid: Dict[int, Any], min_level: int, max_level: int,
         num_filters: int, fusion_type: str, use_separable_conv: bool) -> Dict[str, Any]:
  """Model Garden's FPN (Lin et al. 2017, §3): 1×1 laterals, a top-down path of 2× nearest
  upsampling fused by sum or concatenation, 3×3 output convolutions, stride-2 coarser levels
  above the backbone's top (an activation before each after the first), then BN per level."""
  top = min(max(pyramid), max_level)
  conv = dict(separable=use_separable_conv, bias=True)
  lateral = {level: build.conv(pyramid[level], num_filters, 1, 1, f'fpn_lateral_{level}', **conv)
             for level in range(min_level, top + 1)}
  feats = {top: lateral[top]}
  for level in range(top - 1, min_level - 1, -1):
    up = layers.UpSampling2D(2, interpolation='nearest', dtype=build.dtype,
                             name=f'fpn_up_{level}')(feats[level + 1])
    fuse = layers.Add if fusion_type == 'sum' else layers.Concatenate
    feats[level] = fuse(dtype=build.dtype, name=f'fpn_fuse_{level}')([up, lateral[level]])
  for level in range(min_level, top + 1):
    feats[level] = build.conv(feats[level], num_filters, 3, 1, f'fpn_post_hoc_{level}', **conv)
  for level in range(top + 1, max_level + 1):
    x = feats[level - 1]
    if level > top + 1:
      x = build.act(x, f'fpn_coarser_act_{level}')
    feats[level] = build.conv(x, num_filters, 3, 2, f'fpn_coarser_{level}', **conv)
  return {f'P{level}': build.norm(feats[level], f'fpn_norm_{level}')
          for level in range(min_level, max_level + 1)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DenseResNetBackbone(keras_hub.models.FeaturePyramidBackbone):
  """Model Garden's ResNet (stem 'v0': a 7×7 stride-2 convolution, BN, activation, a 3×3
  stride-2 max pool; then residual or bottleneck block groups with strides 1, 2, 2, 2), with
  DeCon's FPN decoder when `fpn` is given.

  Input: ImageNet-normalised float images [N, H, W, 3] (the preset's image converter makes
  them from [0, 255] pixels). Output: the last level (res5), as KerasHub's ResNet gives it, or
  with `fpn` the FPN's levels {'P2', ...} (`decoder_outputs`, empty without it).
  `pyramid_outputs` are the encoder levels {'P2', ..., 'P5'}. With an FPN, image sides must be multiples of 32.

  Args:
    block_type: 'basic' (Model Garden's ResidualBlock) or 'bottleneck'.
    stackwise_num_filters: each group's filters (before a bottleneck's widening).
    stackwise_num_blocks: each group's number of blocks.
    stem_filters: the stem convolution's filters.
    activation: the Keras name of the activation ('relu'; Model Garden's 'swish' is 'silu').
    norm_epsilon: batch norm's ε.
    padding: 'same' (TF's, as Model Garden trains) or 'symmetric' (PyTorch's, for imports).
    fpn: None, or {'min_level', 'max_level', 'num_filters', 'fusion_type', 'use_separable_conv'}.
    image_shape: the input's shape, channels last.
  """

  def __init__(self, block_type: str, stackwise_num_filters: Sequence[int],
               stackwise_num_blocks: Sequence[int], stem_filters: int = 64,
               activation: str = 'relu', norm_epsilon: float = 1e-5, padding: str = 'same',
               fpn: Optional[Dict[str, Any]] = None, image_shape=(None, None, 3),
               dtype: Any = None, **kwargs):
    _check_one_of('block_type', block_type, BLOCK_TYPES)
    _check_one_of('padding', padding, PADDINGS)
    if len(stackwise_num_filters) != len(stackwise_num_blocks):
      raise ValueError(f'stackwise_num_filters {list(stackwise_num_filters)} and '
                       f'stackwise_num_blocks {list(stackwise_num_blocks)} differ in length')
    keras.activations.get(activation)  # an unknown name stops here, in Keras's words
    if fpn is not None:
      _check_one_of('fpn fusion_type', fpn['fusion_type'], FUSION_TYPES)
    build = _Builder(padding, activation, norm_epsilon, dtype)

    images = layers.Input(shape=image_shape, name='images')
    x = build.conv(images, stem_filters, 7, 2, 'stem_conv')
    x = build.act(build.norm(x, 'stem_bn'), 'stem_act')
    x = build.max_pool(x, 'stem_pool')
    pyramid = {}
    for group, (filters, blocks) in enumerate(zip(stackwise_num_filters, stackwise_num_blocks)):
      level = group + 2
      for index in range(blocks):
        stride = 2 if group > 0 and index == 0 else 1
        x = _block(build, x, block_type, filters, stride, project=index == 0,
                   name=f'res{level}_block{index}')
      pyramid[level] = x
    decoded = {}
    if fpn is not None:
      decoded = _fpn(build, pyramid, int(fpn['min_level']), int(fpn['max_level']),
                     int(fpn['num_filters']), fpn['fusion_type'],
                     bool(fpn['use_separable_conv']))
    # The FPN's levels are the output with a decoder, so that its layers (and weights) are part
    # of the model.
    super().__init__(inputs=images, outputs=decoded or x, dtype=dtype, **kwargs)

    self.block_type = block_type
    self.stackwise_num_filters = list(stackwise_num_filters)
    self.stackwise_num_blocks = list(stackwise_num_blocks)
    self.stem_filters = stem_filters
    self.activation = activation
    self.norm_epsilon = norm_epsilon
    self.padding = padding
    self.fpn = dict(fpn) if fpn is not None else None
    self.image_shape = image_shape
    self.pyramid_outputs = {f'P{level}': value for level, value in pyramid.items()}
    self.decoder_outputs = decoded

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(block_type=self.block_type, stackwise_num_filters=self.stackwise_num_filters,
                  stackwise_num_blocks=self.stackwise_num_blocks, stem_filters=self.stem_filters,
                  activation=self.activation, norm_epsilon=self.norm_epsilon,
                  padding=self.padding, fpn=self.fpn, image_shape=self.image_shape)
    return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class DenseResNetImageConverter(keras_hub.layers.ImageConverter):
  """[0, 255] pixels → ImageNet-normalised images, as our pretraining normalises them; saved in
  each preset so that `keras_hub.layers.ImageConverter.from_preset` finds it."""
  backbone_cls = DenseResNetBackbone


@keras.saving.register_keras_serializable(package=PACKAGE)
class DenseResNetImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
  """The image converter as an image classifier's preprocessor."""
  backbone_cls = DenseResNetBackbone
  image_converter_cls = DenseResNetImageConverter


@keras.saving.register_keras_serializable(package=PACKAGE)
class DenseResNetImageClassifier(keras_hub.models.ImageClassifier):
  """KerasHub's image classifier (pooling, then a dense layer) on our backbone, so that
  `keras_hub.models.ImageClassifier.from_preset(path, num_classes=...)` builds one."""
  backbone_cls = DenseResNetBackbone
  preprocessor_cls = DenseResNetImageClassifierPreprocessor
