"""MLP projector / predictor heads (BYOL/SimCLR style), with cross-replica batch norm."""

import tf_keras


def batch_norm(use_sync_bn: bool, momentum: float = 0.9, epsilon: float = 1e-5,
               name: str = 'batch_norm') -> tf_keras.layers.Layer:
  """Synchronised BN (statistics over the global batch) or per-replica BN."""
  return tf_keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon,
                                            synchronized=use_sync_bn, name=name)


class MLPHead(tf_keras.layers.Layer):
  """Linear → BN → ReLU → linear (no bias): DetCon/BYOL 4096 → 256, SimCLR 2048 → 128."""

  def __init__(self, hidden_dim: int, output_dim: int, use_sync_bn: bool = True,
               norm_momentum: float = 0.9, norm_epsilon: float = 1e-5, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(hidden_dim=hidden_dim, output_dim=output_dim, use_sync_bn=use_sync_bn,
                        norm_momentum=norm_momentum, norm_epsilon=norm_epsilon)
    self.hidden = tf_keras.layers.Dense(hidden_dim, name='hidden')
    self.norm = batch_norm(use_sync_bn, norm_momentum, norm_epsilon, name='norm')
    self.output_layer = tf_keras.layers.Dense(output_dim, use_bias=False, name='output')

  def build(self, input_shape):
    self.hidden.build(input_shape)
    self.norm.build(input_shape[:-1] + (self._config['hidden_dim'],))
    self.output_layer.build(input_shape[:-1] + (self._config['hidden_dim'],))
    super().build(input_shape)

  def call(self, inputs, training=None):
    x = self.hidden(inputs)
    x = tf_keras.activations.relu(self.norm(x, training=training))
    return self.output_layer(x)

  def get_config(self):
    return dict(super().get_config(), **self._config)
