"""Throughput of ``download-external`` against a local server with 50 ms latency per request.

Run: .venv/bin/python benchmarks/download.py [--samples 2000] [--concurrency 64]
     [--server aiohttp|light] [--real DIR --size 512]

The fake HPA server runs in its own process on 127.0.0.1 and answers every request after
``--latency`` seconds with a small JPEG: by default the test suite's aiohttp.web server
(tests/integration/hpa_server.py), with ``--server light`` a bare asyncio.Protocol server that
sends the same bytes for a fraction of the CPU (the client shares the machine's cores with it).
The library call ``download_external(..., DownloadConfig(size=0))`` (raw JPEGs only: read,
decode-checked, written and renamed in threads) fetches ``--samples`` × 4 files at
``--concurrency``; with 50 ms per request the latency bound is concurrency / latency files/s
(64 / 0.05 = 1,280 files/s). A sequential run (concurrency 1) of a smaller subset gives the
speed-up of concurrency. The client runs on uvloop when it is installed
(``HPATOOL_EVENT_LOOP=asyncio`` turns that off).

Printed: files/s of the whole call (registry, planning and pool start-up included) and of the
download phase alone (first request to last file), each as a share of the latency bound; the
CPU time per file of the client (all threads) and of the server, which is what bounds the
throughput when other jobs hold the cores; and a bare aiohttp loop for comparison.
Target: >= 80 % of the bound where the machine allows (client and server share its cores).

``--real DIR`` serves real HPA v18 JPEGs instead (``DIR/<antibody>/<rest>_<colour>.jpg``, e.g.
``/work/shared/data/hpa/real/hpav18_jpg/images``: 2048 px, 37-234 kB): each requested stain is
answered with one of the real files of that colour (by the id's CRC-32). With ``--size 512``
(the default conversion of ``download-external``) every file is decoded, converted and written
as a PNG in the process pool: the CPUs, not the latency, then bound the throughput.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import zlib
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpatool.download import DownloadConfig, DownloadProgress, download_external  # noqa: E402
from hpatool.registry import Registry  # noqa: E402

DISTINCT = 64  # bodies per colour the server picks from (by the id's CRC-32)


class RealBodies:
    """Real HPA JPEGs by colour: ``body(sample_id, colour)`` is one of that colour's files."""

    def __init__(self, folder: Path) -> None:
        self.files: dict[str, list[bytes]] = {}
        for path in sorted(folder.glob("*/*.jpg")):
            colour = path.stem.rpartition("_")[2]
            self.files.setdefault(colour, []).append(path.read_bytes())
        missing = {"red", "green", "blue", "yellow"} - set(self.files)
        if missing:
            raise SystemExit(f"--real {folder}: no <antibody>/<rest>_<colour>.jpg for {missing}")

    def body(self, sample_id: str, colour: str) -> bytes:
        bodies = self.files[colour]  # KeyError: not a stain (the light server answers 404)
        return bodies[zlib.crc32(sample_id.encode()) % len(bodies)]

    def describe(self) -> str:
        sizes = [len(b) for bodies in self.files.values() for b in bodies]
        return (
            f"{len(sizes)} real HPA v18 JPEGs ({min(sizes) / 1e3:.0f}-{max(sizes) / 1e3:.0f} kB, "
            f"mean {sum(sizes) / len(sizes) / 1e3:.0f} kB)"
        )


def _serve(conn: Connection, latency: float, image_size: int, kind: str, real: Path | None) -> None:
    from tests.integration.hpa_server import HpaServer

    server = HpaServer(image_size=image_size, latency=latency, distinct=DISTINCT)
    if real is not None:
        server.body = RealBodies(real).body  # type: ignore[method-assign]
    else:
        server.preload([], ["red", "green", "blue", "yellow"])
    if kind == "light":
        light = LightServer(server, latency).start()
        conn.send(light.base_url)
    else:
        server.start()
        conn.send(server.base_url)
    while conn.recv() == "cpu":  # until the benchmark says stop
        conn.send(time.process_time())
    if kind != "light":
        server.stop()


