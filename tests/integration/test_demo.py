from __future__ import annotations

from pathlib import Path

from tests.conftest import Invoke


def test_demo_runs_in_its_own_home(cli: Invoke, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = cli("demo", "--out", out, "--samples", "40")
    assert res.exit_code == 0, res.output
    assert (out / "home" / "registry.sqlite").exists()
    assert (out / "train" / "labels.csv").exists()
    assert (out / "class-counts.png").exists()
    assert "Demo finished in" in res.stdout
    assert not (home / "registry.sqlite").exists()  # the user's registry is untouched
    # a rerun clears the previous demo and succeeds again
    assert cli("demo", "--out", out, "--samples", "40").exit_code == 0


def test_demo_refuses_a_foreign_folder(cli: Invoke, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    res = cli("demo", "--out", tmp_path, "--samples", "40")
    assert res.exit_code == 2
    assert "not empty and not an earlier demo's folder" in res.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"
