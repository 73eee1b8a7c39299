"""Tests for tf_detcon.support.console: what a launcher prints by default and when asked for
more."""

import logging as python_logging

from absl import logging
import pytest

from tf_detcon.support import console


@pytest.mark.parametrize('argv, verbose', [
    (['pretrain.py', '--experiment=x'], False),
    (['pretrain.py', '--verbosity=0'], True),
    (['pretrain.py', '-v', '1'], True),
    (['pretrain.py', '--v=1'], True),
    (['pretrain.py', '--alsologtostderr'], True),
    (['pretrain.py', '--logtostderr'], True),
    (['pretrain.py', '--noalsologtostderr'], False),
    (['pretrain.py', '--model_dir=runs/v'], False),
    (['pretrain.py', 'verbosity'], False),
])
def test_verbose_requested_reads_absl_logging_flags(argv, verbose):
  assert console.verbose_requested(argv) is verbose


@pytest.mark.parametrize('nodes, verbose, preset, expected', [
    ([], False, None, '3'),  # CPU-only: the CUDA probe's cuInit error is not shown
    (['/dev/nvidia0'], False, None, '2'),  # a GPU machine keeps native errors
    (['/dev/accel0'], False, None, '2'),  # a TPU VM too
    ([], True, None, None),  # --verbosity: TF's own default, everything
    ([], False, '0', '0'),  # the user's setting wins
])
def test_quiet_native_logs_picks_tf_log_level(monkeypatch, nodes, verbose, preset, expected):
  monkeypatch.delenv('TF_CPP_MIN_LOG_LEVEL', raising=False)
  if preset is not None:
    monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', preset)
  monkeypatch.setattr(console.glob, 'glob',
                      lambda pattern: [n for n in nodes if n.startswith(pattern[:-1])])
  console.quiet_native_logs(['x.py'] + (['--verbosity=0'] if verbose else []))
  assert console.os.environ.get('TF_CPP_MIN_LOG_LEVEL') == expected


def test_quiet_python_logs_keeps_warnings_unless_verbose():
  before = logging.get_verbosity(), python_logging.getLogger('tensorflow').level
  try:
    logging.set_verbosity(logging.INFO)
    console.quiet_python_logs(['x.py', '-v', '0'])
    assert logging.get_verbosity() == logging.INFO
    console.quiet_python_logs(['x.py'])
    assert logging.get_verbosity() == logging.WARNING
    assert python_logging.getLogger('tensorflow').level == python_logging.WARNING
  finally:
    logging.set_verbosity(before[0])
    python_logging.getLogger('tensorflow').setLevel(before[1])


def test_say_and_warn_print_one_line_each(capsys):
  console.say('exported step 2 to runs/x/export')
  console.warn('the config differs')
  assert capsys.readouterr().out == ('exported step 2 to runs/x/export\n'
                                     'warning: the config differs\n')
