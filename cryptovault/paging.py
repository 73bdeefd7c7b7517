"""One pager for every list: (filter, sort key, after, first) -> `Page`.

A list is declared once as a `Listing` (its cursor kind, sort key and page limits)
beside the query that reads it; the pager reads the limits to check `first`, and the
schema reads the same declaration for its `first` argument (description and
default) and for the cost rules (a list costs `first` items, at most `maximum`).

Cursors are opaque base64 strings that encode a position in a stable sort (a
timestamp in milliseconds and the id that breaks ties), so they stay valid while new
items arrive. Lists page forward, newest first. `has_next` is whether items follow the
page (read with one item more than asked); `has_previous` is whether the list, with
the same filter, still holds an item at or before the `after` cursor (false on a first
page, which costs no second read). No GraphQL here: schema/pagination.py maps a
`Page` to a Relay connection."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from beanie import Document, SortDirection

from cryptovault.documents.common import older_than
from cryptovault.errors import BadUserInput


@dataclass(frozen=True, slots=True)
class Listing:
    """A paginated list: its cursor kind, the field it sorts on (newest first, the id
    breaking ties) and how many items a page holds by default and at most."""

    cursor: str
    default: int
    maximum: int
    sort_field: str = "created_at"

    def size(self, first: int | None) -> int:
        """The page size for `first`: the default when omitted, BAD_USER_INPUT outside
        1..maximum."""
        if first is None:
            return self.default
        if not 1 <= first <= self.maximum:
            raise BadUserInput(f"first must be between 1 and {self.maximum}", first=first)
        return first

    def cursor_of(self, item: Any) -> str:
        return encode_time_cursor(self.cursor, getattr(item, self.sort_field), item.id)

    def position(self, after: str | None) -> tuple[datetime, str] | None:
        return decode_time_cursor(self.cursor, after) if after is not None else None


@dataclass(frozen=True, slots=True)
class Page[T]:
    """A page of a list, in list order, and what lies around it."""

    items: list[T]
    has_next: bool
    has_previous: bool
    cursor_of: Callable[[T], str]
    total_count: int | None = None


async def page[D: Document](
    model: type[D],
    listing: Listing,
    filter: Mapping[str, Any],
    first: int | None,
    after: str | None,
    *,
    total_count: int | None = None,
) -> Page[D]:
    """The page of `model` documents matching `filter` that follows `after`, newest
    first by (listing.sort_field, _id): one read, and one more (the newest item) for
    `has_previous` when `after` is given."""
    size = listing.size(first)
    position = listing.position(after)
    base = dict(filter)
    query = base if position is None else {"$and": [base, older_than(position, listing.sort_field)]}
    found = await _newest(model, listing, query, size + 1)
    previous = False
    if position is not None:
        top = await _newest(model, listing, base, 1)
        previous = bool(top) and (
            _utc(getattr(top[0], listing.sort_field)),
            str(top[0].id),
        ) >= (_utc(position[0]), position[1])
    return Page(
        items=found[:size],
        has_next=len(found) > size,
        has_previous=previous,
        cursor_of=listing.cursor_of,
        total_count=total_count,
    )


async def _newest[D: Document](
    model: type[D], listing: Listing, query: Mapping[str, Any], limit: int
) -> list[D]:
    return (
        await model.find(dict(query))
        .sort([(listing.sort_field, SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)])
        .limit(limit)
        .to_list()
    )


def in_statuses(statuses: Iterable[StrEnum] | None) -> dict[str, Any]:
    """A list's `status` filter: every status when omitted (None), BAD_USER_INPUT for
    an empty list (it would match nothing)."""
    if statuses is None:
        return {}
    wanted = sorted({s.value for s in statuses})
    if not wanted:
        raise BadUserInput("status must not be empty (omit it for every status)")
    return {"status": {"$in": wanted}}


# -- cursors ---------------------------------------------------------------------------


def encode_cursor(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_cursor(kind: str, cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadUserInput("Invalid cursor", cursor=cursor) from None
    prefix, sep, value = raw.partition(":")
    if prefix != kind or not sep or not value:
        raise BadUserInput("Invalid cursor", cursor=cursor)
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def encode_time_cursor(kind: str, at: datetime, item_id: str) -> str:
    """A cursor for lists sorted by (timestamp, id), newest first: the timestamp in
    milliseconds (the store's precision) and the id that breaks ties."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return encode_cursor(kind, f"{(at - _EPOCH) // _MS}:{item_id}")


def decode_time_cursor(kind: str, cursor: str) -> tuple[datetime, str]:
    """(timestamp, id) from `encode_time_cursor`; BAD_USER_INPUT if malformed. The
    next page's store filter is documents.common.older_than(after)."""
    raw = decode_cursor(kind, cursor)
    ms, sep, item_id = raw.partition(":")
    if not sep or not item_id or not ms.isdigit() or len(ms) > 15:
        raise BadUserInput("Invalid cursor", cursor=cursor)
    return _EPOCH + int(ms) * _MS, item_id


def _utc(at: datetime) -> datetime:
    # The store hands datetimes back naive (UTC); cursors decode aware.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at
