"""``hpatool download-external`` against a real aiohttp server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import csv
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpatool.download import Shard, parse_colours
from hpatool.download.retry import backoff_delay, parse_retry_after
from hpatool.download.urls import check_base_url, image_url
from hpatool.errors import UsageError
from hpatool.ids import COLOURS
from hpatool.registry import Registry
from tests.integration.hpa_server import HpaServer, image_path
from tests.support import (
    FAST,
    Invoke,
    assert_sample_pngs,
    leftovers,
    start_hpatool,
    wait_for_pngs,
    write_labels,
)

# Every id form of HPAv18RBGY_wodpl.csv, and some more plain ones.
IDS = [
    "10580_1610_C1_1",
    "63683_si35_H1_11",
    "11651_1732_F3_13_cr580610dc203b9",
    "10580_1756_B1_2",
    "1000_1_A1_1",
    "1000_1_A1_2",
    "1000_1_A2_1",
    "1000_1_A2_2",
]


# --------------------------------------------------------------------------- pure helpers


def test_urls_for_every_hpav18_id_form(hpav18_csv: Path) -> None:
    base = "http://v18.proteinatlas.org/images"
    assert image_url(base, "10580_1610_C1_1", "red") == f"{base}/10580/1610_C1_1_red.jpg"
    assert image_url(base, "63683_si35_H1_11", "yellow") == f"{base}/63683/si35_H1_11_yellow.jpg"
    assert (
        image_url(base + "/", "11651_1732_F3_13_cr580610dc203b9", "blue")
        == f"{base}/11651/1732_F3_13_cr580610dc203b9_blue.jpg"
    )
    with open(hpav18_csv, encoding="utf-8") as fh:
        ids = [row["Id"] for row in csv.DictReader(fh)]
    assert len(ids) == 74606
    for sample_id in ids:
        url = image_url(base, sample_id, "green")
        antibody, _, rest = sample_id.partition("_")
        assert url == f"{base}/{antibody}/{rest}_green.jpg"


def test_option_parsers() -> None:
    assert Shard.parse("2/4") == Shard(2, 4)
    for bad in ("3/2", "0/0", "x", "1/0", "0/3", "-1/2", "1/2/3", ""):
        with pytest.raises(UsageError, match="--shard"):
            Shard.parse(bad)
    assert parse_colours("green, red") == ("green", "red")
    for bad in ("purple", "red,red", ","):
        with pytest.raises(UsageError):
            parse_colours(bad)
    assert check_base_url("https://h.example/images/") == "https://h.example/images"
    for bad in ("ftp://h/images", "images", "http://", "http://h/x?y=1"):
        with pytest.raises(UsageError):
            check_base_url(bad)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("1e9") == 120.0
    assert parse_retry_after("soon") is None
    assert 0 < parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT") <= 120  # type: ignore[operator]
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert backoff_delay(3, 0.5, retry_after=7.0) == 7.0
    assert all(0 <= backoff_delay(k, 0.5) <= min(60, 0.5 * 2 ** (k - 1)) for k in range(1, 40))


def test_shards_are_deterministic_disjoint_and_cover_everything(hpav18_csv: Path) -> None:
    with open(hpav18_csv, encoding="utf-8") as fh:
        ids = [row["Id"] for row in csv.DictReader(fh)]
    shards = [Shard(i, 4) for i in range(1, 5)]
    counts = [sum(1 for s in ids if s in shard) for shard in shards]
    assert sum(counts) == len(ids)
    assert all(abs(c - len(ids) / 4) < 0.02 * len(ids) for c in counts), counts
    assert all(sum(1 for sh in shards if s in sh) == 1 for s in ids[:2000])


# --------------------------------------------------------------------------- end to end


def test_faults_are_retried_and_404s_reported(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS)
    out = tmp_path / "out"
    server.fault(IDS[0], "red", "500", "503")
    server.fault(IDS[0], "green", "429:0.2")
    server.fault(IDS[1], "red", "truncate")
    server.fault(IDS[1], "green", "stall:3")
    server.fault(IDS[1], "blue", "stallbody:3")
    server.fault(IDS[2], "red", "html", "htmljpg", "short")
    server.fault(IDS[2], "yellow", "500", "truncate", "429:0.1")
    server.fault(IDS[3], "yellow", "404!")  # permanent: never retried
    server.fault(IDS[4], "green", "403!")
    server.fault(IDS[5], "blue", "html!")  # a soft error page every time: gives up
    started = time.monotonic()
    result = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        out,
        "--base-url",
        server.base_url,
        "--retries",
        "4",
        "--concurrency",
        "8",
        *FAST,
    )
    assert time.monotonic() - started < 30
    assert result.exit_code == 1, result.output
    ok_ids = [IDS[0], IDS[1], IDS[2], IDS[6], IDS[7]]
    for sample_id in ok_ids:
        assert_sample_pngs(out, sample_id)
    assert leftovers(out) == []
    assert not (out / "raw").exists()
    # 404 and 403 are asked once; the soft error page 1 + 4 retries times
    assert server.count(IDS[3], "yellow") == 1
    assert server.count(IDS[4], "green") == 1
    assert server.count(IDS[5], "blue") == 5
    assert server.count(IDS[0], "red") == 3
    with open(out / "failures.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["Id"], r["colour"], r["status"]) for r in rows] == [
        (IDS[3], "yellow", "404"),
        (IDS[4], "green", "403"),
        (IDS[5], "blue", "200"),
    ]
    assert rows[0]["url"] == server.base_url + "/10580/1756_B1_2_yellow.jpg"
    assert "404" in rows[0]["error"]
    assert "not an image" in rows[2]["error"]
    # the 404 is missing on the server, not a failure a rerun can fix
    assert "2 samples failed (2 files)" in result.stdout and "failures.csv" in result.stdout
    assert "error: 2 of 8 samples failed" in result.stderr
    assert "warning: 1 sample missing on the server (404), skipped on reruns" in result.stderr
    with Registry.open(home) as reg:
        statuses = {s.id: s.status for s in reg.samples("hpa-v18")}
        record = reg.dataset("hpa-v18")
    expected = {i: ("failed" if i in IDS[4:6] else "done") for i in IDS}
    assert statuses == {**expected, IDS[3]: "missing"}
    assert record.kind == "external"
    assert record.root == out.resolve()
    assert record.provenance["base_url"] == server.base_url
    assert record.provenance["size"] == 32
    assert record.provenance["channel_rule"] == "stain"
    assert record.labels_sha256 and record.provenance["labels_sha256"] == record.labels_sha256

    # A rerun asks nothing for finished samples nor for the one missing on the server, only for
    # the failed files (the rest of their samples is on disk).
    server.reset_counts()
    again = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        out,
        "--base-url",
        server.base_url,
        "--retries",
        "0",
        *FAST,
    )
    assert again.exit_code == 1
    assert dict(server.requests) == {
        image_path(IDS[4], "green"): 1,
        image_path(IDS[5], "blue"): 1,
    }
    with open(out / "failures.csv", encoding="utf-8", newline="") as fh:
        assert [r["Id"] for r in csv.DictReader(fh)] == [IDS[3], IDS[4], IDS[5]]
    # Once the server has them, a third run with --retry-missing completes and removes
    # failures.csv.
    server.faults.clear()
    server.reset_counts()
    third = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        out,
        "--base-url",
        server.base_url,
        "--json",
        "--retry-missing",
        *FAST,
    )
    assert third.exit_code == 0, third.output
    assert server.total_requests == 3
    assert not (out / "failures.csv").exists()
    for sample_id in IDS:
        assert_sample_pngs(out, sample_id)
    show = cli("datasets", "show", "hpa-v18")
    assert show.exit_code == 0
    for text in ("base_url", server.base_url, "labels_sha256", "channel_rule", "tool_version"):
        assert text in show.stdout


def test_retry_after_is_honoured(cli: Invoke, server: HpaServer, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:1])
    server.fault(IDS[0], "red", "429:1")
    result = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        tmp_path / "out",
        "--base-url",
        server.base_url,
        "--colors",
        "red",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    times = [t for t, path, _ in server.log if path == image_path(IDS[0], "red")]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.9


def test_size_zero_keeps_raw_jpegs_then_converts_them_without_requests(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:3])
    out = tmp_path / "out"
    result = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        out,
        "--base-url",
        server.base_url,
        "--size",
        "0",
        "--timeout",
        "2",
    )
    assert result.exit_code == 0, result.output
    raws = sorted(p.name for p in (out / "raw").iterdir())
    assert raws == sorted(f"{i}_{c}.jpg" for i in IDS[:3] for c in COLOURS)
    assert not list(out.glob("*.png"))
    assert (out / "raw" / f"{IDS[0]}_red.jpg").read_bytes() == server.body(IDS[0], "red")
    with Registry.open(home) as reg:
        assert reg.dataset("hpa-v18").root == (out / "raw").resolve()
    # Converting later reuses the raw files: no request at all.
    server.reset_counts()
    result = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        out,
        "--base-url",
        server.base_url,
        "--size",
        "32",
        "--channel-rule",
        "luma",
    )
    assert result.exit_code == 0, result.output
    assert server.total_requests == 0
    for sample_id in IDS[:3]:
        assert_sample_pngs(out, sample_id)
    with Registry.open(home) as reg:
        record = reg.dataset("hpa-v18")
    assert record.root == out.resolve()
    # Other settings into the same folder are refused, with the fix.
    result = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        out,
        "--base-url",
        server.base_url,
        "--size",
        "64",
    )
    assert result.exit_code == 2
    assert "--size 32" in result.stderr and "another --out" in result.stderr


def test_keep_raw_stain_rule_values(cli: Invoke, server: HpaServer, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:1])
    out = tmp_path / "out"
    result = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        out,
        "--base-url",
        server.base_url,
        "--keep-raw",
        "--size",
        "64",
    )
    assert result.exit_code == 0, result.output
    for colour, band in (("red", 0), ("green", 1), ("blue", 2), ("yellow", 0)):
        raw = out / "raw" / f"{IDS[0]}_{colour}.jpg"
        with Image.open(raw) as img:
            want = np.asarray(img.convert("RGB"))[..., band]
        got = np.asarray(Image.open(out / f"{IDS[0]}_{colour}.png"))
        assert np.abs(got.astype(int) - want).mean() < 1.0


def test_shards_split_the_work(cli: Invoke, server: HpaServer, tmp_path: Path) -> None:
    ids = [f"{1000 + k}_1_A1_{k}" for k in range(12)]
    labels = write_labels(tmp_path / "labels.csv", ids)
    out = tmp_path / "out"
    seen: set[str] = set()
    for i in (1, 2, 3):
        server.reset_counts()
        result = cli(
            "download-external",
            "--labels",
            labels,
            "--out",
            out,
            "--base-url",
            server.base_url,
            "--shard",
            f"{i}/3",
            "--colors",
            "green",
            *FAST,
        )
        assert result.exit_code == 0, result.output
        mine = {s for s in ids if s in Shard(i, 3)}
        assert set(server.requests) == {image_path(s, "green") for s in mine}
        assert not seen & mine
        seen |= mine
    assert seen == set(ids)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{s}_green.png" for s in ids)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--shard", "3/2"], "--shard"),
        (["--shard", "0/0"], "--shard"),
        (["--shard", "x"], "--shard"),
        (["--colors", "purple"], "purple"),
        (["--concurrency", "0"], "--concurrency"),
        (["--size", "-1"], "--size"),
        (["--channel-rule", "average"], "channel rule"),
        (["--base-url", "ftp://example.org/images"], "--base-url"),
        (["--name", "bad name"], "invalid dataset name"),
        (["--limit", "0"], "--limit"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    cli: Invoke, tmp_path: Path, args: list[str], fragment: str
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS[:2])
    result = cli("download-external", "--labels", labels, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert fragment in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_labels_and_existing_datasets(cli: Invoke, server: HpaServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = cli("download-external", "--labels", tmp_path / "nope.csv", "--out", out)
    assert missing.exit_code == 2 and "nope.csv" in missing.stderr
    kaggle = tmp_path / "kaggle.csv"
    kaggle.write_text("Id,Target\n10580_1610_C1_1,0\n00070df0-bbc3-11e8-b2bc-ac1f6b6435d0,1\n")
    bad = cli("download-external", "--labels", kaggle, "--out", out)
    assert bad.exit_code == 1
    assert "row 2" in bad.stderr and "00070df0" in bad.stderr and "HPA v18 id" in bad.stderr

    labels = write_labels(tmp_path / "labels.csv", IDS[:2])
    first = cli(
        "download-external", "--labels", labels, "--out", out, "--base-url", server.base_url, *FAST
    )
    assert first.exit_code == 0, first.output
    changed = write_labels(tmp_path / "labels.csv", IDS[:3])
    refused = cli(
        "download-external", "--labels", changed, "--out", out, "--base-url", server.base_url, *FAST
    )
    assert refused.exit_code == 2
    assert "differs" in refused.stderr and "datasets remove hpa-v18" in refused.stderr
    # The way out the message gives: remove, rerun; files on disk are not fetched again.
    assert cli("datasets", "remove", "hpa-v18").exit_code == 0
    server.reset_counts()
    rerun = cli(
        "download-external", "--labels", changed, "--out", out, "--base-url", server.base_url, *FAST
    )
    assert rerun.exit_code == 0, rerun.output
    assert {p.split("/")[2] for p in server.requests} == {IDS[2].split("_")[0]}
    assert server.total_requests == 4

    train = write_labels(tmp_path / "train.csv", IDS[4:6])
    assert cli("datasets", "add", "kaggle", "--labels", train).exit_code == 0
    clash = cli("download-external", "--labels", train, "--out", out, "--name", "kaggle")
    assert clash.exit_code == 2 and "not external" in clash.stderr


def test_unreachable_server_fails_cleanly(cli: Invoke, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    labels = write_labels(tmp_path / "labels.csv", IDS[:2])
    out = tmp_path / "out"
    result = cli(
        "download-external",
        "--labels",
        labels,
        "--out",
        out,
        "--base-url",
        f"http://127.0.0.1:{port}/images",
        "--retries",
        "1",
        *FAST,
    )
    assert result.exit_code == 1
    with open(out / "failures.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    assert all("connection error" in r["error"] and r["status"] == "" for r in rows)
    assert leftovers(out) == []


# --------------------------------------------------------------------------- kill and Ctrl-C


@pytest.mark.slow
def test_sigkill_midway_then_rerun_completes(cli: Invoke, tmp_path: Path, home: Path) -> None:
    ids = [f"{2000 + k}_1_B1_{k}" for k in range(24)]
    labels = write_labels(tmp_path / "labels.csv", ids)
    out = tmp_path / "out"
    with HpaServer(image_size=64, latency=0.05) as server:
        proc = start_hpatool(
            [
                "download-external",
                "--labels",
                str(labels),
                "--out",
                str(out),
                "--base-url",
                server.base_url,
                "--concurrency",
                "4",
                "--keep-raw",
                *FAST,
            ],
            home,
        )
        wait_for_pngs(out, 12, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        time.sleep(0.3)  # let orphaned conversion workers finish and exit
        finished = {p.name[: -len(".png")] for p in out.glob("*.png")}
        raw_done = {p.name[: -len(".jpg")] for p in (out / "raw").glob("*.jpg")}
        assert 12 <= len(finished) < len(ids) * 4
        server.latency = 0.0
        server.reset_counts()
        result = cli(
            "download-external",
            "--labels",
            labels,
            "--out",
            out,
            "--base-url",
            server.base_url,
            "--keep-raw",
            *FAST,
        )
        assert result.exit_code == 0, result.output
        # Nothing that was finished on disk is fetched again.
        for stem in finished & raw_done:
            sample_id, _, colour = stem.rpartition("_")
            assert server.count(sample_id, colour) == 0, stem
        assert server.total_requests <= len(ids) * 4 - len(finished & raw_done)
    for sample_id in ids:
        assert_sample_pngs(out, sample_id)
        for colour in COLOURS:
            with Image.open(out / "raw" / f"{sample_id}_{colour}.jpg") as img:
                img.load()
    assert leftovers(out) == []
    with Registry.open(home) as reg:
        assert reg.status_counts("hpa-v18") == {"done": len(ids)}


@pytest.mark.slow
def test_ctrl_c_stops_cleanly(tmp_path: Path, home: Path) -> None:
    ids = [f"{3000 + k}_1_C1_{k}" for k in range(200)]  # still going when interrupted
    labels = write_labels(tmp_path / "labels.csv", ids)
    out = tmp_path / "out"
    with HpaServer(image_size=64, latency=0.1) as server:
        proc = start_hpatool(
            [
                "download-external",
                "--labels",
                str(labels),
                "--out",
                str(out),
                "--base-url",
                server.base_url,
                "--concurrency",
                "8",
                *FAST,
            ],
            home,
        )
        wait_for_pngs(out, 8, proc)
        # A file is on disk a moment before the event loop records its sample (under load,
        # more than a moment): wait until a sample's status is written, then interrupt.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            with Registry.open(home) as reg:
                if reg.status_counts("hpa-v18").get("done", 0) >= 1:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted: "), stderr
    assert "rerun the same command to resume" in lines[0]
    assert leftovers(out) == []
    done = len(list(out.glob("*.png")))
    with Registry.open(home) as reg:
        counts = reg.status_counts("hpa-v18")
    assert counts.get("done", 0) * 4 <= done
    assert counts.get("done", 0) >= 1
