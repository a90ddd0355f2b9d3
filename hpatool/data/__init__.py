"""Training data: folds, the torch Dataset over registry samples, transforms and sampling.

Submodules (imported on demand; only ``samples`` and ``sampling`` import torch):

- ``split``: multilabel-stratified folds stored in the registry.
- ``transforms``: random / centre crops, the 8 dihedral transforms, per-channel normalisation.
- ``samples``: ``HpaDataset`` (four PNGs, or the decoded cache -> a uint8 ``(4, crop, crop)``
  tensor + 28 targets) and ``train_val_items`` (which registry samples train and which
  validate).
- ``cache``: the decoded sample cache (``hpatool datasets cache``).
- ``sampling``: per-class oversampling multipliers and the seeded weighted, distributed sampler.
"""
