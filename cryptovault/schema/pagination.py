"""Relay connections: one helper for every paginated list. Cursors are opaque
base64 strings that encode a position in a stable sort (e.g. a timestamp or id), so
they stay valid while new data arrives.

Every list pages forward (`first`/`after`), newest first. PageInfo keeps Relay's
meaning: `hasNextPage` is whether items follow the page (read with one item more than
asked); `hasPreviousPage` is whether the list, with the same filters, still holds an
item at or before the `after` cursor (false on a first page) — an item deleted or
filtered out since does not count; `startCursor`/`endCursor` are the first and last
edges' cursors (null for an empty page)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import strawberry

from cryptovault.errors import BadUserInput
from cryptovault.extensions.cost import cost

NodeT = TypeVar("NodeT")
ItemT = TypeVar("ItemT")


@strawberry.type(
    description="Where a page starts and ends, and what lies around it (Relay). Lists page "
    "forward: pass `endCursor` as `after` for the next page."
)
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="More items follow this page: ask again with `after: endCursor`."
    )
    has_previous_page: bool = strawberry.field(
        default=False,
        description="Items come before this page: false on a first page (no `after`); "
        "with `after`, true while the list (same filters) still holds the item at that "
        "cursor or a newer one.",
    )
    start_cursor: str | None = strawberry.field(
        default=None, description="The first edge's cursor; null for an empty page."
    )
    end_cursor: str | None = strawberry.field(
        default=None,
        description="The last edge's cursor, to pass as `after`; null for an empty page.",
    )


@strawberry.type(description="One item of a page and its position in the list.")
class Edge(Generic[NodeT]):
    cursor: str = strawberry.field(
        description="Opaque: pass it as `after` to read the items that follow this one. "
        "Stays valid while new items arrive."
    )
    node: NodeT = strawberry.field(description="The item.")


@strawberry.type(description="A page of a list, newest first unless the field says otherwise.")
class Connection(Generic[NodeT]):
    # As many as the page of the paginated field above (its first/last); an edge is
    # a free wrapper, its node costs.
    edges: list[Edge[NodeT]] = strawberry.field(
        description="The page's items in list order.", metadata=cost(0, page_items=True)
    )
    page_info: PageInfo = strawberry.field(
        description="Cursors of the page's ends and whether items come before or after it."
    )
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


def connection(
    items: Sequence[ItemT],
    cursor_of: Callable[[ItemT], str],
    to_node: Callable[[ItemT], NodeT],
    *,
    has_next: bool,
    has_previous: bool,
    total_count: int | None = None,
) -> Connection[NodeT]:
    """The page of `items` (already in list order) with its PageInfo."""
    edges = [Edge(cursor=cursor_of(i), node=to_node(i)) for i in items]
    info = PageInfo(
        has_next_page=has_next,
        has_previous_page=has_previous,
        start_cursor=edges[0].cursor if edges else None,
        end_cursor=edges[-1].cursor if edges else None,
    )
    return Connection(edges=edges, page_info=info, total_count=total_count)


def _utc(at: datetime) -> datetime:
    # The store hands datetimes back naive (UTC); cursors decode aware.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


async def items_before(
    after: tuple[datetime, str] | None,
    newest: Callable[[], Awaitable[tuple[datetime, str] | None]],
) -> bool:
    """`hasPreviousPage` of a newest-first (timestamp, id) page read `after` a time
    cursor: whether the list's newest item (`newest()`: the same query, one item, no
    cursor) is at or before that position. A first page has none before it and costs
    no read."""
    if after is None:
        return False
    top = await newest()
    return top is not None and (_utc(top[0]), top[1]) >= (_utc(after[0]), after[1])


def first_argument(maximum: int) -> Any:
    """The description of a paginated field's `first` argument."""
    return strawberry.argument(
        description=f"How many items to return: 1 to {maximum} (BAD_USER_INPUT outside); "
        "the query's cost counts this many items."
    )


AFTER = strawberry.argument(
    description="Return the items after this cursor (an edge's `cursor`, e.g. "
    "`pageInfo.endCursor`); omit it for the first page. A malformed cursor is BAD_USER_INPUT."
)
