"""Where probe results go: a printed table, `eval/<name>.json` and TensorBoard scalars."""

import json
import os
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

EVAL_DIR = 'eval'


def table(results: Dict[str, Dict[str, Any]]) -> str:
  """A fixed-width table: probe, level, mIoU, pixel accuracy."""
  lines = [f'{"probe":<8} {"level":<6} {"mIoU":>7} {"acc":>7}']
  for key, value in results.items():
    probe, level = key.split('/level')
    lines.append(f'{probe:<8} {level:<6} {value["miou"]:>7.4f} {value["acc"]:>7.4f}')
  return '\n'.join(lines)


def final_lines(results: Dict[str, Dict[str, Any]]) -> str:
  """`<probe> level=<L> mIoU=<x> acc=<y>`, one line per probe and level."""
  lines = []
  for key, value in results.items():
    probe, level = key.split('/level')
    lines.append(f'{probe} level={level} mIoU={value["miou"]:.4f} acc={value["acc"]:.4f}')
  return '\n'.join(lines)


def check_same_settings(path: str, settings: Dict[str, Any], advice: str,
                        stored: Callable[[Dict[str, Any]], Dict[str, Any]] = lambda d: d
                        ) -> None:
  """A JSON file is replaced only by a rerun of what made it: its content, as `stored` reduces
  it to settings, must equal `settings`; otherwise one line names what differs, then `advice`.
  An unreadable (torn) file holds nothing to keep."""
  if not tf.io.gfile.exists(path):
    return
  try:
    with tf.io.gfile.GFile(path) as f:
      before = json.load(f)
  except (ValueError, UnicodeDecodeError, tf.errors.OpError):
    return
  if not isinstance(before, dict):
    return
  before = stored(before)
  changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
  if changed:
    shown = '; '.join(f'{k} {before.get(k)!r} there, {settings.get(k)!r} now'
                      for k in changed[:3])
    raise ValueError(f'{path} holds a result made otherwise ({shown}): {advice}')


def _measured(content: Dict[str, Any]) -> Dict[str, Any]:
  """What a result file measured: its settings and its probes × levels (not their values)."""
  results = content.get('results')
  return dict(content, results=sorted(results) if isinstance(results, dict) else results)


def save(output_dir: str, name: str, results: Dict[str, Dict[str, Any]],
         info: Dict[str, Any], step: Optional[int] = None) -> str:
  """Writes `<output_dir>/eval/<name>.json` (atomically) and TensorBoard scalars under
  `<output_dir>/eval/<name>/`; returns the JSON path."""
  directory = os.path.join(output_dir, EVAL_DIR)
  tf.io.gfile.makedirs(directory)
  path = os.path.join(directory, f'{name}.json')
  check_same_settings(path, dict(info, results=sorted(results)),
                      'give this one another --name (or --output_dir)', _measured)
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    json.dump(dict(info, results=results), f, indent=2, sort_keys=True)
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)
  writer = tf.summary.create_file_writer(os.path.join(directory, name))
  with writer.as_default(step=step or 0):
    for key, value in results.items():
      probe, level = key.split('/level')
      tf.summary.scalar(f'{probe}_level{level}/miou', value['miou'])
      tf.summary.scalar(f'{probe}_level{level}/acc', value['acc'])
  writer.close()
  return path
