"""A fake HPA image server on 127.0.0.1 that injects faults; for tests and benchmarks.

It serves ``/images/<antibody>/<rest>_<colour>.jpg`` for any id as a synthetic HPA-style RGB
JPEG (the stain in its own band: red in R, green in G, blue in B, yellow in R and G), the same
bytes every time. Per path, a list of behaviours is played one request after another (then
"ok"); a behaviour ending in ``!`` repeats forever:

- ``ok``: 200 ``image/jpeg``
- ``500``, ``503``, ``404``, ``403``...: that status with a small text body
- ``429:S``: 429 with ``Retry-After: S``
- ``truncate``: full ``Content-Length``, half the body, then the connection is cut
- ``short``: 200 with a consistent length, but only the first half of the JPEG (undecodable)
- ``stall:S``: wait S seconds before answering; ``stallbody:S``: headers and half the body,
  then wait S seconds
- ``html``: 200 ``text/html`` error page; ``htmljpg``: the same page labelled ``image/jpeg``
- ``endless``: 200 ``image/jpeg`` with no length, the JPEG then zeros without end (bounded:
  at most ``ENDLESS_LIMIT`` bytes, or until the client hangs up)
- ``gzipbomb:M``: 200 ``image/jpeg`` with ``Content-Encoding: gzip``, a body of a few kB that
  inflates to the JPEG followed by M MiB of zeros (default 64)
- ``tiny``: 200 with a well-formed 1x1 JPEG
- ``big:M``: 200 ``image/jpeg``, the JPEG then M MiB of zeros, with its ``Content-Length``

Runs in a background thread with its own event loop; ``latency`` seconds are added to every
request. ``requests`` counts requests per path. Used by ``tests/integration/test_download.py``
and, through a path insert, by ``benchmarks/download.py``.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image, ImageFilter

BANDS = {"red": (0,), "green": (1,), "blue": (2,), "yellow": (0, 1)}
#: The most bytes an ``endless`` body sends before it ends after all (tests stay bounded).
ENDLESS_LIMIT = 256 << 20
HTML_PAGE = b"<!DOCTYPE html><html><body><h1>Service temporarily unavailable</h1></body></html>"


def fluorescence(seed: int, size: int, noise: float = 4.0) -> np.ndarray:
    """A ``size``×``size`` uint8 field that looks like fluorescence: smooth blobs (cells)
    modulated by finer texture, on a dark background, plus sensor noise."""
    rng = np.random.default_rng(seed)
    small = max(4, size // 16)
    seeds = (rng.random((small, small)) > 0.85).astype(np.uint8) * 255
    blobs = Image.fromarray(seeds).resize((size, size), Image.Resampling.BICUBIC)
    blobs = blobs.filter(ImageFilter.GaussianBlur(max(1.0, size / 64)))
    a = np.asarray(blobs, dtype=np.float32)
    a *= 180.0 / max(float(a.max()), 1.0)
    fine = max(2, size // 4)
    texture = Image.fromarray((rng.random((fine, fine)) * 255).astype(np.uint8))
    texture = texture.resize((size, size), Image.Resampling.BICUBIC)
    texture = texture.filter(ImageFilter.GaussianBlur(max(0.5, size / 512 * 3)))
    a *= 0.6 + 0.4 * np.asarray(texture, dtype=np.float32) / 255.0
    a += rng.normal(0.0, noise, (size, size)).astype(np.float32)
    return np.clip(a, 0, 255).astype(np.uint8)


def stain_rgb(grey: np.ndarray, colour: str) -> np.ndarray:
    """The RGB picture HPA serves for one stain: the stain in its own band(s)."""
    rgb = np.zeros((*grey.shape, 3), dtype=np.uint8)
    for band in BANDS[colour]:
        rgb[..., band] = grey
    return rgb


def stain_jpeg(sample_id: str, colour: str, size: int = 64, quality: int = 90) -> bytes:
    """The JPEG the fake server sends for one stain of one sample (deterministic)."""
    grey = fluorescence(zlib.crc32(f"{sample_id}_{colour}".encode()), size)
    buf = io.BytesIO()
    Image.fromarray(stain_rgb(grey, colour)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def tiny_jpeg() -> bytes:
    """A well-formed 1x1 JPEG (what a server may send as a placeholder)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (40, 200, 40)).save(buf, "JPEG")
    return buf.getvalue()


