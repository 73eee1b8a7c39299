"""Cross-replica helpers, the one place that asks "are we inside a multi-replica step?".

Inside `strategy.run` of a strategy with several replicas (MirroredStrategy over devices,
TPUStrategy over cores) a replica context is active; the losses gather targets across it, the
logs average over it, and non-trained state (EMA targets, queues) is written on every replica's
copy from it. Outside one (eager code, tests, one replica) every helper is the identity.
"""

from typing import Callable, Optional, Sequence, Tuple

import tensorflow as tf

Update = Tuple[tf.Variable, Callable[..., tf.Operation], tuple]


def multi_replica_context() -> Optional[tf.distribute.ReplicaContext]:
  """The replica context of a step with more than one replica, else None."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return None
  return context


def replica_info() -> Tuple[tf.Tensor, int]:
  """(replica id, number of replicas) of the current step ((0, 1) outside a multi-replica one)."""
  context = multi_replica_context()
  if context is None:
    return tf.constant(0), 1
  return context.replica_id_in_sync_group, context.num_replicas_in_sync


def gather(tensor: tf.Tensor) -> tf.Tensor:
  """Concatenates `tensor` over replicas along axis 0, in replica order (differentiable)."""
  context = multi_replica_context()
  if context is None:
    return tensor
  return context.all_gather(tensor, axis=0)


def mean(value: tf.Tensor) -> tf.Tensor:
  """The mean of a per-replica value over replicas."""
  context = multi_replica_context()
  if context is None:
    return value
  return context.all_reduce(tf.distribute.ReduceOp.MEAN, value)


def update_everywhere(updates: Sequence[Update]) -> None:
  """Applies `fn(variable_copy, *args_copy)` for each (variable, fn, args) on every device.

  Inside a replica context this is one `merge_call`; `extended.update` hands each device its own
  copy of the variable and of every per-replica argument. The arguments must agree across
  replicas (synchronised weights, gathered keys), so every copy ends up the same. Outside one it
  updates through the current strategy (the default strategy: the variable itself).
  """
  if not updates:
    return
  # Functions stay in the closure: each replica thread builds its own function objects, which
  # merge_call would otherwise regroup into per-replica values. They must use only their args.
  functions = [fn for _, fn, _ in updates]

  def apply(strategy, variables_and_args):
    for fn, (variable, args) in zip(functions, variables_and_args):
      strategy.extended.update(variable, fn, args=args)

  operands = [(variable, args) for variable, _, args in updates]
  context = tf.distribute.get_replica_context()
  if context is None:  # cross-replica context
    apply(tf.distribute.get_strategy(), operands)
  else:
    context.merge_call(apply, args=(operands,))
