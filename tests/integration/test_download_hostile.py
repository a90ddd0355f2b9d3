"""``download-external`` against a hostile server and a hostile disk: bodies without end, gzip
bombs, tiny placeholder images, damaged files left in ``--out``, credentials in ``--base-url``,
URLs that need encoding, and two runs into one folder (issue 9)."""

from __future__ import annotations

import base64
import csv
import json
import os
import socket
from pathlib import Path

import pytest
from PIL import Image

from hpatool.convert.lock import LOCK_FILE, output_lock
from hpatool.download.urls import check_base_url, redact_url
from hpatool.errors import UsageError
from hpatool.ids import COLOURS
from hpatool.options import DownloadConfig
from hpatool.registry import Registry
from tests.integration.hpa_server import HpaServer, stain_jpeg
from tests.support import FAST, Invoke, assert_sample_pngs, leftovers, one_line_error, write_labels

IDS = ["10580_1610_C1_1", "63683_si35_H1_11", "1000_1_A1_2"]
TOO_LARGE = (
    "body too large: more than --max-file-size 1 MiB (decoded); not an HPA image, or raise "
    "--max-file-size"
)

#: The length of the ``big:2`` body for IDS[0]'s green stain: its JPEG and 2 MiB of zeros.
BIG = len(stain_jpeg(IDS[0], "green")) + (2 << 20)


def download(cli: Invoke, labels: Path, out: Path, base_url: str, *extra: str):  # type: ignore[no-untyped-def]
    return cli(
        "download-external", "--labels", labels, "--out", out, "--base-url", base_url, *extra, *FAST
    )


def failure_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "failures.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def failed_line(out: Path, failed: int, samples: int) -> str:
    return (
        f"error: {failed} of {samples} samples failed; see {out.resolve() / 'failures.csv'}; "
        "rerun the same command to retry them"
    )


# --------------------------------------------------------------------------- body size cap


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("endless!", TOO_LARGE),
        ("gzipbomb:8!", TOO_LARGE),
        ("big:2!", TOO_LARGE.replace("more than", f"Content-Length {BIG:,} bytes, over")),
    ],
)
def test_a_body_over_the_cap_is_one_failed_file_not_retried(
    behaviour: str, error: str, cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:2])
    out = tmp_path / "out"
    server.fault(IDS[0], "green", behaviour)
    result = download(cli, labels, out, server.base_url, "--max-file-size", "1")
    assert one_line_error(result, 1) == failed_line(out, 1, 2)
    assert server.count(IDS[0], "green") == 1  # a permanent fault of the file: asked once
    rows = failure_rows(out)
    assert [(r["Id"], r["colour"], r["status"], r["error"]) for r in rows] == [
        (IDS[0], "green", "200", error)
    ]
    assert leftovers(out) == [] and not (out / f"{IDS[0]}_green.png").exists()
    assert sum(p.stat().st_size for p in out.iterdir()) < 1 << 20  # nothing big was kept
    assert_sample_pngs(out, IDS[1])
    with Registry.open(home) as reg:
        assert {s.id: s.status for s in reg.samples("hpa-v18")} == {
            IDS[0]: "failed",
            IDS[1]: "done",
        }
    # the default cap (64 MiB) lets a small gzip-encoded body through
    server.fault(IDS[0], "green", "gzipbomb:0")
    again = download(cli, labels, out, server.base_url)
    assert again.exit_code == 0, again.output
    assert_sample_pngs(out, IDS[0])
    assert not (out / "failures.csv").exists()


def test_max_file_size_is_checked(cli: Invoke, server: HpaServer, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:1])
    result = download(cli, labels, tmp_path / "out", server.base_url, "--max-file-size", "0")
    assert one_line_error(result, 2) == "error: invalid --max-file-size 0: give MiB from 1 to 65536"
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- tiny images


