"""uvicorn's response headers, validated once per distinct name and value.

uvicorn (its httptools protocol, `RequestResponseCycle.send`) checks every header of
every response against two regular expressions, byte by byte in Python's regex
engine. The app's responses carry 17 headers (~700 bytes: the security headers, the
budget's, the request id), 13 of them the same bytes on every response: their
checks were ~7 % of the instructions of serving `{ ping }` (bench/RESULTS.md).
`validate_headers_once()` has uvicorn check each distinct name and value once per
process and remember the ones that passed (a bounded set: a value seen for the first
time, e.g. a request id, is checked as before); a value that fails is never
remembered, so it fails every time, with uvicorn's own error.

It replaces the two patterns in uvicorn's module only for the uvicorn source it was
checked against (UVICORN_SEND_SHA256, the source of the function that uses them, and
UVICORN_PATTERNS, theirs):
with another uvicorn it does nothing, the app runs as before, and
tests/test_uvicorn_headers.py fails until someone checks it again.

    validate_headers_once()  # before uvicorn serves (cryptovault serve, bench servers)
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re

__all__ = ["UVICORN_SEND_SHA256", "ValidatedOnce", "validate_headers_once"]

log = logging.getLogger(__name__)

UVICORN_SEND_SHA256 = "abdd8601b326a8da972436918d3a954e1ef39c6bf0cd9e1c1954c2e798d0bb9c"
# The patterns the checks are made with, as uvicorn defines them (none matches an
# ASCII letter or digit).
UVICORN_PATTERNS = {
    "HEADER_RE": b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]',
    "HEADER_VALUE_RE": b"[\x00-\x08\x0a-\x1f\x7f]",
}
# Distinct valid names or values remembered per pattern, before starting over.
REMEMBERED = 4096


class ValidatedOnce:
    """`pattern.search(value)` for uvicorn's header checks (it only asks whether
    something matched: a match means an invalid header), remembering the values
    that did not match."""

    __slots__ = ("pattern", "valid")

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.valid: set[bytes] = set()

    def search(self, value: bytes) -> re.Match[bytes] | None:
        if type(value) is not bytes:  # e.g. a bytearray: mutable, never remembered
            return self.pattern.search(value)
        if value in self.valid or value.isalnum():
            # ASCII letters and digits are in neither pattern (UVICORN_PATTERNS): a
            # number or a request id needs no regex, nor a place in the set.
            return None
        found = self.pattern.search(value)
        if found is None:
            if len(self.valid) >= REMEMBERED:
                self.valid.clear()
            self.valid.add(value)
        return found


def knows_uvicorn() -> bool:
    """Whether the installed uvicorn checks response headers as this module expects."""
    try:
        from uvicorn.protocols.http import httptools_impl
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

        source = inspect.getsource(RequestResponseCycle.send)
    except (ImportError, OSError, TypeError):
        return False
    for name, text in UVICORN_PATTERNS.items():
        pattern = getattr(httptools_impl, name, None)
        if isinstance(pattern, ValidatedOnce):
            pattern = pattern.pattern
        if getattr(pattern, "pattern", None) != text:
            return False
    return hashlib.sha256(source.encode()).hexdigest() == UVICORN_SEND_SHA256


def validate_headers_once() -> bool:
    """Make uvicorn's httptools protocol check each distinct header once (idempotent).
    Returns whether it does."""
    if not knows_uvicorn():
        log.warning(
            "uvicorn's response header checks are not the ones cryptovault knows: "
            "they run as uvicorn ships them"
        )
        return False
    from uvicorn.protocols.http import httptools_impl

    for name in ("HEADER_RE", "HEADER_VALUE_RE"):
        pattern = getattr(httptools_impl, name)
        if not isinstance(pattern, ValidatedOnce):
            setattr(httptools_impl, name, ValidatedOnce(pattern))
    return True
