"""Training and prediction engines (see docs/architecture.md for the module map).

``config`` and ``distributed`` import no torch; ``train``, ``build``, ``state``, ``scoring`` and
``predict`` do; ``metrics`` needs only numpy; ``checkpoint`` imports torch lazily.
"""
