"""Files missing on the HPA server (404 / 410): final, remembered, and a success when nothing
else failed; a run whose first requests all get 404 (a wrong ``--base-url``) stops early and
records nothing."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import Result

from hpatool.download.retry import MISSING_ATTEMPTS
from hpatool.ids import COLOURS
from hpatool.registry import Registry
from tests.integration.hpa_server import HpaServer, image_path
from tests.support import FAST, Invoke, assert_sample_pngs, one_line_error, write_labels

IDS = [f"{6000 + k}_2_B{k % 9 + 1}_1" for k in range(4)]


def download(cli: Invoke, labels: Path, out: Path, base_url: str, *extra: str) -> Result:
    """The command, fast, but with a --timeout no loaded machine reaches: requests are counted."""
    return cli(
        "download-external",
        *("--labels", labels, "--out", out, "--base-url", base_url),
        *FAST,
        *("--timeout", "10", *extra),
    )


def statuses(home: Path) -> dict[str, str | None]:
    with Registry.open(home) as reg:
        return {s.id: s.status for s in reg.samples("hpa-v18")}


def failure_ids(out: Path) -> list[tuple[str, str, str]]:
    with open(out / "failures.csv", encoding="utf-8", newline="") as fh:
        return [(r["Id"], r["colour"], r["status"]) for r in csv.DictReader(fh)]


def test_404s_only_succeed_with_a_warning_are_not_asked_again_unless_retry_missing(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS)
    out = tmp_path / "out"
    server.fault(IDS[1], "green", "404!")
    server.fault(IDS[2], "red", "410!")
    server.fault(IDS[2], "yellow", "404!")
    result = download(cli, labels, out, server.base_url)
    csv_path = out.resolve() / "failures.csv"
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "warning: 2 samples missing on the server (404), skipped on reruns; pass "
        f"--retry-missing to ask again; listed in {csv_path}\n"
    )
    assert "Rerun the same command" not in result.stdout
    assert server.count(IDS[1], "green") == 1  # a 404 is asked once
    assert statuses(home) == {IDS[0]: "done", IDS[1]: "missing", IDS[2]: "missing", IDS[3]: "done"}
    listed = [(IDS[1], "green", "404"), (IDS[2], "red", "410"), (IDS[2], "yellow", "404")]
    assert failure_ids(out) == listed
    # The other files of a sample with a 404 are kept: a later --retry-missing asks only for
    # the missing ones.
    assert (out / f"{IDS[1]}_red.png").is_file()

    # A rerun makes no request at all: the missing samples are skipped, and still listed.
    server.reset_counts()
    again = download(cli, labels, out, server.base_url, "--json")
    assert again.exit_code == 0, again.output
    assert server.total_requests == 0
    assert '"skipped_missing": 2' in again.stdout and '"missing": 2' in again.stdout
    assert "(2 known from an earlier run)" in again.stderr
    assert failure_ids(out) == listed
    assert statuses(home)[IDS[2]] == "missing"

    # --retry-missing asks again, for the missing files only; now the server has them.
    server.faults.clear()
    server.reset_counts()
    third = download(cli, labels, out, server.base_url, "--retry-missing")
    assert third.exit_code == 0, third.output
    assert third.stderr == ""
    assert dict(server.requests) == {
        image_path(IDS[1], "green"): 1,
        image_path(IDS[2], "red"): 1,
        image_path(IDS[2], "yellow"): 1,
    }
    assert statuses(home) == dict.fromkeys(IDS, "done")
    assert not (out / "failures.csv").exists()
    for sample_id in IDS:
        assert_sample_pngs(out, sample_id)


def test_mixed_404_and_500_advise_a_rerun_for_the_retryable_ones_only(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    labels = write_labels(tmp_path / "labels.csv", IDS)
    out = tmp_path / "out"
    server.fault(IDS[0], "blue", "404!")
    server.fault(IDS[1], "red", "404!")
    server.fault(IDS[3], "green", "500!")
    result = download(cli, labels, out, server.base_url, "--retries", "1")
    assert result.exit_code == 1, result.output
    csv_path = out.resolve() / "failures.csv"
    assert result.stderr.splitlines() == [
        "warning: 2 samples missing on the server (404), skipped on reruns; pass "
        f"--retry-missing to ask again; listed in {csv_path}",
        f"error: 1 of 4 samples failed; see {csv_path}; rerun the same command to retry them",
    ]
    assert "1 sample failed (1 file)" in result.stdout
    assert statuses(home) == dict(zip(IDS, ["missing", "missing", "done", "failed"], strict=True))
    # The rerun asks only for the retryable file; once it arrives, the run succeeds (with the
    # warning for the missing ones).
    server.faults.pop(image_path(IDS[3], "green"))
    server.reset_counts()
    again = download(cli, labels, out, server.base_url)
    assert again.exit_code == 0, again.output
    assert dict(server.requests) == {image_path(IDS[3], "green"): 1}
    assert again.stderr.startswith("warning: 2 samples missing on the server (404)")
    assert [r[0] for r in failure_ids(out)] == [IDS[0], IDS[1]]


def test_a_wrong_base_url_stops_early_and_records_nothing(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    ids = [f"{7000 + k}_3_C1_{k}" for k in range(40)]
    labels = write_labels(tmp_path / "labels.csv", ids)
    out = tmp_path / "out"
    # A first, good run of two samples: the dataset exists, with the right URL.
    first = download(cli, labels, out, server.base_url, "--limit", "2")
    assert first.exit_code == 0, first.output
    with Registry.open(home) as reg:
        before = reg.dataset("hpa-v18")
    # The same server under a path it does not serve: every request gets 404.
    wrong = server.base_url.replace("/images", "/imagez")
    for sample_id in ids:
        for colour in COLOURS:
            server.faults["/imagez" + image_path(sample_id, colour).removeprefix("/images")] = [
                "404!"
            ]
    server.reset_counts()
    result = download(cli, labels, out, wrong, "--concurrency", "8")
    line = one_line_error(result, 1)
    assert line.startswith(
        f"error: every one of the first {MISSING_ATTEMPTS} requests got 404 from {wrong}: "
        "is --base-url right?"
    ), line
    assert "nothing was recorded" in line
    # stopped early, after a fraction of the 152 files (workers still running until the stop
    # is seen add a few requests: 8-13 here)
    assert MISSING_ATTEMPTS <= server.total_requests < 76
    with Registry.open(home) as reg:
        after = reg.dataset("hpa-v18")
        counts = reg.status_counts("hpa-v18")
    assert after.provenance == before.provenance and after.root == before.root
    assert after.provenance["base_url"] == server.base_url
    assert counts == {"done": 2, None: 38}
    assert not (out / "failures.csv").exists()

    # A first run with the wrong URL leaves no dataset behind.
    other = download(cli, labels, tmp_path / "o2", wrong, "--name", "v18-wrong")
    assert one_line_error(other, 1).startswith("error: every one of the first")
    with Registry.open(home) as reg:
        assert not reg.has_dataset("v18-wrong")


def test_a_trial_run_with_a_wrong_base_url_is_stopped_at_its_end(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    """Fewer requests than the early stop needs (--limit 3: 12), all 404, from a fresh start:
    the same one line at the end, nothing recorded. --retry-missing (404s expected) and a run
    that fetched something record the 404s as missing instead."""
    labels = write_labels(tmp_path / "labels.csv", IDS)
    out = tmp_path / "out"
    for sample_id in IDS:
        for colour in COLOURS:
            server.fault(sample_id, colour, "404!")
    result = download(cli, labels, out, server.base_url, "--limit", "3")
    line = one_line_error(result, 1)
    assert line.startswith(
        f"error: every one of the 12 requests got 404 from {server.base_url}: is --base-url right?"
    ), line
    with Registry.open(home) as reg:
        assert not reg.has_dataset("hpa-v18")
    assert not (out / "failures.csv").exists()
    # Told that they are expected, the same run records them.
    retry = download(cli, labels, out, server.base_url, "--limit", "3", "--retry-missing")
    assert retry.exit_code == 0, retry.output
    assert retry.stderr.startswith("warning: 3 samples missing on the server (404)")
    assert statuses(home) == {**dict.fromkeys(IDS[:3], "missing"), IDS[3]: None}
