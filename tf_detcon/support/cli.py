"""What the absl launchers share: one-line errors for bad flags, configs and inputs."""

import dataclasses
import difflib
import os
import re
import signal
import sys
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from official.core import exp_factory
from official.modeling.hyperparams import params_dict

from absl import app
from absl import flags
import tensorflow as tf
import yaml

from tf_detcon.support import console

# Errors that mean "the user's flags, config or data are wrong": reported in one line. Anything
# else is a bug and keeps its traceback. TF_DETCON_TRACEBACK=1 shows tracebacks for all.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, tf.errors.InvalidArgumentError,
               tf.errors.NotFoundError)


def define_flags(modes: Sequence[str]) -> None:
  """Model Garden's launcher flags (official/common/flags.py) with this launcher's modes.

  Ours define --mode as a plain string checked by `check_flags`, so a bad mode is one line and
  modes Model Garden lacks (pretraining's 'export') are allowed.
  """
  flags.DEFINE_string('experiment', None, 'A registered experiment name.')
  flags.DEFINE_string('mode', None, f'One of: {", ".join(modes)} (default {modes[0]}).')
  flags.DEFINE_string('model_dir', None, 'Where checkpoints, summaries and exports go.')
  flags.DEFINE_multi_string('config_file', None,
                            'YAML/JSON files overriding the experiment, applied in order.')
  flags.DEFINE_string('params_override', None,
                      "Overrides after the config files: 'a.b=1,c.d=x' or a YAML string.")
  flags.DEFINE_string('tpu', None, "TPU address: 'local' on a TPU VM, or a name / grpc://.")
  flags.DEFINE_string('tf_data_service', None, 'tf.data service address, if any.')


def one_line(error: BaseException) -> str:
  """The user-facing sentence of an error; for a failed tf.debugging.Assert in a tf.data or
  tf.function graph, just the assertion's own message."""
  text = getattr(error, 'message', None) or str(error) or type(error).__name__
  if isinstance(error, KeyError) and error.args:
    text = str(error.args[0])
  assertion = re.search(r'assertion failed: \[(.*?)\]\s*(\[\[|$)', text, re.S)
  if assertion:
    text = assertion.group(1).replace('\\"', "'")
  return ' '.join(text.split())


def guarded(main: Callable[[Sequence[str]], None],
            info_logs: bool = False) -> Callable[[Sequence[str]], None]:
  """`main` with user errors turned into `prog: error: message` and exit status 1. Without
  `info_logs`, INFO logs are off unless asked for (`console.quiet_python_logs`)."""

  def wrapped(argv: Sequence[str]) -> None:
    if not info_logs:
      console.quiet_python_logs()  # TF's savers and tracing; the launcher prints its own
    try:
      main(argv)
    except KeyboardInterrupt as e:  # the trainer has checkpointed and said so
      sys.exit(143 if str(e) == 'SIGTERM' else 130)  # 128 + the signal, as the shell reports
    except USER_ERRORS as e:
      if os.environ.get('TF_DETCON_TRACEBACK'):
        raise
      prog = os.path.basename(sys.argv[0])
      print(f'{prog}: error: {one_line(e)}', file=sys.stderr)
      sys.exit(1)

  return wrapped


HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '-helpshort')


def launcher_help(launcher: Optional[types.ModuleType] = None) -> str:
  """The launcher's usage: its module docstring, then its own flags and the Model Garden ones it
  shares (`define_flags`), each with its default; absl's and TF's others only in --helpfull.
  `launcher`: the launcher's module (default `__main__`); run as a setup.py command, `__main__`
  is the command's wrapper and the launcher is the module that defines `main`."""
  launcher = launcher or sys.modules['__main__']
  by_module = flags.FLAGS.flags_by_module_dict()
  # absl files a script's flags under sys.argv[0], an imported module's under its name.
  own = (by_module.get(launcher.__name__, []) or by_module.get(sys.argv[0], []) or
         by_module.get(getattr(launcher, '__file__', ''), []))
  shared = by_module.get(__name__, []) or by_module.get(__file__, [])
  lines = [(launcher.__doc__ or '').strip(), '']
  for title, group in (('flags', own), ("Model Garden's launcher flags", shared)):
    if not group:
      continue
    lines.append(f'{title}:')
    for flag in sorted(group, key=lambda f: f.name):
      default = '' if flag.default in (None, '', []) else f' (default: {flag.default_as_str})'
      lines.append(f'  --{flag.name}: {" ".join(flag.help.split())}{default}')
    lines.append('')
  lines.append('--helpfull lists every flag, absl\'s and TensorFlow\'s too.')
  return '\n'.join(lines)


