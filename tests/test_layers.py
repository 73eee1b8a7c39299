"""The package's layers point one way: configs → data → modeling (blocks, then methods) and
the export manifest → evaluation → training → launch glue. Read from the modules' own import
statements."""

import ast
import glob
import os
import re
from typing import Dict, List

from tests.conftest import REPO_ROOT

PACKAGE = os.path.join(REPO_ROOT, 'tf_detcon')

# Lower rank = lower layer; a module may import only modules of its own rank or lower.
RANKS = [
    ('tf_detcon.configs', 0), ('tf_detcon.support', 0), ('tf_detcon.primitives.replicas', 0),
    ('tf_detcon.primitives', 1), ('tf_detcon.modeling.losses', 1),
    ('tf_detcon.modeling.schedules', 1), ('tf_detcon.data', 2),
    ('tf_detcon.modeling.blocks', 3), ('tf_detcon.exports', 3),
    ('tf_detcon.modeling', 4), ('tf_detcon.finetuning', 4), ('tf_detcon.registry_imports', 4),
    # Evaluation reads exports and never training; training's monitors run its probes.
    ('tf_detcon.evaluation', 5), ('tf_detcon.training', 6), ('tf_detcon.weights', 7),
    # Keras 3: the backbone classes import nothing of ours (they load without TensorFlow); the
    # preset writer reads exports through evaluation and writes with training's export.
    ('tf_detcon.keras3.backbone', 0), ('tf_detcon.keras3.check', 0), ('tf_detcon.keras3', 7),
    ('tf_detcon', 0),
]


def rank(module: str) -> int:
  for prefix, value in RANKS:
    if module == prefix or module.startswith(prefix + '.'):
      return value
  raise AssertionError(f'{module} has no layer')


def package_imports() -> Dict[str, List[str]]:
  """{module: [tf_detcon modules it imports]} for every module of the package."""
  out = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(root, name)
      module = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, '.')
      module = module[:-len('.__init__')] if module.endswith('.__init__') else module
      with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
      imported = []
      for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
            'tf_detcon'):
          imported += [f'{node.module}.{alias.name}' for alias in node.names]
        elif isinstance(node, ast.Import):
          imported += [a.name for a in node.names if a.name.startswith('tf_detcon')]
      out[module] = imported
  return out


IMPORTS = package_imports()


def test_every_module_imports_only_its_layer_or_lower():
  assert 'tf_detcon.primitives.replicas' in IMPORTS['tf_detcon.modeling.base']  # the reading works
  assert 'tf_detcon.modeling.registry' in IMPORTS['tf_detcon.training.trainer']
  upward = [f'{module} → {target}' for module, targets in IMPORTS.items()
            for target in targets if rank(target) > rank(module)]
  assert not upward


def test_no_modeling_module_imports_training():
  assert not [m for m, targets in IMPORTS.items() if m.startswith('tf_detcon.modeling')
              and any(t.startswith('tf_detcon.training') for t in targets)]


def test_blocks_do_not_know_the_methods():
  blocks = {m: t for m, t in IMPORTS.items() if m.startswith('tf_detcon.modeling.blocks')}
  assert blocks and not [m for m, targets in blocks.items() for t in targets
                         if t.startswith('tf_detcon.modeling.') and
                         not t.startswith('tf_detcon.modeling.blocks')]


def test_the_training_input_does_not_import_the_offline_precompute():
  online = {m: t for m, t in IMPORTS.items()
            if m.startswith('tf_detcon.data') and not m.startswith('tf_detcon.data.offline')}
  assert 'tf_detcon.data.datasets' in online
  assert not [m for m, targets in online.items() for t in targets
              if t.startswith('tf_detcon.data.offline')]


def test_the_trainer_and_export_name_no_method():
  for module in ('tf_detcon.training.trainer', 'tf_detcon.training.export'):
    with open(os.path.join(REPO_ROOT, *module.split('.')) + '.py', encoding='utf-8') as f:
      source = f.read()
    for word in ("'detcon'", "'detco'", "'decon'", 'methods.detcon', 'methods.detco',
                 'methods.decon', 'DeCon', 'DetCo', 'DetCon'):
      assert word not in source, (module, word)


