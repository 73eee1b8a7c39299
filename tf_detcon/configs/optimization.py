"""Pretraining optimisation as Model Garden configures it: `trainer.optimizer_config`.

The optimiser and its learning-rate schedule are Model Garden's (`OptimizationConfig`, built by
its `OptimizerFactory`), so a Model Garden user's YAML for `trainer.optimizer_config` works
unchanged. What Model Garden lacks is ours, here:

- `scaled_learning_rate`: lr = base · global batch / 256, the linear scaling rule of SimCLR, BYOL
  and MoCo; the experiment factories apply it when they build the config (the trainer prints it).
- `LARS_EXCLUDE`: the variables LARS neither decays nor adapts (docs/design.md §6).
- The schedules of the papers as Model Garden configs: linear warmup then cosine to 0 (BYOL,
  SimCLR, MoCo v2, DetCo), or constant ÷10 at 96% and 98% of training (DetCon's COCO runs).
- `reschedule`: the same optimiser and schedule over another length and batch (CPU miniatures).

MoCo's coupled L2 weight decay for SGD is `task.losses.l2_weight_decay`, as in Model Garden's
vision tasks; the EMA τ schedule of target networks is `tf_detcon.modeling.schedules.ema_tau`.
"""

from typing import List

from official.modeling import optimization

# Every BN gamma/beta (ResNet's batch_normalization*, the FPN's norm_*, the heads' norm) and
# every bias; Model Garden's LARS matches with re.search against the variable it is handed,
# which under a multi-replica strategy is each replica's copy, '.../gamma/replica_1:0'.
LARS_EXCLUDE: List[str] = [r'(^|/)(gamma|beta|bias)(/replica_\d+)?(:\d+)?$']
COCO_DROPS = (0.96, 0.98)  # DetCon A.3: ÷10 at the 96th and 98th percentiles


def scaled_learning_rate(base: float, global_batch: int) -> float:
  """lr = base · global_batch / 256 (SimCLR, BYOL, MoCo)."""
  return base * global_batch / 256.0


def _warmup(warmup_steps: int) -> dict:
  if warmup_steps <= 0:
    return {}
  return {'type': 'linear', 'linear': {'warmup_steps': warmup_steps,
                                       'warmup_learning_rate': 0.0}}


def _schedule(schedule: str, peak: float, total_steps: int, warmup_steps: int) -> dict:
  if schedule == 'cosine':  # cosine from the end of the warmup to 0 at the end of training
    return {'type': 'cosine', 'cosine': {'initial_learning_rate': peak,
                                         'decay_steps': max(total_steps - warmup_steps, 1),
                                         'offset': warmup_steps}}
  if schedule == 'piecewise_coco':
    return {'type': 'stepwise', 'stepwise': {
        'boundaries': [int(f * total_steps) for f in COCO_DROPS],
        'values': [peak, peak / 10, peak / 100]}}
  raise ValueError(f"schedule must be 'cosine' or 'piecewise_coco', got {schedule!r}")


def lars(peak: float, total_steps: int, warmup_steps: int, weight_decay: float,
         schedule: str = 'cosine', momentum: float = 0.9,
         eeta: float = 0.001) -> optimization.OptimizationConfig:
  """LARS (SimCLR, BYOL, DetCon A.3): decoupled weight decay and trust ratio, both skipping
  `LARS_EXCLUDE`."""
  return optimization.OptimizationConfig({
      'optimizer': {'type': 'lars', 'lars': {
          'momentum': momentum, 'eeta': eeta, 'weight_decay_rate': weight_decay,
          'exclude_from_weight_decay': list(LARS_EXCLUDE),
          'exclude_from_layer_adaptation': list(LARS_EXCLUDE)}},
      'learning_rate': _schedule(schedule, peak, total_steps, warmup_steps),
      'warmup': _warmup(warmup_steps)})


def sgd(peak: float, total_steps: int, warmup_steps: int = 0,
        momentum: float = 0.9) -> optimization.OptimizationConfig:
  """SGD with momentum and a cosine schedule (MoCo v2, DetCo); its weight decay is the coupled
  L2 of `task.losses.l2_weight_decay`."""
  return optimization.OptimizationConfig({
      'optimizer': {'type': 'sgd', 'sgd': {'momentum': momentum}},
      'learning_rate': _schedule('cosine', peak, total_steps, warmup_steps),
      'warmup': _warmup(warmup_steps)})


def peak_learning_rate(config: optimization.OptimizationConfig) -> float:
  """The schedule's highest learning rate (after warmup)."""
  schedule = config.learning_rate.get()
  if config.learning_rate.type == 'stepwise':
    return max(schedule.values)
  if config.learning_rate.type == 'constant':
    return schedule.learning_rate
  return schedule.initial_learning_rate


def schedule_end(config: optimization.OptimizationConfig) -> int:
  """The step after which a cosine or polynomial schedule stays at its final rate (0 for the
  papers' cosine); 0 when the schedule has no end (constant, stepwise)."""
  schedule = config.learning_rate.get()
  if config.learning_rate.type in ('cosine', 'polynomial'):
    return int(getattr(schedule, 'offset', 0) or 0) + int(schedule.decay_steps)
  return 0


def reschedule(config: optimization.OptimizationConfig, old_total_steps: int, total_steps: int,
               warmup_steps: int, lr_scale: float = 1.0) -> None:
  """The same optimiser and schedule kind over `total_steps` instead of `old_total_steps`
  (stepwise drops at the same fractions), with `warmup_steps` of warmup and every learning rate
  times `lr_scale`. Cosine and stepwise schedules (the papers') only."""
  kind = config.learning_rate.type
  old = config.learning_rate.get()
  if kind == 'cosine':
    config.learning_rate.override(_schedule('cosine', old.initial_learning_rate * lr_scale,
                                            total_steps, warmup_steps))
  elif kind == 'stepwise':
    config.learning_rate.stepwise.override({
        'boundaries': [int(b * total_steps / old_total_steps) for b in old.boundaries],
        'values': [v * lr_scale for v in old.values]}, is_strict=True)
  else:
    raise ValueError(f'cannot reschedule a {kind!r} learning rate')
  if warmup_steps > 0:
    config.warmup.override(_warmup(warmup_steps))
  else:
    config.warmup.type = None
