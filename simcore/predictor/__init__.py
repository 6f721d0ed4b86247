"""DejaVu-style neuron predictors: trained from a trace by ``simcore train-predictor``
(:mod:`simcore.predictor.train`, torch), stored as ``.npz`` and run in NumPy by method ``dejavu``
(:mod:`simcore.predictor.store`)."""
