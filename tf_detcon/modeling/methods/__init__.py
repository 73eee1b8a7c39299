"""The pretraining methods. Every module here is imported with the package, and registers its
model with `registry.register_method`; adding a method is adding a module."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f'{__name__}.{_module.name}')
