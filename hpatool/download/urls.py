"""HPA image-server URLs.

The HPA v18 server keeps each field as ``<base>/<antibody>/<rest>_<colour>.jpg``, where
``<antibody>_<rest>`` is the sample id split at its first ``_``: ``10580_1610_C1_1`` →
``<base>/10580/1610_C1_1_red.jpg``, ``63683_si35_H1_11`` → ``<base>/63683/si35_H1_11_red.jpg``,
``11651_1732_F3_13_cr580610dc203b9`` → ``<base>/11651/1732_F3_13_cr580610dc203b9_red.jpg``.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

from hpatool.errors import UsageError
from hpatool.ids import COLOURS, id_problem
from hpatool.options import DownloadConfig

DEFAULT_BASE_URL = DownloadConfig.base_url
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


#: Characters a URL path may hold as they are (RFC 3986 pchar and "/"; "%" starts an escape).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_USER_SAFE = "%!$&'()*+,;=-._~"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing ``/``, its path (and user info) percent-encoded and a
    non-ASCII host in IDNA form, or a ``UsageError`` if it is not an http(s) URL. Messages show
    it with its password redacted (see :func:`redact_url`)."""
    text = (base_url or "").strip()
    shown = redact_url(text)
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError as exc:
        raise UsageError(f"invalid --base-url {shown!r} ({exc}); e.g. {DEFAULT_BASE_URL}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise UsageError(
            f"invalid --base-url {shown!r}: give an http:// or https:// URL with a host, "
            f"e.g. {DEFAULT_BASE_URL}"
        )
    if parts.query or parts.fragment:
        raise UsageError(
            f"invalid --base-url {shown!r}: no '?query' or '#fragment'; give the folder URL "
            f"the images are under, e.g. {DEFAULT_BASE_URL}"
        )
    netloc = _encoded_netloc(parts.netloc, parts.hostname, parts.port, shown)
    path = quote(_STRAY_PERCENT.sub("%25", parts.path), safe=_PATH_SAFE)
    return urlunsplit((parts.scheme, netloc, path, "", "")).rstrip("/")


def _encoded_netloc(netloc: str, hostname: str, port: int | None, shown: str) -> str:
    """``netloc`` with its user info percent-encoded and its host in IDNA form if need be."""
    userinfo, at, hostport = netloc.rpartition("@")
    if not hostport.isascii():
        try:
            host = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise UsageError(
                f"invalid --base-url {shown!r}: the host {hostname!r} is no valid domain name"
            ) from None
        hostport = host + (f":{port}" if port is not None else "")
    if any(c.isspace() or not c.isprintable() for c in hostport):
        raise UsageError(
            f"invalid --base-url {shown!r}: a space or control character in the host; "
            f"e.g. {DEFAULT_BASE_URL}"
        )
    if at:
        user, colon, password = userinfo.partition(":")
        userinfo = quote(_STRAY_PERCENT.sub("%25", user), safe=_USER_SAFE) + colon
        userinfo += quote(_STRAY_PERCENT.sub("%25", password), safe=_USER_SAFE)
    return f"{userinfo}{at}{hostport}"


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``
    (``http://user:***@host/...``): what is stored and shown instead of a URL with
    credentials. A URL without a password is returned as it is."""
    if _password(url) is None:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    netloc, slash, tail = rest.partition("/")
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    prefix = f"{scheme}://" if scheme else ""
    return f"{prefix}{user}:***@{hostport}{slash}{tail}"


def redact_text(text: str, url: str) -> str:
    """``text`` (an error message) with the password of ``url`` redacted wherever the URL's
    user info appears in it."""
    password = _password(url)
    if not password:
        return text
    return text.replace(f":{password}@", ":***@")


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
