"""The pretraining methods, one module each. Each registers its model with
`registry.register_method`; `tf_detcon/registry_imports.py` imports them all."""