@pytest.mark.parametrize(("size", "least"), [("32", 32), ("0", 64)])
def test_a_tiny_image_is_a_failed_file(
    size: str, least: int, cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:2])
    out = tmp_path / "out"
    server.fault(IDS[0], "blue", "tiny!")
    args = ["--labels", labels, "--out", out, "--base-url", server.base_url, "--retries", "1"]
    result = cli("download-external", *args, *FAST, "--size", size)
    assert one_line_error(result, 1) == failed_line(out, 1, 2)
    rows = failure_rows(out)
    assert [(r["Id"], r["colour"], r["error"]) for r in rows] == [
        (
            IDS[0],
            "blue",
            f"downloaded file image is only 1x1 px, under the {least} px a field has at least on "
            "its short side (a placeholder or error image?) (after 2 attempts)",
        )
    ]
    root = out if size != "0" else out / "raw"
    suffix = "png" if size != "0" else "jpg"
    assert not (root / f"{IDS[0]}_blue.{suffix}").exists()
    assert (root / f"{IDS[1]}_blue.{suffix}").exists()
    assert leftovers(out) == [] and leftovers(out / "raw") == []


# --------------------------------------------------------------------------- damaged outputs


def test_damaged_files_in_out_are_fetched_again(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS)
    out = tmp_path / "out"
    assert download(cli, labels, out, server.base_url, "--keep-raw").exit_code == 0
    empty, cut, raw_cut = (
        out / f"{IDS[0]}_red.png",
        out / f"{IDS[1]}_green.png",
        out / "raw" / f"{IDS[2]}_yellow.jpg",
    )
    empty.write_bytes(b"")
    cut.write_bytes(cut.read_bytes()[:-20])
    raw_cut.write_bytes(raw_cut.read_bytes()[:200])
    server.reset_counts()
    result = download(cli, labels, out, server.base_url, "--keep-raw", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["already_done"], summary["completed"]) == (0, 3)
    # the two PNGs are made from their raw JPEGs, no request; the cut JPEG is fetched again
    assert (summary["files_converted"], summary["files_fetched"]) == (2, 1)
    assert server.total_requests == 1 and server.count(IDS[2], "yellow") == 1
    for sample_id in IDS:
        assert_sample_pngs(out, sample_id)
    with Image.open(raw_cut) as img:
        img.load()
    verify = cli("datasets", "verify", "hpa-v18", "--size", "32")
    assert verify.exit_code == 0, verify.output


# --------------------------------------------------------------------------- the base URL


def test_credentials_in_the_base_url_are_used_but_never_stored_or_shown(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:2])
    out = tmp_path / "out"
    base = server.base_url.replace("http://", "http://anna:s3cr%40t@")
    shown = server.base_url.replace("http://", "http://anna:***@")
    server.fault(IDS[0], "red", "403!")
    result = download(cli, labels, out, base, "--json")
    assert one_line_error(result, 1) == failed_line(out, 1, 2)
    assert server.authorizations == {"Basic " + base64.b64encode(b"anna:s3cr@t").decode()}
    summary = json.loads(result.stdout)
    assert summary["failures"][0]["url"] == f"{shown}/10580/1610_C1_1_red.jpg"
    assert failure_rows(out)[0]["url"] == f"{shown}/10580/1610_C1_1_red.jpg"
    with Registry.open(home) as reg:
        assert reg.dataset("hpa-v18").provenance["base_url"] == shown
    show = cli("datasets", "show", "hpa-v18")
    texts = [result.stdout, result.stderr, (out / "failures.csv").read_text(), show.stdout]
    texts += [p.read_bytes().decode("latin-1") for p in home.rglob("*") if p.is_file()]
    assert not [t for t in texts if "s3cr" in t]
    # bad URLs with a password are named without it
    with pytest.raises(UsageError) as err:
        check_base_url("ftp://anna:s3cret@h.example/images")
    assert "s3cret" not in str(err.value) and "anna:***@h.example" in str(err.value)
    assert redact_url("http://h.example/x") == "http://h.example/x"


