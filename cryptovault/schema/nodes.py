"""The `node`/`nodes` root fields: refetch any main object (order, trade, price alert,
API key, user) by its id alone (the interface: schema/node.py). The type behind an id
is found by looking it up with the owner in the filter (resolvers/nodes.py): an id the
caller may not read answers null, exactly as `order(id:)` does."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import strawberry

from cryptovault.documents.alerts import PriceAlertDocument
from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.trading import OrderDocument, TradeDocument
from cryptovault.documents.users import UserDocument
from cryptovault.extensions.cost import cost
from cryptovault.resolvers import nodes as resolve
from cryptovault.resolvers.context import Info
from cryptovault.resolvers.nodes import MAX_NODES, NodeDocument
from cryptovault.schema.alerts import PriceAlert
from cryptovault.schema.auth import ApiKey
from cryptovault.schema.node import Node
from cryptovault.schema.permissions import SIGNED_IN
from cryptovault.schema.trading import Order, Trade
from cryptovault.schema.users import User

# Each stored shape's Node type.
_NODE_TYPES: dict[type, Callable[[Any], Node]] = {
    OrderDocument: Order.from_domain,
    TradeDocument: Trade.from_domain,
    PriceAlertDocument: PriceAlert.from_domain,
    ApiKeyDocument: ApiKey.from_domain,
    UserDocument: User.from_domain,
}


def _node(doc: NodeDocument | None) -> Node | None:
    return _NODE_TYPES[type(doc)](doc) if doc is not None else None


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
        permission_classes=SIGNED_IN,
    )
    async def node(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="A Node's `id`.")],
    ) -> Node | None:
        return _node((await resolve.nodes(info, [str(id)]))[0])

    @strawberry.field(
        description=f"The objects with these ids, in the same order (null where `node` "
        f"would be null). At most {MAX_NODES} ids (BAD_USER_INPUT beyond); costs as many "
        "objects as ids. " + READS,
        permission_classes=SIGNED_IN,
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
        return [_node(d) for d in await resolve.nodes(info, [str(i) for i in ids])]
