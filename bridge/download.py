"""Resumable HTTP downloads with the standard library (urllib), for published artifacts.

A file is written to ``NAME.part`` and renamed to ``NAME`` only once its size is checked
against what the server announced (``Content-Length``, or the total of ``Content-Range``),
so a file under its final name is always complete and is skipped without any request. A
``.part`` left by an interrupted download is resumed with an HTTP ``Range`` request. Every
failure (connection refused, unknown host, timeout, an HTTP error status, a short or
over-long file) is a :class:`DownloadError` whose one-line message names the URL or file.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from runkit.errors import UserError
from runkit.progress import show_progress

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
PART_SUFFIX = ".part"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class DownloadError(UserError):
    """A download that failed; the message names the URL (or file) and what happened."""


@dataclass(frozen=True)
class Fetched:
    """What :func:`download` did: ``action`` is ``skipped`` (already complete, no request),
    ``downloaded``, ``resumed`` (the rest of a ``.part``) or ``missing`` (optional, HTTP 404);
    ``received``: bytes transferred by this call; ``size``: the file's size."""

    path: Path
    url: str
    action: str
    received: int = 0
    size: int = 0


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def describe_network_error(e: BaseException) -> str:
    """A short phrase for a failed request: ``HTTP 404 Not Found``, ``connection refused``,
    ``host not found``, ``timed out``."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"host not found ({reason.strerror or reason})"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ConnectionError):
        return f"connection failed ({type(reason).__name__}: {reason})"
    return f"{type(reason).__name__}: {reason}"


def _broken_transfer(e: BaseException) -> str:
    if isinstance(e, http.client.IncompleteRead):
        return f"connection closed, {e.expected:,} more bytes expected"
    return describe_network_error(e)


def _open(url: str, offset: int, timeout: float):
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) only, checked)


def _expected_total(response, url: str, offset: int) -> tuple[int | None, bool]:
    """``(total size or None if unannounced, append?)`` from a 200 or 206 response."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
        if match is None or int(match.group(1)) != offset:
            raise DownloadError(f"GET {url}: asked for bytes from {offset}, the server answered "
                                f"Content-Range {response.headers.get('Content-Range')!r}")
        end = int(match.group(2))
        return (None if match.group(3) == "*" else int(match.group(3))) or end + 1, True
    length = response.headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), False


def _check_size(path: Path, size: int, total: int | None, url: str) -> None:
    if total is None or size == total:
        return
    what = "short" if size < total else "over-long"
    raise DownloadError(f"{path}: {what} download: {size:,} bytes on disk, the server announced "
                        f"{total:,} for {url}" + ("; run again to resume" if size < total else
                                                  "; delete it and run again"))


def download(url: str, dest: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT_S,
             optional: bool = False, progress: bool = True) -> Fetched:
    """Fetch ``url`` into ``dest`` (see the module docstring). ``optional``: an HTTP 404 is
    reported as ``missing`` instead of an error."""
    dest = Path(dest)
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http:// and https:// addresses can be fetched")
    if dest.is_file():
        return Fetched(dest, url, "skipped", 0, dest.stat().st_size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part already holds every byte (or more)
            match = _UNSATISFIED_RANGE.fullmatch((e.headers.get("Content-Range") or "").strip())
            if match is not None:
                _check_size(part, offset, int(match.group(1)), url)
                part.replace(dest)
                return Fetched(dest, url, "resumed", 0, offset)
        if e.code == 404 and optional:
            return Fetched(dest, url, "missing")
        raise DownloadError(f"GET {url}: {describe_network_error(e)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"GET {url}: {describe_network_error(e)}") from None

    received = 0
    with response:
        total, append = _expected_total(response, url, offset)
        start = offset if append else 0  # a 200 to a Range request: the whole file again
        bar = show_progress(total=total, initial=start, unit="B", unit_scale=True,
                            unit_divisor=1024, desc=dest.name, disable=not progress, leave=False)
        try:
            with open(part, "ab" if append else "wb") as f:
                while chunk := response.read(CHUNK_BYTES):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:  # a reset, a timeout, IncompleteRead
            size = part.stat().st_size if part.is_file() else 0
            raise DownloadError(f"{part}: short download: {size:,} bytes on disk"
                                + (f", the server announced {total:,}" if total is not None else "")
                                + f" for {url} ({_broken_transfer(e)}); run again to resume"
                                ) from None
        finally:
            bar.close()
    size = part.stat().st_size
    _check_size(part, size, total, url)
    part.replace(dest)
    return Fetched(dest, url, "resumed" if append else "downloaded", received, size)