def gzip_bomb(data: bytes, mib: int) -> bytes:
    """``data`` followed by ``mib`` MiB of zeros, gzip-compressed (about 1 kB per MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    parts = [packer.compress(data)]
    zeros = bytes(1 << 20)
    parts.extend(packer.compress(zeros) for _ in range(mib))
    parts.append(packer.flush())
    return b"".join(parts)


def image_path(sample_id: str, colour: str) -> str:
    """The URL path of one stain: ``/images/<antibody>/<rest>_<colour>.jpg``."""
    antibody, _, rest = sample_id.partition("_")
    return f"/images/{antibody}/{rest}_{colour}.jpg"


class HpaServer:
    """``with HpaServer(...) as server: server.base_url`` -> ``http://127.0.0.1:PORT/images``."""

    def __init__(
        self,
        *,
        image_size: int = 64,
        latency: float = 0.0,
        faults: dict[str, list[str]] | None = None,
        distinct: int | None = None,
    ) -> None:
        self.image_size = image_size
        self.latency = latency
        self.faults: dict[str, list[str]] = {k: list(v) for k, v in (faults or {}).items()}
        self.distinct = distinct  # serve one of this many bodies per colour (fast benchmarks)
        self.requests: Counter[str] = Counter()
        self.authorizations: set[str] = set()  # the Authorization headers received
        self.log: list[tuple[float, str, str]] = []
        self._cache: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------ control

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/images"

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def count(self, sample_id: str, colour: str) -> int:
        with self._lock:
            return self.requests[image_path(sample_id, colour)]

    def fault(self, sample_id: str, colour: str, *behaviours: str) -> None:
        with self._lock:
            self.faults[image_path(sample_id, colour)] = list(behaviours)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.log.clear()

    def body(self, sample_id: str, colour: str) -> bytes:
        key = (sample_id, colour)
        if self.distinct:
            key = (str(zlib.crc32(sample_id.encode()) % self.distinct), colour)
        with self._lock:
            data = self._cache.get(key)
        if data is None:
            data = stain_jpeg(key[0], colour, self.image_size)
            with self._lock:
                self._cache[key] = data
        return data

    def preload(self, ids: Iterable[str], colours: Iterable[str]) -> None:
        """Make the bodies now, so that serving them costs no CPU (with ``distinct``: all of
        them, whatever ``ids``)."""
        colours = list(colours)
        for sample_id in ids:
            for colour in colours:
                self.body(sample_id, colour)
        for k in range(self.distinct or 0):
            for colour in colours:
                key = (str(k), colour)
                if key not in self._cache:
                    self._cache[key] = stain_jpeg(str(k), colour, self.image_size)

    def start(self) -> HpaServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # surface start-up errors in the caller
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="hpa-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return
        fut = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
        try:
            fut.result(timeout=15)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=15)
            self._runner = None

    def __enter__(self) -> HpaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ serving

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/images/{antibody}/{name}", self._handle)
        # any other folder too (a --base-url with spaces or non-ASCII in its path)
        app.router.add_get("/{folder:.+}/{antibody}/{name}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    def _next_behaviour(self, path: str) -> str:
        with self._lock:
            self.requests[path] += 1
            queue = self.faults.get(path)
            if not queue:
                behaviour = "ok"
            elif queue[0].endswith("!"):
                behaviour = queue[0][:-1]
            else:
                behaviour = queue.pop(0)
            self.log.append((time.monotonic(), path, behaviour))
            return behaviour

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        behaviour = self._next_behaviour(path)
        if "Authorization" in request.headers:
            with self._lock:
                self.authorizations.add(request.headers["Authorization"])
        if self.latency:
            await asyncio.sleep(self.latency)
        name = request.match_info["name"]
        stem, _, ext = name.rpartition(".")
        rest, _, colour = stem.rpartition("_")
        if ext != "jpg" or colour not in BANDS or not rest:
            return web.Response(status=404, text="no such image")
        sample_id = f"{request.match_info['antibody']}_{rest}"
        kind, _, arg = behaviour.partition(":")
        if kind == "429":
            return web.Response(status=429, text="slow down", headers={"Retry-After": arg or "1"})
        if kind.isdigit():
            return web.Response(status=int(kind), text=f"error {kind}")
        if kind == "stall":
            await asyncio.sleep(float(arg or 30))
        if kind in ("html", "htmljpg"):
            ctype = "text/html" if kind == "html" else "image/jpeg"
            return web.Response(status=200, body=HTML_PAGE, content_type=ctype)
        data = self.body(sample_id, colour)
        if kind == "tiny":
            return web.Response(body=tiny_jpeg(), content_type="image/jpeg")
        if kind == "gzipbomb":
            return web.Response(
                body=gzip_bomb(data, int(arg or 64)),
                headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"},
            )
        if kind == "big":
            return web.Response(body=data + bytes(int(arg or 1) << 20), content_type="image/jpeg")
        if kind == "endless":
            return await self._endless(request, data)
        if kind == "short":
            return web.Response(body=data[: len(data) // 2], content_type="image/jpeg")
        if kind in ("truncate", "stallbody"):
            return await self._partial(
                request, data, stall=float(arg or 30) if arg else None, cut=kind == "truncate"
            )
        return web.Response(body=data, content_type="image/jpeg")

    @staticmethod
    async def _endless(request: web.Request, data: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(data)
        zeros, sent = bytes(1 << 16), len(data)
        while sent < ENDLESS_LIMIT:
            try:
                await resp.write(zeros)
            except (ConnectionError, RuntimeError):  # the client hung up
                break
            sent += len(zeros)
        return resp

    @staticmethod
    async def _partial(
        request: web.Request, data: bytes, *, stall: float | None, cut: bool
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        if stall is not None:
            await asyncio.sleep(stall)
        if cut and request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError  # end the handler without finishing the body


def run_forever(**kwargs: Any) -> None:  # pragma: no cover - manual testing aid
    """``python tests/integration/hpa_server.py``: serve until Ctrl-C."""
    with HpaServer(**kwargs) as server:
        print(f"serving on {server.base_url}")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    run_forever()
