"""Every module that registers something, imported once: the experiments (Model Garden's
`exp_factory`), the methods' models (`modeling.registry`) and the VOC segmentation fine-tuning
(its experiment, decoder and task), as Model Garden's `official/vision/registry_imports.py`
does for its tasks and configs.

The launchers and the trainer import this module. A new method adds its model's module here
(docs/architecture.md, "How to add a method").
"""

# pylint: disable=unused-import
from tf_detcon.configs import experiments
from tf_detcon.finetuning import segmentation
from tf_detcon.modeling.methods import decon
from tf_detcon.modeling.methods import detco
from tf_detcon.modeling.methods import detcon