class LightServer:
    """The fake server's happy path on a bare ``asyncio.Protocol``: HTTP/1.1 keep-alive, each
    ``GET /images/<antibody>/<rest>_<colour>.jpg`` answered with the same bytes ``HpaServer``
    serves, after ``latency`` seconds, from pre-encoded responses; no faults, no routing, no
    logging. It spends a fraction of aiohttp.web's CPU per request, which on a machine where
    the client and the server share the cores leaves more of them to the client measured."""

    def __init__(self, bodies: Any, latency: float) -> None:
        self.bodies = bodies  # an HpaServer: .body(sample_id, colour)
        self.latency = latency
        self.responses: dict[bytes, bytes] = {}
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/images"

    def response(self, path: bytes) -> bytes:
        resp = self.responses.get(path)
        if resp is None:
            _, _, antibody, name = path.decode("ascii", "replace").split("/", 3)
            stem, _, _ = name.rpartition(".")
            rest, _, colour = stem.rpartition("_")
            try:
                body = self.bodies.body(f"{antibody}_{rest}", colour)
                head = f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}"
            except KeyError:
                body, head = b"no such image", "HTTP/1.1 404 Not Found\r\nContent-Length: 13"
            resp = self.responses[path] = head.encode() + b"\r\n\r\n" + body
        return resp

    def start(self) -> LightServer:
        import asyncio
        import threading

        started = threading.Event()
        server = self

        class Http(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                self.buf = b""

            def data_received(self, data: bytes) -> None:
                self.buf += data
                while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                    line = self.buf[: self.buf.find(b"\r\n")]
                    self.buf = self.buf[end + 4 :]
                    resp = server.response(line.split(b" ")[1])
                    loop.call_later(server.latency, self.send, resp)

            def send(self, resp: bytes) -> None:
                if not self.transport.is_closing():
                    self.transport.write(resp)

        async def listen() -> None:
            srv = await loop.create_server(Http, "127.0.0.1", 0)
            self.port = srv.sockets[0].getsockname()[1]
            started.set()

        loop = asyncio.new_event_loop()

        def run() -> None:
            loop.run_until_complete(listen())
            loop.run_forever()

        threading.Thread(target=run, name="light-server", daemon=True).start()
        started.wait(30)
        return self


def cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process and its finished children (the
    conversion pool, shut down at the end of each download) have used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def conversion_cpu_ms(real: Path, size: int, repeat: int = 3) -> float:
    """CPU ms to convert one real JPEG to a ``size`` PNG (the ``stain`` rule), in this process:
    the mean over the files, best of ``repeat`` passes."""
    from hpatool.convert.workers import convert_file

    files = sorted(real.glob("*/*.jpg"))
    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="hpatool-bench-") as tmp:
        for _ in range(repeat):
            t0 = time.process_time()
            for k, path in enumerate(files):
                colour = path.stem.rpartition("_")[2]
                outcome = convert_file(str(path), f"{tmp}/{k}.png", colour, size, "stain")
                assert outcome.ok, outcome
            best = min(best, (time.process_time() - t0) / len(files) * 1e3)
    return best


def server_cpu_s(conn: Connection) -> float:
    conn.send("cpu")
    return float(conn.recv())


def run(
    labels: Path,
    home: Path,
    out: Path,
    base_url: str,
    *,
    concurrency: int,
    limit: int | None,
    workers: int,
    size: int,
) -> tuple[float, float, int]:
    """(seconds for the whole call, seconds of the download phase, files fetched)."""
    first: list[float] = []

    def progress(p: DownloadProgress) -> None:
        if not first:  # the first report comes once planning is done, before any request
            first.append(time.perf_counter())

    with Registry.open(home) as reg:
        started = time.perf_counter()
        config = DownloadConfig(
            base_url=base_url,
            concurrency=concurrency,
            size=size,
            workers=workers,
            limit=limit,
            timeout=30,
        )
        summary = download_external(reg, labels, out, config, progress=progress)
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


