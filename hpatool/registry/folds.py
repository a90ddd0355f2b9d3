"""The registry's splits and folds: storing a dataset's fold assignment, reading it back
(checked row by row), and the per-fold class counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpatool.errors import DataError
from hpatool.registry.records import bad_row, now
from hpatool.registry.transaction import RegistryConnection

if TYPE_CHECKING:
    from hpatool.registry.records import DatasetRecord, Sample


class FoldQueries(RegistryConnection):
    """The ``splits`` and ``folds`` tables (a mixin of ``Registry``, beside ``DatasetQueries``,
    whose lookups it uses)."""

    if TYPE_CHECKING:

        def dataset(self, name: str, *, usable: bool = True) -> DatasetRecord: ...

        def samples(self, name: str) -> list[Sample]: ...

    def set_folds(
        self,
        name: str,
        sample_ids: Sequence[str],
        folds_of: Sequence[int],
        *,
        folds: int,
        seed: int,
    ) -> None:
        """Store a dataset's fold assignment (replacing any earlier one) in one transaction.

        ``sample_ids`` must be distinct samples of the dataset (all of them, or those whose
        images are there: the others get no fold), checked inside the transaction: folds made
        from samples that another command has since replaced are refused."""
        if len(sample_ids) != len(folds_of):
            raise ValueError("sample_ids and folds_of differ in length")
        with self.transaction() as conn:
            record = self.dataset(name)
            current = {
                r[0]
                for r in conn.execute(
                    "SELECT sample_id FROM samples WHERE dataset_id = ?", (record.id,)
                )
            }
            if len(set(sample_ids)) != len(sample_ids) or not current.issuperset(sample_ids):
                raise DataError(
                    f"dataset {name!r} changed in {self.path} while it was being split (it was "
                    "removed, added again or grew); nothing was stored: run the split again"
                )
            conn.execute("DELETE FROM folds WHERE dataset_id = ?", (record.id,))
            conn.execute("DELETE FROM splits WHERE dataset_id = ?", (record.id,))
            conn.execute(
                "INSERT INTO splits (dataset_id, folds, seed, created_at) VALUES (?, ?, ?, ?)",
                (record.id, folds, seed, now()),
            )
            conn.executemany(
                "INSERT INTO folds (dataset_id, sample_id, fold) VALUES (?, ?, ?)",
                ((record.id, sid, int(k)) for sid, k in zip(sample_ids, folds_of, strict=True)),
            )

    def split_info(self, name: str) -> dict[str, Any] | None:
        """``{"folds": n, "seed": s, "created_at": ...}`` if the dataset is split, else ``None``."""
        record = self.dataset(name)
        row = self.conn.execute(
            "SELECT folds, seed, created_at FROM splits WHERE dataset_id = ?", (record.id,)
        ).fetchone()
        if row is None:
            return None
        folds, seed = row[0], row[1]
        for column, value, ok in (
            ("folds", folds, isinstance(folds, int) and 2 <= folds <= 1000),
            ("seed", seed, isinstance(seed, int) and seed >= 0),
        ):
            if not ok:
                raise DataError(
                    bad_row(
                        self.path,
                        "splits",
                        f"dataset {name!r}",
                        column,
                        value,
                        "not a number of folds" if column == "folds" else "not a seed",
                        f"split the dataset again: 'hpatool split {name} --force'",
                    )
                )
        return {"folds": folds, "seed": seed, "created_at": row[2]}

    def folds(self, name: str) -> dict[str, int]:
        """Fold of each sample id (empty if the dataset is not split).

        A fold outside the split's ``0..folds-1``, or a fold of an id the dataset does not have,
        is a ``DataError`` naming the row (only a hand edit or an old registry makes one)."""
        record = self.dataset(name)
        info = self.split_info(name)
        n = info["folds"] if info else 0
        rows = self.conn.execute(
            "SELECT f.sample_id, f.fold, s.sample_id IS NULL FROM folds f LEFT JOIN samples s"
            " ON s.dataset_id = f.dataset_id AND s.sample_id = f.sample_id"
            " WHERE f.dataset_id = ?",
            (record.id,),
        )
        out: dict[str, int] = {}
        fix = f"redo the split with 'hpatool split {name} --folds {n or 5} --force'"
        for sample_id, k, stale in rows:
            where = f"dataset {name!r}, sample {sample_id!r}"
            if stale:
                why = "the dataset has no such sample"
                raise DataError(
                    bad_row(self.path, "folds", where, "sample_id", sample_id, why, fix)
                )
            if type(k) is not int or not 0 <= k < n:
                why = f"the split has folds 0..{n - 1}" if n else "the dataset is not split"
                raise DataError(bad_row(self.path, "folds", where, "fold", k, why, fix))
            out[sample_id] = k
        return out

    def fold_class_counts(self, name: str) -> list[list[int]] | None:
        """Samples of each class 0..27 in each fold, ``[fold][class]``; ``None`` if not split."""
        info = self.split_info(name)
        if info is None:
            return None
        counts = [[0] * 28 for _ in range(info["folds"])]
        folds = self.folds(name)
        for sample in self.samples(name):
            k = folds.get(sample.id)
            if k is None or sample.target is None:
                continue
            for c in sample.target:
                counts[k][c] += 1
        return counts
