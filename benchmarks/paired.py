"""Paired comparisons for the miniature tables: the mean paired difference with its 95% interval.

Two rows of a table are compared on the runs they share: the same pretraining seed (and, after
fine-tuning, the same fine-tuning seed), so that the data order, the crops and the new layers'
initialisation are the same for both. The difference d_i of each pair is a sample; the interval is
Student's t interval of their mean, mean ± t(0.975, n − 1) · s / √n with s the sample standard
deviation (ddof 1). An ordering a paper claims *holds* where the whole interval lies above 0, is
*reversed* where it lies below, and is *not shown* otherwise.

Pure Python (no SciPy: the benchmarks run on the package's own install); tests/test_paired.py
checks the quantiles and intervals against SciPy.
"""

import dataclasses
import math
from typing import Hashable, Mapping, Optional, Sequence

CONFIDENCE = 0.95


def _t_density(x: float, df: int) -> float:
  log_norm = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
              - 0.5 * math.log(df * math.pi))
  return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x: float, df: int) -> float:
  """P(T ≤ x) for Student's t with `df` degrees of freedom: the density integrated from 0 by
  Simpson's rule on a grid fine enough for 1e-10 over the range the intervals use."""
  if df < 1:
    raise ValueError(f'degrees of freedom must be >= 1, got {df}')
  if x == 0:
    return 0.5
  steps = 2 * max(500, int(abs(x) * 400))
  h = abs(x) / steps
  total = _t_density(0.0, df) + _t_density(abs(x), df)
  for i in range(1, steps):
    total += (4 if i % 2 else 2) * _t_density(i * h, df)
  half = total * h / 3
  return 0.5 + half if x > 0 else 0.5 - half


def t_quantile(p: float, df: int) -> float:
  """x with P(T ≤ x) = p, by bisection on `t_cdf`."""
  if not 0 < p < 1:
    raise ValueError(f'p must be in (0, 1), got {p}')
  if p < 0.5:
    return -t_quantile(1 - p, df)
  low, high = 0.0, 1.0
  while t_cdf(high, df) < p:
    low, high = high, high * 2
  for _ in range(60):
    middle = (low + high) / 2
    if t_cdf(middle, df) < p:
      low = middle
    else:
      high = middle
  return (low + high) / 2


@dataclasses.dataclass(frozen=True)
class Interval:
  """The mean paired difference of `n` pairs and its interval [low, high]."""
  mean: float
  low: float
  high: float
  n: int
  std: float  # of the differences, ddof 1

  @property
  def verdict(self) -> str:
    if self.n < 2:
      return 'one pair: no interval'
    if self.low > 0:
      return 'holds'
    if self.high < 0:
      return 'reversed'
    return 'not shown'

  def __str__(self) -> str:
    if self.n < 2:
      return f'{self.mean:+.3f} (n=1)'
    return f'{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n})'


def interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
  """Student's t interval of the mean of `differences`."""
  n = len(differences)
  if n == 0:
    raise ValueError('no pairs to compare')
  mean = sum(differences) / n
  if n == 1:
    return Interval(mean, math.nan, math.nan, 1, math.nan)
  std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
  half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
  return Interval(mean, mean - half, mean + half, n, std)


def compare(mine: Mapping[Hashable, float], theirs: Mapping[Hashable, float]
            ) -> Optional[Interval]:
  """The interval of mine − theirs over the pair keys both have (e.g. (pretraining seed,
  fine-tuning seed)); None if they share none."""
  keys = sorted(set(mine) & set(theirs))
  if not keys:
    return None
  return interval([mine[k] - theirs[k] for k in keys])


def pairs_needed(std: float, target: float, max_pairs: int, step: int = 1,
                 confidence: float = CONFIDENCE) -> int:
  """The fewest pairs (a multiple of `step`, at most `max_pairs`) whose interval half-width
  t · std / √n is at most `target`, for a paired spread `std`; `max_pairs` if none is."""
  n = max(2, step)
  while n <= max_pairs:
    if t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n) <= target:
      return n
    n += step
  return max_pairs