def _event_loop() -> str:
    from hpatool.download import event_loop_name

    return event_loop_name()


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
    parser.add_argument(
        "--size",
        type=int,
        default=0,
        help="download-external's --size: 0 keeps the raw JPEGs (checked only), 512 is its "
        "default conversion",
    )
    parser.add_argument(
        "--real",
        type=Path,
        default=None,
        help="serve the real HPA JPEGs of this folder (<antibody>/<rest>_<colour>.jpg) "
        "instead of synthetic 64 px ones",
    )
    parser.add_argument(
        "--server",
        choices=("aiohttp", "light"),
        default="aiohttp",
        help="the test suite's aiohttp.web fake server, or a bare asyncio.Protocol one that "
        "needs less of the CPUs the client shares with it",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(
        target=_serve,
        args=(child, args.latency, args.image_size, args.server, args.real),
        daemon=True,
    )
    server.start()
    base_url = parent.recv()
    try:
        with tempfile.TemporaryDirectory(prefix="hpatool-bench-") as tmp:
            root = Path(tmp)
            labels = root / "labels.csv"
            ids = [f"{10000 + k}_{k % 97}_A{k % 12 + 1}_{k % 7}" for k in range(args.samples)]
            labels.write_text("Id,Target\n" + "".join(f"{i},0\n" for i in ids))
            bound = args.concurrency / args.latency
            cpu0, server0 = cpu_s(), server_cpu_s(parent)
            total_s, phase_s, files = run(
                labels,
                root / "home-c",
                root / "c",
                base_url,
                concurrency=args.concurrency,
                limit=None,
                workers=args.workers,
                size=args.size,
            )
            client_cpu, server_cpu = cpu_s() - cpu0, server_cpu_s(parent) - server0
            _, seq_phase, seq_files = run(
                labels,
                root / "home-s",
                root / "s",
                base_url,
                concurrency=1,
                limit=args.sequential_samples,
                workers=args.workers,
                size=args.size,
            )
            cpu0 = cpu_s()
            ceiling = bare_client(base_url, ids, args.concurrency)
            bare_cpu = cpu_s() - cpu0
    finally:
        parent.send("stop")
        server.join(10)
    rate = files / total_s
    phase_rate = files / phase_s
    seq_rate = seq_files / seq_phase
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.workers} conversion workers; {args.server} server in its own process; "
        f"{_event_loop()} event loop in the client; load average "
        f"{load_before:.1f} before the run"
    )
    served = RealBodies(args.real).describe() if args.real else f"{args.image_size}px JPEGs"
    print(f"latency {args.latency * 1000:.0f} ms/request, {served}, --size {args.size}")
    print(
        f"concurrency {args.concurrency}: {files} files in {total_s:.2f} s whole call = "
        f"{rate:,.0f} files/s ({rate / bound:.0%} of the {bound:,.0f} files/s latency bound)"
    )
    print(
        f"  download phase alone: {phase_s:.2f} s = {phase_rate:,.0f} files/s "
        f"({phase_rate / bound:.0%} of the bound)"
    )
    print(
        f"  CPU per file: client {client_cpu / files * 1e3:.2f} ms, server "
        f"{server_cpu / files * 1e3:.2f} ms; {(client_cpu + server_cpu) / total_s:.2f} of "
        f"{os.cpu_count()} CPUs busy with the two"
    )
    print(
        f"  bare aiohttp loop on this machine (no files, no checks): {ceiling:,.0f} files/s "
        f"({ceiling / bound:.0%} of the bound, client CPU {bare_cpu / (len(ids) * 4) * 1e3:.2f} ms "
        f"per file); hpatool reaches {phase_rate / ceiling:.0%} of it"
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
    if args.real and args.size:
        conv = conversion_cpu_ms(args.real, args.size)
        cpus = min(args.workers, os.cpu_count() or 1)
        print(
            f"  conversion alone (decode, stain rule, resize to {args.size}, PNG): {conv:.1f} ms "
            f"CPU per file, so at most {cpus * 1e3 / conv:,.0f} files/s on {cpus} idle CPUs "
            f"for conversion alone; the whole client used {client_cpu / files * 1e3:.1f} ms "
            f"per file: at most {cpus * 1e3 / (client_cpu / files * 1e3):,.0f} files/s"
        )
    print(
        f"at {rate:,.0f} files/s (whole call), 300,000 files take {300_000 / rate / 3600:.1f} h "
        f"({74_606 * 4:,} files of HPAv18RBGY_wodpl.csv: {74_606 * 4 / rate / 3600:.1f} h)"
    )


if __name__ == "__main__":
    main()
