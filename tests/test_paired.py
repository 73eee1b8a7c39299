"""The paired statistic of the miniature tables (benchmarks/paired.py) against SciPy."""

import numpy as np
import pytest
from scipy import stats

import paired


@pytest.mark.parametrize('df', [1, 2, 3, 4, 5, 8, 11, 17, 29, 60])
def test_t_quantiles_and_cdf_are_scipys(df):
  for p in (0.6, 0.9, 0.95, 0.975, 0.995):
    assert paired.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
    assert paired.t_quantile(1 - p, df) == pytest.approx(stats.t.ppf(1 - p, df), rel=1e-9)
  for x in (-7.5, -2.0, -0.3, 0.0, 0.3, 2.0, 7.5):
    assert paired.t_cdf(x, df) == pytest.approx(stats.t.cdf(x, df), abs=1e-10)


def test_the_interval_is_scipys_paired_t_interval_and_test():
  rng = np.random.default_rng(0)
  for n in (2, 3, 6, 9):
    for _ in range(20):
      a = rng.normal(0.4, 0.05, n)
      b = a - rng.normal(0.02, 0.03, n)
      found = paired.compare(dict(enumerate(a)), dict(enumerate(b)))
      d = a - b
      low, high = stats.t.interval(0.95, n - 1, loc=d.mean(), scale=stats.sem(d))
      assert (found.mean, found.low, found.high, found.n) == pytest.approx(
          (d.mean(), low, high, n), rel=1e-9)
      assert found.std == pytest.approx(np.std(d, ddof=1), rel=1e-12)
      # The verdict is the two-sided paired t-test at 5%, with the direction of the mean.
      p_value = stats.ttest_rel(a, b).pvalue
      if found.verdict == 'not shown':
        assert p_value >= 0.05 - 1e-9
      else:
        assert p_value < 0.05 + 1e-9
        assert (found.verdict == 'holds') == (d.mean() > 0)


def test_pairs_are_matched_by_key_and_unmatched_runs_left_out():
  mine = {(0, 0): 0.5, (1, 1): 0.6, (2, 2): 0.7, (3, 3): 9.9}
  theirs = {(0, 0): 0.4, (1, 1): 0.4, (2, 2): 0.5}
  found = paired.compare(mine, theirs)
  assert found.n == 3 and found.mean == pytest.approx((0.1 + 0.2 + 0.2) / 3)
  assert paired.compare(mine, {(9, 9): 1.0}) is None
  single = paired.compare({0: 0.5}, {0: 0.25})
  assert single.n == 1 and single.verdict == 'one pair: no interval' and str(single) == (
      '+0.250 (n=1)')


def test_pairs_needed_is_the_fewest_meeting_the_half_width():
  for std, target in ((0.05, 0.02), (0.02, 0.02), (0.1, 0.01)):
    n = paired.pairs_needed(std, target, max_pairs=60, step=3)
    half = lambda k: stats.t.ppf(0.975, k - 1) * std / np.sqrt(k)
    if n < 60:
      assert half(n) <= target and (n == 3 or half(n - 3) > target)
    else:
      assert half(57) > target
