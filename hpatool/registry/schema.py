"""The registry's schema: the ordered migrations and the version they lead to.

The schema version lives in ``PRAGMA user_version``; ``Registry.open`` applies the missing
migrations in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

# Ordered migrations: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('train', 'test', 'external')),
        root TEXT,
        labels_path TEXT,
        labels_sha256 TEXT,
        parent TEXT,
        provenance TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE samples (
        dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        sample_id TEXT NOT NULL,
        target TEXT,
        status TEXT,
        PRIMARY KEY (dataset_id, sample_id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX samples_order ON samples(dataset_id, idx);
    CREATE TABLE splits (
        dataset_id INTEGER PRIMARY KEY REFERENCES datasets(id) ON DELETE CASCADE,
        folds INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE folds (
        dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        sample_id TEXT NOT NULL,
        fold INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, sample_id)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        arch TEXT NOT NULL,
        datasets TEXT NOT NULL,
        fold INTEGER,
        config TEXT NOT NULL DEFAULT '{}',
        best_f1 REAL,
        best_epoch INTEGER,
        epochs_done INTEGER NOT NULL DEFAULT 0,
        out_dir TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'running',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 1 -> 2: a fold row belongs to a sample, not only to its dataset, so that removing a sample
    # (or a dataset, and adding it again) can never leave folds for ids it no longer has.
    """
    CREATE TABLE folds_v2 (
        dataset_id INTEGER NOT NULL,
        sample_id TEXT NOT NULL,
        fold INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, sample_id),
        FOREIGN KEY (dataset_id, sample_id) REFERENCES samples(dataset_id, sample_id)
            ON DELETE CASCADE
    ) WITHOUT ROWID;
    INSERT INTO folds_v2 (dataset_id, sample_id, fold)
        SELECT f.dataset_id, f.sample_id, f.fold FROM folds f
        JOIN samples s ON s.dataset_id = f.dataset_id AND s.sample_id = f.sample_id;
    DROP TABLE folds;
    ALTER TABLE folds_v2 RENAME TO folds;
    """,
    # 2 -> 3: duplicates (``hpatool dedup``): each sample's perceptual hash, with the signature
    # (sizes, modification times) of the files it was made from; the duplicate clusters; and
    # which datasets were clustered with which --max-distance.
    """
    CREATE TABLE sample_hashes (
        dataset_id INTEGER NOT NULL,
        sample_id TEXT NOT NULL,
        signature TEXT NOT NULL,
        method TEXT NOT NULL,
        hash_green INTEGER,
        hash_blue INTEGER,
        PRIMARY KEY (dataset_id, sample_id),
        FOREIGN KEY (dataset_id, sample_id) REFERENCES samples(dataset_id, sample_id)
            ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE clusters (
        dataset_id INTEGER NOT NULL,
        sample_id TEXT NOT NULL,
        cluster INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, sample_id),
        FOREIGN KEY (dataset_id, sample_id) REFERENCES samples(dataset_id, sample_id)
            ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX clusters_by_number ON clusters(cluster);
    CREATE TABLE dedup_runs (
        dataset_id INTEGER PRIMARY KEY REFERENCES datasets(id) ON DELETE CASCADE,
        max_distance INTEGER NOT NULL,
        datasets TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # 3 -> 4: experiments (``hpatool cv``): a run may belong to one, as the model of its fold;
    # an experiment records its datasets (the first one's split gives the folds) and the
    # options its runs were started with.
    """
    ALTER TABLE runs ADD COLUMN experiment TEXT;
    CREATE INDEX runs_by_experiment ON runs(experiment);
    CREATE TABLE experiments (
        name TEXT PRIMARY KEY,
        datasets TEXT NOT NULL,
        created_at TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{}'
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
