"""MoCo key queues: ring buffers of L2-normalised keys, filled from the global batch."""

import tensorflow as tf

from tf_detcon.primitives import replicas


class KeyQueue(tf.Module):
  """`size` keys of dimension `dim` (random unit vectors at first) and a write pointer.

  Both are non-trainable variables of the model, so checkpoints hold them and a resumed run
  contrasts against the same negatives.
  """

  def __init__(self, size: int, dim: int, name: str):
    super().__init__(name=name)
    self.size = size
    initial = tf.math.l2_normalize(tf.random.normal([size, dim]), axis=-1)
    self.keys = tf.Variable(initial, trainable=False, name='keys')
    self.pointer = tf.Variable(0, trainable=False, dtype=tf.int64, name='pointer')

  def enqueue(self, local_keys: tf.Tensor) -> None:
    """Writes the keys of the whole global batch (gathered across replicas, in replica order)
    at the pointer and advances it. The queue size is a multiple of the global batch."""
    keys = tf.stop_gradient(tf.math.l2_normalize(
        tf.cast(replicas.gather(local_keys), tf.float32), axis=-1))
    count = tf.shape(keys, out_type=tf.int64)[0]

    def write(queue, new_keys, pointer):
      indices = (pointer + tf.range(tf.shape(new_keys, out_type=tf.int64)[0])) % self.size
      return queue.scatter_nd_update(indices[:, None], new_keys)

    start = self.pointer.read_value()
    replicas.update_everywhere([
        (self.keys, write, (keys, start)),
        (self.pointer, lambda p, n: p.assign((p + n) % self.size), (count,)),
    ])
