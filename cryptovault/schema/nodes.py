"""The `node`/`nodes` root fields: refetch any main object (order, trade, price alert,
API key, user) by its id alone (the interface: schema/node.py). The type behind an id
is found by looking it up with the owner in the filter (resolvers/nodes.py): an id the
caller may not read answers null, exactly as `order(id:)` does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import strawberry

from cryptovault.extensions.cost import cost
from cryptovault.resolvers import nodes as resolve
from cryptovault.schema.context import Info
from cryptovault.schema.node import MAX_NODES, Node
from cryptovault.schema.permissions import IsAuthenticated


def _ids_count(args: Mapping[str, Any]) -> int:
    ids = args.get("ids")
    # Past the maximum the resolver refuses the list anyway.
    return min(len(ids), MAX_NODES) if isinstance(ids, list) else MAX_NODES


READS = (
    "Orders, trades and price alerts need the `portfolio:read` scope with an API key "
    "(FORBIDDEN, `extensions.scope`, when the id is one of the caller's and the key lacks "
    "it); API keys need a user session (FORBIDDEN with an API key); users: the caller "
    "itself, any user for an administrator (in a user session, from an allowed address). "
    "Anything else, another user's object or an unknown or malformed id, is null."
)


@strawberry.type
class NodeQuery:
    @strawberry.field(
        description="The object with this id (any type implementing Node), or null. " + READS,
        permission_classes=[IsAuthenticated],
    )
    async def node(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="A Node's `id`.")],
    ) -> Node | None:
        return (await resolve.nodes(info, [str(id)]))[0]

    @strawberry.field(
        description=f"The objects with these ids, in the same order (null where `node` "
        f"would be null). At most {MAX_NODES} ids (BAD_USER_INPUT beyond); costs as many "
        "objects as ids. " + READS,
        permission_classes=[IsAuthenticated],
        metadata=cost(list_size=_ids_count),
    )
    async def nodes(
        self,
        info: Info,
        ids: Annotated[
            list[strawberry.ID],
            strawberry.argument(description=f"1 to {MAX_NODES} Node ids; repeats allowed."),
        ],
    ) -> list[Node | None]:
        return await resolve.nodes(info, [str(i) for i in ids])