def run(main: Callable[[Sequence[str]], None], info_logs: bool = False) -> None:
  """absl `app.run(main)`, turning user errors into `prog: error: message` and exit status 1.
  `info_logs`: keep absl's INFO log by default (fine-tuning: Model Garden's progress is in it).
  --help prints `launcher_help` and exits 0."""
  if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
    print(launcher_help(sys.modules.get(main.__module__)))
    sys.exit(0)
  signal.signal(signal.SIGINT, signal.default_int_handler)  # `console.start_launcher` had it
  app.run(guarded(main, info_logs))


def ensure_writable(directory: str, flag: str = '--model_dir') -> None:
  """Creates `directory` and writes a probe file in it, or says in one line why it cannot."""
  probe = os.path.join(directory, '.tf_detcon_write_probe')
  try:
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    reason = ' '.join((getattr(e, 'message', None) or str(e)).split())[:200]
    raise ValueError(f'{flag} {directory} is not writable ({reason})') from e


def check_minimums(flags_obj, minimums: Sequence[Tuple[str, int]]) -> None:
  """Stops with one line naming the first numeric flag below its minimum."""
  for name, minimum in minimums:
    value = flags_obj[name].value
    if value is not None and value < minimum:
      raise ValueError(f'--{name} must be >= {minimum}, got {value}')


def check_flags(flags_obj, argv: Sequence[str], modes: Sequence[str], example: str,
                accepts: Callable[[object], bool] = lambda config: True) -> str:
  """Validates Model Garden's common flags before any config is parsed; returns the mode.

  Args:
    flags_obj: absl FLAGS with --experiment, --mode, --model_dir.
    argv: positional arguments (none are taken).
    modes: allowed --mode values; the first is the default.
    example: an experiment name for the message when --experiment is missing.
    accepts: which registered experiments this launcher runs.
  """
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags_obj.experiment:
    raise ValueError(f'--experiment is required, e.g. --experiment={example}')
  registered = sorted(exp_factory._REGISTERED_CONFIGS)  # pylint: disable=protected-access
  if (flags_obj.experiment not in registered or
      not accepts(exp_factory.get_exp_config(flags_obj.experiment))):
    known = [n for n in registered if accepts(exp_factory.get_exp_config(n))]
    raise ValueError(f'unknown experiment {flags_obj.experiment!r}; known: {", ".join(known)}')
  mode = flags_obj.mode or modes[0]
  if mode not in modes:
    raise ValueError(f'--mode must be one of {", ".join(modes)}, got {mode!r}')
  if not flags_obj.model_dir:
    raise ValueError('--model_dir is required')
  for path in flags_obj.config_file or ():
    check_yaml_file(path)
  if flags_obj.params_override:
    check_params_override(flags_obj.params_override)
  return mode


def _leaf_keys(mapping: Any, prefix: str = '') -> List[str]:
  if not isinstance(mapping, dict) or not mapping:
    return [prefix] if prefix else []
  out = []
  for key, value in mapping.items():
    out += _leaf_keys(value, f'{prefix}.{key}' if prefix else str(key))
  return out


def _children(node: Any) -> Optional[Dict[str, Any]]:
  """A config node's settings by name: every field of a Model Garden config dataclass (a one-of
  has a field per choice, set or not), or a dict's keys; None for a leaf or an unset value,
  below which anything may be set."""
  if dataclasses.is_dataclass(node) and not isinstance(node, type):
    return {f.name: getattr(node, f.name, None) for f in dataclasses.fields(node)}
  if hasattr(node, 'as_dict') and callable(node.as_dict):
    return {key: getattr(node, key, None) for key in node.as_dict()}
  if isinstance(node, dict):
    return node
  return None


def unknown_setting(config: Any, keys: Sequence[str]) -> Optional[str]:
  """One line naming the first dotted key of `keys` that `config` (an experiment config, or a
  dict) lacks, with the closest existing keys at that place; None if every key exists."""
  for key in sorted(keys):
    node, path = config, []
    for part in key.split('.'):
      children = _children(node)
      if children is None:
        break
      if part not in children:
        place = '.'.join(path)
        near = [f'{place}.{k}' if place else k
                for k in difflib.get_close_matches(part, list(children), n=3, cutoff=0.6)]
        return (f'unknown setting {".".join(path + [part])!r}' + (
            f'; did you mean {", ".join(repr(n) for n in near)}?' if near else
            f'; {place or "the config"} has {", ".join(sorted(children)[:12])}'))
      node = children[part]
      path.append(part)
  return None


