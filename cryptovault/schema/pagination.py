"""Relay connections: the schema's shape of a `Page` (cryptovault/paging.py, the one
pager every list reads through).

PageInfo keeps Relay's meaning: `hasNextPage` is whether items follow the page;
`hasPreviousPage` is whether the list, with the same filters, still holds an item at
or before the `after` cursor (false on a first page) — an item deleted or filtered
out since does not count; `startCursor`/`endCursor` are the first and last edges'
cursors (null for an empty page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import strawberry

from cryptovault.extensions.cost import cost
from cryptovault.paging import Listing, Page

NodeT = TypeVar("NodeT")


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


def connection[ItemT, NodeT](
    page: Page[ItemT], to_node: Callable[[ItemT], NodeT]
) -> Connection[NodeT]:
    """The connection of `page` (items already in list order), each item mapped by
    `to_node`."""
    edges = [Edge(cursor=page.cursor_of(i), node=to_node(i)) for i in page.items]
    info = PageInfo(
        has_next_page=page.has_next,
        has_previous_page=page.has_previous,
        start_cursor=edges[0].cursor if edges else None,
        end_cursor=edges[-1].cursor if edges else None,
    )
    return Connection(edges=edges, page_info=info, total_count=page.total_count)


def first_argument(listing: Listing) -> Any:
    """The description of a paginated field's `first` argument."""
    return strawberry.argument(
        description=f"How many items to return: 1 to {listing.maximum} (BAD_USER_INPUT outside); "
        "the query's cost counts this many items."
    )


AFTER = strawberry.argument(
    description="Return the items after this cursor (an edge's `cursor`, e.g. "
    "`pageInfo.endCursor`); omit it for the first page. A malformed cursor is BAD_USER_INPUT."
)
