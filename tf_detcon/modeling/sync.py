"""Updating non-trained state (EMA targets, queues) on every replica's copy, from any context."""

from typing import Callable, Sequence, Tuple

import tensorflow as tf

Update = Tuple[tf.Variable, Callable[..., tf.Operation], tuple]


def update_everywhere(updates: Sequence[Update]) -> None:
  """Applies `fn(variable_copy, *args_copy)` for each (variable, fn, args) on every device.

  Inside `strategy.run` this is one `merge_call`; `extended.update` hands each device its own
  copy of the variable and of every per-replica argument. The arguments must agree across
  replicas (synchronised weights, gathered keys), so every copy ends up the same.
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
