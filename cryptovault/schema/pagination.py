"""Relay connections: one helper for every paginated list. Cursors are opaque
base64 strings that encode a position in a stable sort (e.g. a timestamp or id), so
they stay valid while new data arrives."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import strawberry

from cryptovault.errors import BadUserInput
from cryptovault.schema.cost import cost

NodeT = TypeVar("NodeT")
ItemT = TypeVar("ItemT")


@strawberry.type(description="Where a page ends and whether another follows.")
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeT]):
    cursor: str
    node: NodeT


@strawberry.type
class Connection(Generic[NodeT]):
    # As many as the page of the paginated field above (its first/last); an edge is
    # a free wrapper, its node costs.
    edges: list[Edge[NodeT]] = strawberry.field(metadata=cost(0, page_items=True))
    page_info: PageInfo
    total_count: int | None = strawberry.field(
        default=None,
        description="How many items match in all pages, where cheap to know; else null.",
    )


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
    """(timestamp, id) from `encode_time_cursor`; BAD_USER_INPUT if malformed. Query
    the next page with documents.common.older_than(after)."""
    raw = decode_cursor(kind, cursor)
    ms, sep, item_id = raw.partition(":")
    if not sep or not item_id or not ms.isdigit() or len(ms) > 15:
        raise BadUserInput("Invalid cursor", cursor=cursor)
    return _EPOCH + int(ms) * _MS, item_id


def check_page_size(first: int | None, default: int, maximum: int) -> int:
    if first is None:
        return default
    if not 1 <= first <= maximum:
        raise BadUserInput(f"first must be between 1 and {maximum}", first=first)
    return first


def build_edges(
    items: Sequence[ItemT],
    cursor_of: Callable[[ItemT], str],
    to_node: Callable[[ItemT], NodeT],
) -> tuple[list[Edge[NodeT]], str | None]:
    edges = [Edge(cursor=cursor_of(i), node=to_node(i)) for i in items]
    return edges, (edges[-1].cursor if edges else None)
