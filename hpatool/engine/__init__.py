"""Training and evaluation: the fit loop (``train``), metrics, checkpoints.

``train`` imports torch; ``metrics`` only numpy; ``checkpoint`` imports torch lazily.
"""