def parse_configuration(flags_obj, experiment_config: Any = None) -> Any:
  """Model Garden's `train_utils.parse_configuration`, with an unknown key in a config file or
  --params_override named in one line by its full dotted path and the closest existing keys,
  instead of Model Garden's advice to call `override(..., is_strict=False)` in Python."""
  from official.core import train_utils  # pylint: disable=g-import-not-at-top
  default = experiment_config or exp_factory.get_exp_config(flags_obj.experiment)
  problem = unknown_setting(default, _leaf_keys(_user_settings(flags_obj)))
  if problem:
    raise ValueError(problem)
  return train_utils.parse_configuration(flags_obj, lock_return=False, print_return=False)


def _user_settings(flags_obj) -> Dict[str, Any]:
  """The settings of --config_file files and --params_override, merged in order."""
  merged: Dict[str, Any] = {}

  def merge(into: Dict[str, Any], update: Any) -> None:
    for key, value in (update or {}).items():
      if isinstance(value, dict) and isinstance(into.get(key), dict):
        merge(into[key], value)
      else:
        into[key] = value

  for path in flags_obj.config_file or ():
    with tf.io.gfile.GFile(path) as f:
      merge(merged, yaml.safe_load(f.read()))
  if flags_obj.params_override:
    merge(merged, _override_mapping(flags_obj.params_override))
  return merged


def _yaml(text: str, what: str) -> object:
  """The YAML content of `text`, or a one-line error naming `what`."""
  try:
    return yaml.safe_load(text)
  except yaml.YAMLError as e:
    raise ValueError(f'{what} ({one_line(e)})') from e


def check_params_override(override: str) -> None:
  """Reads --params_override as Model Garden does (`override_params_dict`: 'a.b=1,c=x' pairs,
  else a YAML mapping, else a YAML file's path) and stops with one line if it is none of them."""
  try:
    text = params_dict.nested_csv_str_to_json_str(override)
  except ValueError:
    text = override
  if not isinstance(_yaml(text, '--params_override is neither a.b=value pairs nor valid YAML'),
                    dict):
    check_yaml_file(override, '--params_override')


def _override_mapping(override: str) -> dict:
  """--params_override as the mapping Model Garden applies (pairs, YAML, or a YAML file)."""
  try:
    content = yaml.safe_load(params_dict.nested_csv_str_to_json_str(override))
  except (ValueError, yaml.YAMLError):
    content = yaml.safe_load(override)
  if not isinstance(content, dict):
    with tf.io.gfile.GFile(override) as f:
      content = yaml.safe_load(f.read())
  return content


def _dotted(mapping: Any, prefix: str = '') -> Set[str]:
  if not isinstance(mapping, dict):
    return {prefix} if prefix else set()
  keys = {prefix} if prefix else set()
  for key, value in mapping.items():
    keys |= _dotted(value, f'{prefix}.{key}' if prefix else str(key))
  return keys


def explicit_keys(flags_obj) -> Set[str]:
  """The dotted keys (and their parents) that the user's --config_file files and
  --params_override set, e.g. {'task', 'task.model', 'task.model.norm_activation.activation'}:
  what fine-tuning must not replace by an export's value. Call after `check_flags`."""
  keys = set()
  for path in flags_obj.config_file or ():
    with tf.io.gfile.GFile(path) as f:
      keys |= _dotted(yaml.safe_load(f.read()))
  if flags_obj.params_override:
    keys |= _dotted(_override_mapping(flags_obj.params_override))
  return keys


def check_yaml_file(path: str, flag: str = '--config_file') -> None:
  """Stops with one line unless `path` is a readable file of valid, non-empty YAML."""
  if not tf.io.gfile.exists(path):
    raise ValueError(f'{flag} {path!r} does not exist')
  if tf.io.gfile.isdir(path):
    raise ValueError(f'{flag} {path!r} is a directory, not a YAML file')
  with tf.io.gfile.GFile(path) as f:
    content = _yaml(f.read(), f'{flag} {path!r} is not valid YAML')
  if not isinstance(content, dict):
    raise ValueError(f'{flag} {path!r} is ' + ('empty' if content is None else
                     f'not a mapping of settings (it holds a {type(content).__name__})'))
