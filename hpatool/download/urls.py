"""HPA image-server URLs.

The HPA v18 server keeps each field as ``<base>/<antibody>/<rest>_<colour>.jpg``, where
``<antibody>_<rest>`` is the sample id split at its first ``_``: ``10580_1610_C1_1`` →
``<base>/10580/1610_C1_1_red.jpg``, ``63683_si35_H1_11`` → ``<base>/63683/si35_H1_11_red.jpg``,
``11651_1732_F3_13_cr580610dc203b9`` → ``<base>/11651/1732_F3_13_cr580610dc203b9_red.jpg``.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from hpatool.errors import UsageError
from hpatool.ids import COLOURS, id_problem
from hpatool.options import DownloadConfig

DEFAULT_BASE_URL = DownloadConfig.base_url
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing ``/``, or a ``UsageError`` if it is not an http(s) URL."""
    text = (base_url or "").strip()
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError as exc:
        raise UsageError(
            f"invalid --base-url {base_url!r} ({exc}); e.g. {DEFAULT_BASE_URL}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise UsageError(
            f"invalid --base-url {base_url!r}: give an http:// or https:// URL with a host, "
            f"e.g. {DEFAULT_BASE_URL}"
        )
    if parts.query or parts.fragment:
        raise UsageError(
            f"invalid --base-url {base_url!r}: no '?query' or '#fragment'; give the folder URL "
            f"the images are under, e.g. {DEFAULT_BASE_URL}"
        )
    return text.rstrip("/")


def url_problem(sample_id: str, *, safe: bool = False) -> str | None:
    """Why ``sample_id`` has no HPA image URL, or ``None`` if it has one.

    ``safe=True`` skips the general id check (for ids a label CSV loader has checked already).
    """
    problem = None if safe else id_problem(sample_id)
    if problem:
        return problem
    antibody, sep, rest = sample_id.partition("_")
    if not sep or not antibody or not rest:
        return (
            "not an HPA v18 id (<antibody>_<plate>_<well>_<field>, e.g. 10580_1610_C1_1); "
            "only those can be downloaded from the HPA image server"
        )
    return None


def image_url(base_url: str, sample_id: str, colour: str) -> str:
    """The URL of one stain of one sample: ``<base>/<antibody>/<rest>_<colour>.jpg``."""
    problem = url_problem(sample_id)
    if problem:
        raise ValueError(f"id {sample_id!r}: {problem}")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; use one of {', '.join(COLOURS)}")
    antibody, _, rest = sample_id.partition("_")
    return f"{base_url.rstrip('/')}/{quote(antibody)}/{quote(rest)}_{colour}.jpg"


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (proxies from the environment are not used)."""
    host = urlsplit(url).hostname or ""
    return host in _LOOPBACK or host.startswith("127.")
