"""Tests for benchmarks/fingerprint.py: the bit-exact before/after check of a refactor."""

import hashlib
import json

import numpy as np
import tensorflow as tf

import fingerprint


def _write(path, runs):
  with open(path, 'w') as f:
    json.dump(runs, f)
  return str(path)


def _run(losses, tensors):
  return {'losses': losses, 'tensors': tensors,
          'weights': hashlib.sha256(''.join(sorted(tensors.values())).encode()).hexdigest()}


def test_compare_tells_a_changed_number_from_a_renamed_object(tmp_path, capsys):
  before = _write(tmp_path / 'a.json', {'x_tiny': _run([1.0, 2.0], {'a': 'h1', 'b': 'h2'}),
                                        'y_tiny': _run([3.0], {'c': 'h3'})})
  renamed = _write(tmp_path / 'b.json', {'x_tiny': _run([1.0, 2.0], {'A': 'h1', 'b': 'h2'}),
                                         'y_tiny': _run([3.0], {'c': 'h3'})})
  assert fingerprint.compare(before, renamed) == 0
  assert 'renamed' in capsys.readouterr().out
  changed = _write(tmp_path / 'c.json', {'x_tiny': _run([1.0, 2.0000002], {'a': 'h1', 'b': 'h2'}),
                                         'y_tiny': _run([3.0], {'c': 'h4'})})
  assert fingerprint.compare(before, changed) == 1
  out = capsys.readouterr().out
  assert out.count('DIFFER') == 2 and '0 of 2 bit-identical' in out


def test_checkpoint_hashes_are_by_value_and_see_one_ulp(tmp_path):
  def save(name, values):
    variables = {k: tf.Variable(v) for k, v in values.items()}
    tf.train.Checkpoint(**variables).save(str(tmp_path / name / 'ckpt'))
    return fingerprint.checkpoint_hashes(str(tmp_path / name))

  one = save('one', {'w': [1.0, 2.0], 'v': [3.0]})
  same = save('same', {'w': [1.0, 2.0], 'v': [3.0]})
  ulp = np.nextafter(np.float32(2.0), np.float32(3.0))  # one float32 step above 2
  nudged = save('nudged', {'w': np.array([1.0, ulp], np.float32), 'v': [3.0]})
  assert one == same and len(one) >= 2
  assert one != nudged and sorted(one) == sorted(nudged)
