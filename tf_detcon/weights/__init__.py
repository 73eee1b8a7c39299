"""Released ResNet weights into Model Garden's ResNet: DeepMind's haiku `.npy` files and PyTorch
state dicts in torchvision layout (`launch/import_weights.py`)."""
