"""No command writes its files into a folder holding what it must keep: the registry's home, a
registered dataset's images or label CSV, or its own source folder (``synth OUT_DIR``,
``preprocess --out``, ``download-external --out``, ``demo --out``). Each refusal is one line,
exit 2, before any work, and changes nothing (issue 9)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from hpatool.registry import REGISTRY_FILE
from tests.support import Invoke, one_line_error, write_labels

DOWNLOAD = ("--base-url", "http://127.0.0.1:9/none", "--size", "32", "--workers", "1")


def snapshot(*folders: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folders``: its bytes and mtime (ns)."""
    return {
        str(p): (p.read_bytes(), p.stat().st_mtime_ns)
        for folder in folders
        if folder.exists()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def images(synth_data: Callable[..., Path], tmp_path: Path, cli: Invoke, home: Path) -> Path:
    """Dataset 'syn': 4 synthetic samples, images in ``tmp_path/images`` and the label CSV
    (``labels.csv``) in ``tmp_path/meta``, so that nothing but the registry guards them."""
    data = tmp_path / "images"
    shutil.copytree(synth_data(4), data)
    meta = tmp_path / "meta"
    meta.mkdir()
    (data / "labels.csv").rename(meta / "labels.csv")
    result = cli("datasets", "add", "syn", "--labels", meta / "labels.csv", "--root", data)
    assert result.exit_code == 0, result.output
    return data


def refused(
    result: Result, message: str, before: dict[str, tuple[bytes, int]], *folders: Path
) -> None:
    """One ``error:`` line, exit 2, and not one file under ``folders`` changed."""
    err = one_line_error(result, 2)
    assert err == f"error: {message}"
    assert snapshot(*folders) == before


def test_synth_refuses_a_registered_image_folder(cli: Invoke, home: Path, images: Path) -> None:
    before = snapshot(images, home, images.parent / "meta")
    result = cli("synth", images, "--samples", "1", "--size", "32")
    refused(
        result,
        f"OUT_DIR {images} is the image folder of registered dataset 'syn'; choose another folder",
        before,
        images,
        home,
        images.parent / "meta",
    )


def test_synth_refuses_the_folder_of_a_label_csv(cli: Invoke, home: Path, images: Path) -> None:
    meta = images.parent / "meta"
    labels = meta / "labels.csv"
    before = snapshot(meta, home)
    labels.unlink()  # not there: synth itself would not see it, the registry does
    result = cli("synth", meta, "--samples", "1", "--size", "32")
    assert one_line_error(result, 2) == (
        f"error: OUT_DIR {meta} holds the label CSV of registered dataset 'syn' ({labels}); "
        "choose another folder"
    )
    assert snapshot(meta, home) == {k: v for k, v in before.items() if k != str(labels)}


def test_synth_refuses_the_registry_home(cli: Invoke, home: Path, images: Path) -> None:
    before = snapshot(home)
    result = cli("synth", home, "--samples", "1", "--size", "32")
    refused(
        result, f"OUT_DIR {home} is hpatool's registry folder; choose another folder", before, home
    )


def test_synth_elsewhere_works_as_before(cli: Invoke, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    result = cli("synth", out, "--samples", "1", "--size", "32")
    assert result.exit_code == 0, result.output
    assert (out / "labels.csv").is_file()
    assert not home.exists()  # no registry made just to check the folder
    again = cli("synth", out, "--samples", "1", "--size", "32")
    assert "already holds a dataset" in one_line_error(again, 2)


def test_preprocess_refuses_another_datasets_folder(
    cli: Invoke, home: Path, images: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    src = synth_data(2, seed=1)
    before = snapshot(images, home)
    for extra in ((), ("--no-register",)):
        result = cli("preprocess", src, "--out", images, "--size", "32", *extra)
        refused(
            result,
            f"--out {images} is the image folder of registered dataset 'syn'; choose another "
            "folder",
            before,
            images,
            home,
        )
    result = cli("preprocess", src, "--out", home, "--size", "32")
    message = f"--out {home} is hpatool's registry folder; choose another folder"
    refused(result, message, before, images, home)


def test_preprocess_source_folder_and_own_rerun(
    cli: Invoke, home: Path, images: Path, tmp_path: Path
) -> None:
    before = snapshot(images, home)
    same = cli("preprocess", images, "--out", images, "--size", "32")
    refused(
        same,
        f"--out {images} is the source folder; write the converted images to another folder",
        before,
        images,
        home,
    )
    out = tmp_path / "small"
    for _ in range(2):  # the rerun resumes in its own registered folder
        result = cli("preprocess", images, "--out", out, "--size", "32")
        assert result.exit_code == 0, result.output
    listed = cli("datasets", "list", "--json")
    assert '"syn-32"' in listed.stdout


def test_download_refuses_another_datasets_folder(
    cli: Invoke, home: Path, images: Path, tmp_path: Path
) -> None:
    labels = write_labels(tmp_path / "ext.csv", ["10580_1610_C1_1"])
    before = snapshot(images, home)
    result = cli("download-external", "--labels", labels, "--out", images, *DOWNLOAD)
    message = (
        f"--out {images} is the image folder of registered dataset 'syn'; choose another folder"
    )
    refused(result, message, before, images, home)
    result = cli("download-external", "--labels", labels, "--out", home, *DOWNLOAD)
    message = f"--out {home} is hpatool's registry folder; choose another folder"
    refused(result, message, before, images, home)


def test_download_refuses_a_raw_folder_that_is_a_dataset(
    cli: Invoke, home: Path, images: Path, tmp_path: Path
) -> None:
    shutil.move(images, tmp_path / "raw")
    images = tmp_path / "raw"
    meta = tmp_path / "meta"
    assert cli("datasets", "remove", "syn").exit_code == 0
    added = cli("datasets", "add", "syn", "--labels", meta / "labels.csv", "--root", images)
    assert added.exit_code == 0, added.output
    labels = write_labels(tmp_path / "ext.csv", ["10580_1610_C1_1"])
    before = snapshot(images, home)
    result = cli(
        "download-external", "--labels", labels, "--out", tmp_path, "--keep-raw", *DOWNLOAD
    )
    refused(
        result,
        f"--out {images} is the image folder of registered dataset 'syn'; choose another folder",
        before,
        images,
        home,
    )


def test_demo_will_not_clear_a_registered_dataset(
    cli: Invoke, home: Path, images: Path, tmp_path: Path
) -> None:
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / ".hpatool-demo").write_text("made by hpatool demo\n")
    train = demo / "train"
    shutil.move(images, train)
    assert cli("datasets", "remove", "syn").exit_code == 0
    meta = tmp_path / "meta"
    added = cli("datasets", "add", "keep", "--labels", meta / "labels.csv", "--root", train)
    assert added.exit_code == 0, added.output
    before = snapshot(demo, home)
    result = cli("demo", "--out", demo)
    refused(
        result,
        f"--out {demo} holds ({train}) the image folder of registered dataset 'keep'; choose "
        "another folder",
        before,
        demo,
        home,
    )
    result = cli("demo", "--out", home)
    message = f"--out {home} is hpatool's registry folder; choose another folder"
    refused(result, message, before, demo, home)
    assert (home / REGISTRY_FILE).is_file()
