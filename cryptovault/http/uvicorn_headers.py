"""uvicorn's response headers, validated once per distinct name and value.

uvicorn (its httptools protocol, `RequestResponseCycle.send`) checks every header of
every response against two regular expressions, byte by byte in Python's regex
engine. The app's responses carry 17 headers (~700 bytes: the security headers, the
budget's, the request id), 13 of them the same bytes on every response: their
checks were ~7 % of the instructions of serving `{ ping }` (bench/RESULTS.md).
`validate_headers_once()` has uvicorn remember the names and values that passed
once they were seen twice (a bounded set; a value seen once, e.g. a request id or a
cookie with a token, is kept only as its hash, never as its bytes) and check the
rest as before; a value that fails is never remembered, so it fails every time, with
uvicorn's own error.

It replaces the two patterns in uvicorn's module only for the module source it was
checked against (UVICORN_HTTPTOOLS_SHA256: every use of the patterns, and
UVICORN_PATTERNS, their text): with another uvicorn it does nothing, the app runs as
before, and tests/test_uvicorn_headers.py fails until someone checks it again.

    validate_headers_once()  # before uvicorn serves (cryptovault serve, bench servers)
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re

__all__ = ["UVICORN_HTTPTOOLS_SHA256", "ValidatedOnce", "validate_headers_once"]

log = logging.getLogger(__name__)

# uvicorn/protocols/http/httptools_impl.py, whole.
UVICORN_HTTPTOOLS_SHA256 = "475becbacd7474f6b0d7528db1d1a2bbc3c56af9aae42abbe18dc293f2060eeb"
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
    that did not match once they were seen twice."""

    __slots__ = ("pattern", "seen", "valid")

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.valid: set[bytes] = set()
        # The hashes of valid values seen once: a hash never lets a value pass, it
        # only says that the value may be worth remembering.
        self.seen: set[int] = set()

    def search(self, value: bytes) -> re.Match[bytes] | None:
        if type(value) is not bytes:  # e.g. a bytearray: mutable, never remembered
            return self.pattern.search(value)
        if value in self.valid or value.isalnum():
            # ASCII letters and digits are in neither pattern (UVICORN_PATTERNS): a
            # number or a request id needs no regex, nor a place in the set.
            return None
        found = self.pattern.search(value)
        if found is None:
            key = hash(value)
            if key in self.seen:
                if len(self.valid) >= REMEMBERED:
                    self.valid.clear()
                self.valid.add(value)
            else:
                if len(self.seen) >= REMEMBERED:
                    self.seen.clear()
                self.seen.add(key)
        return found


def knows_uvicorn() -> bool:
    """Whether the installed uvicorn checks response headers as this module expects."""
    try:
        from uvicorn.protocols.http import httptools_impl

        source = inspect.getsource(httptools_impl)
    except (ImportError, OSError, TypeError):
        return False
    for name, text in UVICORN_PATTERNS.items():
        pattern = getattr(httptools_impl, name, None)
        if isinstance(pattern, ValidatedOnce):
            pattern = pattern.pattern
        if getattr(pattern, "pattern", None) != text:
            return False
    return hashlib.sha256(source.encode()).hexdigest() == UVICORN_HTTPTOOLS_SHA256


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
