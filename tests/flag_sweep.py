"""The flag sweep's harness: one launcher's `main` on many argument lists, in one process.

  python tests/flag_sweep.py LAUNCHER CASES.json RESULTS.json

Each case is an argument list. Flags are parsed by absl as `app.run` parses them (a parse error
is reported as absl reports it: `FATAL Flags parsing error: ...`), then `main` runs under
`cli.guarded`, as `cli.run` runs it. Starting TensorFlow and Model Garden once per launcher
instead of once per case keeps the sweep to seconds. RESULTS.json holds, per case, the exit code
('traceback' for an exception that escaped) and what went to stdout and stderr.
"""

import contextlib
import importlib.util
import io
import json
import os
import sys
import traceback
from typing import Any, Dict, List

from absl import flags


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from tf_detcon.support import cli


def load(launcher: str):
  """The launcher's module, with its flags defined as when it runs as a script."""
  path = os.path.join(REPO_ROOT, 'launch', f'{launcher}.py')
  spec = importlib.util.spec_from_file_location(f'launch_{launcher}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if hasattr(module, 'MODES'):
    cli.define_flags(module.MODES)
  sys.argv = [path]  # the program name in `prog: error:` lines
  return module


def run_case(module, argv: List[str]) -> Dict[str, Any]:
  flags.FLAGS.unparse_flags()
  err, out = io.StringIO(), io.StringIO()
  code: Any = 0
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    try:
      rest = flags.FLAGS([sys.argv[0], *argv])
    except flags.Error as e:
      print(f'FATAL Flags parsing error: {e}', file=sys.stderr)
      code = 1
    else:
      try:
        cli.guarded(module.main)(rest)
      except SystemExit as e:
        code = e.code
      except BaseException:  # pylint: disable=broad-except  (the sweep reports it)
        traceback.print_exc()
        code = 'traceback'
  return {'argv': argv, 'code': code, 'stderr': err.getvalue(), 'stdout': out.getvalue()}


def main() -> None:
  launcher, cases_path, results_path = sys.argv[1:4]
  with open(cases_path) as f:
    cases = json.load(f)
  module = load(launcher)
  results = [run_case(module, argv) for argv in cases]
  with open(results_path, 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
