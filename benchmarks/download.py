"""Throughput of ``download-external`` against a local server with 50 ms latency per request.

Run: .venv/bin/python benchmarks/download.py [--samples 2000] [--concurrency 64]

The fake HPA server (tests/integration/hpa_server.py) runs in its own process on 127.0.0.1 and
answers every request after ``--latency`` seconds with a small JPEG. The library call
``download_external(..., size=0)`` (raw JPEGs only: streamed to .part, decode-checked in the
process pool, renamed) fetches ``--samples`` × 4 files at ``--concurrency``; with 50 ms per
request the latency bound is concurrency / latency files/s (64 / 0.05 = 1,280 files/s). A
sequential run (concurrency 1) of a smaller subset gives the speed-up of concurrency.

Printed: files/s of the whole call (registry, planning and pool start-up included) and of the
download phase alone (first request to last file), each as a share of the latency bound.
Target: >= 80 % of the bound where the machine allows (client and server share its cores).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpatool.download import DownloadProgress, download_external  # noqa: E402
from hpatool.registry import Registry  # noqa: E402


def _serve(conn: Connection, latency: float, image_size: int) -> None:
    from tests.integration.hpa_server import HpaServer

    server = HpaServer(image_size=image_size, latency=latency, distinct=64)
    server.preload([str(k) for k in range(64)], ["red", "green", "blue", "yellow"])
    server.start()
    conn.send(server.base_url)
    conn.recv()  # until the benchmark says stop
    server.stop()


def run(
    labels: Path,
    home: Path,
    out: Path,
    base_url: str,
    *,
    concurrency: int,
    limit: int | None,
    workers: int,
) -> tuple[float, float, int]:
    """(seconds for the whole call, seconds of the download phase, files fetched)."""
    first: list[float] = []

    def progress(p: DownloadProgress) -> None:
        if not first:  # the first report comes once planning is done, before any request
            first.append(time.perf_counter())

    with Registry.open(home) as reg:
        started = time.perf_counter()
        summary = download_external(
            reg,
            labels,
            out,
            base_url=base_url,
            concurrency=concurrency,
            size=0,
            workers=workers,
            limit=limit,
            timeout=30,
            progress=progress,
        )
        ended = time.perf_counter()
    if summary.failed:
        raise SystemExit(f"benchmark download failed: {summary.failures[:3]}")
    phase_start = first[0] if first else started
    return ended - started, ended - phase_start, summary.files_fetched


def bare_client(base_url: str, ids: list[str], concurrency: int) -> float:
    """files/s of a bare aiohttp loop (no files written, no checks): this machine's ceiling."""
    import asyncio

    import aiohttp

    from hpatool.download.urls import image_url

    urls = iter(
        [image_url(base_url, i, c) for i in ids for c in ("red", "green", "blue", "yellow")]
    )
    n = len(ids) * 4

    async def worker(session: aiohttp.ClientSession) -> None:
        for url in urls:
            async with session.get(url) as resp:
                await resp.read()

    async def main() -> float:
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            return n / (time.perf_counter() - t0)

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=2000, help="samples (x4 files)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--sequential-samples", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child, args.latency, args.image_size), daemon=True)
    server.start()
    base_url = parent.recv()
    try:
        with tempfile.TemporaryDirectory(prefix="hpatool-bench-") as tmp:
            root = Path(tmp)
            labels = root / "labels.csv"
            ids = [f"{10000 + k}_{k % 97}_A{k % 12 + 1}_{k % 7}" for k in range(args.samples)]
            labels.write_text("Id,Target\n" + "".join(f"{i},0\n" for i in ids))
            bound = args.concurrency / args.latency
            total_s, phase_s, files = run(
                labels,
                root / "home-c",
                root / "c",
                base_url,
                concurrency=args.concurrency,
                limit=None,
                workers=args.workers,
            )
            _, seq_phase, seq_files = run(
                labels,
                root / "home-s",
                root / "s",
                base_url,
                concurrency=1,
                limit=args.sequential_samples,
                workers=args.workers,
            )
            ceiling = bare_client(base_url, ids, args.concurrency)
    finally:
        parent.send("stop")
        server.join(10)
    rate = files / total_s
    phase_rate = files / phase_s
    seq_rate = seq_files / seq_phase
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.workers} conversion workers; server in its own process; load average "
        f"{load_before:.1f} before the run"
    )
    print(f"latency {args.latency * 1000:.0f} ms/request, {args.image_size}px JPEGs, --size 0")
    print(
        f"concurrency {args.concurrency}: {files} files in {total_s:.2f} s whole call = "
        f"{rate:,.0f} files/s ({rate / bound:.0%} of the {bound:,.0f} files/s latency bound)"
    )
    print(
        f"  download phase alone: {phase_s:.2f} s = {phase_rate:,.0f} files/s "
        f"({phase_rate / bound:.0%} of the bound)"
    )
    print(
        f"  bare aiohttp loop on this machine (no files, no checks): {ceiling:,.0f} files/s "
        f"({ceiling / bound:.0%} of the bound); hpatool reaches {phase_rate / ceiling:.0%} of it"
    )
    print(
        f"sequential (concurrency 1): {seq_files} files in {seq_phase:.2f} s = "
        f"{seq_rate:,.1f} files/s (bound {1 / args.latency:.0f})"
    )
    print(
        f"speed-up of concurrency {args.concurrency} over sequential: {phase_rate / seq_rate:.1f}x"
    )
    target = 0.8 * bound
    verdict = "meets" if phase_rate >= target else "misses"
    print(f"target >= 80% of the bound ({target:,.0f} files/s): {verdict} it")


if __name__ == "__main__":
    main()