def test_a_base_url_with_spaces_or_non_ascii_is_encoded(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:1])
    out = tmp_path / "out"
    base = server.base_url.replace("/images", "/hpa images/\u00e4")
    result = download(cli, labels, out, base)
    assert result.exit_code == 0, result.output
    assert_sample_pngs(out, IDS[0])
    assert server.requests["/hpa images/\u00e4/10580/1610_C1_1_red.jpg"] == 1
    assert (
        check_base_url("http://h.example/a b/%zz/\u00e4/") == "http://h.example/a%20b/%25zz/%C3%A4"
    )
    assert check_base_url("http://b\u00fccher.example/x") == "http://xn--bcher-kva.example/x"
    bad = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        tmp_path / "o2",
        "--base-url",
        "http://h .example/images",
    )
    assert one_line_error(bad, 2) == (
        "error: invalid --base-url 'http://h .example/images': a space or control character in "
        "the host; e.g. http://v18.proteinatlas.org/images"
    )
    assert not (tmp_path / "o2").exists()


# --------------------------------------------------------------------------- one run per folder


def test_a_second_run_into_the_same_out_is_refused(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS)
    out = tmp_path / "out"
    out.mkdir()
    part = out / f"{IDS[0]}_red.jpg.part"
    part.write_bytes(b"half a body")
    (out / "failures.csv").write_text("Id,colour,url,status,error\n")
    host = socket.gethostname()
    with output_lock(out.resolve(), "download-external"):
        info = json.loads((out / LOCK_FILE).read_text())
        result = download(cli, labels, out, server.base_url)
        line = one_line_error(result, 1)
        assert line == (
            f"error: {out.resolve()} is in use by pid {os.getpid()} on {host} "
            f"(download-external, started {info['started']}); wait for that run to finish (or "
            "stop it), or give this download-external another --out"
        )
    assert part.read_bytes() == b"half a body"  # the other run's files are untouched
    assert (out / "failures.csv").read_text() == "Id,colour,url,status,error\n"
    assert server.total_requests == 0
    with Registry.open(home) as reg:
        assert not reg.has_dataset("hpa-v18")
    # The lock of a run that ended (or was killed) is taken over: its file stays, unlocked.
    (out / LOCK_FILE).write_text(json.dumps({**info, "pid": 999_999}))
    result = download(cli, labels, out, server.base_url)
    assert result.exit_code == 0, result.output
    assert all((out / f"{i}_{c}.png").exists() for i in IDS for c in COLOURS)


def test_shards_share_a_folder_but_not_a_shard(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS)
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out.resolve(), "download-external", "1/2"):
        same = download(cli, labels, out, server.base_url, "--shard", "1/2")
        assert "(download-external --shard 1/2, started" in one_line_error(same, 1)
        whole = download(cli, labels, out, server.base_url)
        assert "(download-external --shard 1/2, started" in one_line_error(whole, 1)
        other = download(cli, labels, out, server.base_url, "--shard", "2/2")
        assert other.exit_code == 0, other.output


def test_shards_registering_at_once_end_as_one_dataset(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard 2 registers the dataset between shard 1's first check and its write: shard 1
    adopts it (the check is made again inside the write transaction) instead of failing."""
    import hpatool.download as dl

    labels = write_labels(tmp_path / "labels.csv", IDS)
    real = dl.prepare_out_dir

    def other_shard_first(out_dir: Path) -> Path:
        monkeypatch.setattr(dl, "prepare_out_dir", real)  # once
        config = DownloadConfig(base_url=server.base_url, shard="2/2", size=32, workers=1)
        with Registry.open(home) as reg:
            dl.download_external(reg, labels, tmp_path / "out2", config)
        return real(out_dir)

    monkeypatch.setattr(dl, "prepare_out_dir", other_shard_first)
    result = download(cli, labels, tmp_path / "out1", server.base_url, "--shard", "1/2")
    assert result.exit_code == 0, result.output
    with Registry.open(home) as reg:
        assert [r.name for r in reg.datasets()] == ["hpa-v18"]
        assert {s.id: s.status for s in reg.samples("hpa-v18")} == dict.fromkeys(IDS, "done")


def test_an_out_folder_that_is_not_utf8_is_refused(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:1])
    out = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"hpa\xff"))
    result = download(cli, labels, Path(out), server.base_url)
    assert one_line_error(result, 2) == (
        f"error: the --out folder {out!r} has a name that is not valid UTF-8; rename it (e.g. "
        "with 'convmv -f latin1 -t utf8') and rerun"
    )
    assert not os.path.exists(out) and server.total_requests == 0
    with Registry.open(home) as reg:
        assert reg.datasets() == []