def test_only_a_method_switches_on_its_own_type():
  """A method's block knows its miniatures (`tiny`, and the tables' `miniature`), what it needs
  on one device, its checks (with replicas) and the method it wraps (`configs/methods.py`), so
  no other module, benchmarks included, reaches into DeCon's base or branches on a method's
  type; DeCon's own modules may."""
  switch = re.compile(r"\.decon\.base\b|method\.type\s*[!=]=|"
                      r"type\s*[!=]=\s*'(?:decon|detcon|detco)'")
  own = {'tf_detcon/configs/methods.py', 'tf_detcon/modeling/methods/decon.py'}
  found = []
  for path in sorted(glob.glob(os.path.join(REPO_ROOT, '*', '**', '*.py'), recursive=True)):
    relative = os.path.relpath(path, REPO_ROOT)
    if relative.split(os.sep)[0] not in ('tf_detcon', 'launch', 'benchmarks') or relative in own:
      continue
    with open(path, encoding='utf-8') as f:
      found += [f'{relative}:{n}' for n, line in enumerate(f, 1) if switch.search(line)]
  assert not found


def test_methods_are_registered_explicitly():
  """As Model Garden's registry_imports.py: one module imports every method's module; the
  registry imports nothing on lookup."""
  assert 'tf_detcon.modeling.methods.detcon' in IMPORTS['tf_detcon.registry_imports']
  assert 'tf_detcon.registry_imports' in IMPORTS['tf_detcon.training.trainer']
  with open(os.path.join(PACKAGE, 'modeling', 'registry.py'), encoding='utf-8') as f:
    assert 'importlib' not in f.read()
  assert IMPORTS['tf_detcon.modeling.methods'] == []


def test_the_train_step_does_not_climb_back_into_the_host_pipeline():
  """The model gets host batches and imports nothing of `data/`: the step's device-side input
  preparation (colour, seeds) lives below it (`tf_detcon/primitives/color.py`, `seeds.py`), so
  a batch's walk runs data → modeling → blocks → losses, one way."""
  assert 'tf_detcon.primitives.color' in IMPORTS['tf_detcon.modeling.base']
  assert not [f'{m} → {t}' for m, targets in IMPORTS.items() if m.startswith('tf_detcon.modeling')
              for t in targets if t.startswith('tf_detcon.data')]


def test_the_synthetic_scenes_reach_training_only_through_the_evaluation_layer():
  assert 'tf_detcon.evaluation.labelled_sets' in IMPORTS['tf_detcon.training.monitors']
  assert not [f'{m} → {t}' for m, targets in IMPORTS.items() if m.startswith('tf_detcon.training')
              for t in targets if t.startswith('tf_detcon.data.offline')]


def test_no_two_modules_share_a_name_across_layers():
  """One name, one module (once `training/optimization.py` sat beside `configs/optimization.py`
  and `evaluation/datasets.py` beside `data/datasets.py`). `configs/` mirrors the package by
  design, as Model Garden's configs do (`configs/methods.py` ↔ `modeling/methods/`)."""
  names = {}
  for module in IMPORTS:
    if module != 'tf_detcon' and not module.startswith('tf_detcon.configs'):
      names.setdefault(module.rsplit('.', 1)[-1], []).append(module)
  assert not {leaf: modules for leaf, modules in names.items() if len(modules) > 1}


def test_decon_wraps_its_base_through_the_contract_alone():
  """DeCon builds any base through the registry and reaches its target side through the base
  contract's `encode` hook, never by importing a sibling method."""
  methods = [t for t in IMPORTS['tf_detcon.modeling.methods.decon']
             if t.startswith('tf_detcon.modeling.methods.')]
  assert 'tf_detcon.modeling.registry' in IMPORTS['tf_detcon.modeling.methods.decon']
  assert not methods, methods



def test_benchmarks_import_one_another_by_name():
  """A benchmark runs as `python benchmarks/NAME.py`: its folder is then on the path and the
  repository's root is not, so a sibling is imported by its name (pytest.ini puts the folder on
  the tests' path too), never as `benchmarks.NAME`, which fails when the script runs."""
  wrong = []
  for path in sorted(glob.glob(os.path.join(REPO_ROOT, 'benchmarks', '*.py')) +
                     glob.glob(os.path.join(REPO_ROOT, 'tests', '*.py'))):
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      names = ([node.module or ''] if isinstance(node, ast.ImportFrom) else
               [a.name for a in node.names] if isinstance(node, ast.Import) else [])
      wrong += [f'{os.path.relpath(path, REPO_ROOT)}:{node.lineno} {name}' for name in names
                if name.split('.')[0] == 'benchmarks']
  assert not wrong, wrong
