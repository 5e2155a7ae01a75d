"""The VLA model side: presets, the offline text tokenizer, action heads and VLAPolicy (vla.py).

Import the submodules directly (`from etc_training.models.vla import VLAPolicy`): importing this package
does not import torch or transformers.
"""
