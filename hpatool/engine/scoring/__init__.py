"""Scoring: images cut into views and run through a model (`score`), one model or an ensemble of
runs (`model_source`, `ensemble`), which samples are scored (`selection`), and the commands
built on it: `predict` (with `predict_files`), `evaluate`, prior-matched thresholds (`prior`)
and `blend`."""
