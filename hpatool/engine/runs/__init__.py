"""Runs after training: a run folder and its files (`run_dir`), out-of-fold predictions (`oof`),
listing, comparing and removing runs (`admin`), `runs import`, `runs average`, and experiments
(`experiments`)."""
