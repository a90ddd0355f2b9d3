"""Training: a run built from its options (`build`), its epochs (`epochs`, over the step functions
of `steps`), its state and checkpoints (`state`), loss (`losses`), optimizer and schedule
(`optim`), weight average (`ema`), progress events (`events`, `tensorboard`), resume and
registration (`resume`), provenance, and `cv` over the folds (`fit` is the entry point)."""
