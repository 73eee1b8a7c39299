"""Keras 3 / KerasHub encoders: importing this package registers `DenseResNetBackbone` and its
image converter, so that `keras_hub.models.Backbone.from_preset` loads our presets on any
backend. It imports only Keras and KerasHub (the writer, `preset.py`, needs TensorFlow)."""

from tf_detcon.keras3.backbone import DenseResNetBackbone
from tf_detcon.keras3.backbone import DenseResNetImageConverter
