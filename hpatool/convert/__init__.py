"""Converting raw images to sample channel files, shared by ``preprocess`` and
``download-external``.

- :mod:`hpatool.convert.workers`: convert (or check) ONE file, returning a typed
  :class:`~hpatool.convert.workers.Outcome`; never raises for a bad file.
- :mod:`hpatool.convert.pool`: the process pool those run in, a bounded map over it, and the
  signal handling around it (workers ignore Ctrl-C and die with the parent; SIGTERM stops the
  work as Ctrl-C does; clean-ups are not cut short).
- :mod:`hpatool.convert.outdir`: an output folder's bookkeeping: the settings manifest,
  leftovers of killed runs, the failures CSV.

Outcomes are kinds (:class:`~hpatool.convert.workers.OutcomeKind`), never message prefixes: the
messages are for people.
"""
