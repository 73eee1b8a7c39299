"""tf_detcon: dense self-supervised pretraining (DetCon, DetCo, DeCon) in TF2 / Keras."""

__version__ = '0.1.0'
