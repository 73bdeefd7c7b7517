"""The Node interface (Relay's Object Identification): every main object answers
`node(id:)` with its own id.

A Node's id is the object's existing `id`, unchanged: ids are ObjectId strings (one
generator for every collection, so no two objects share one) or, for trades,
"<order id>:<fill number>". An id is therefore unique across types, which is what
Relay and normalized caches need, and no existing `id` field changes meaning (opaque
"Type:id" ids would have changed every `id` a client already stored)."""

from __future__ import annotations

import strawberry

NODE_ID = (
    "The object's id: unique across every type, stable for the object's life, the same "
    "value every other field and argument uses (e.g. `cancelOrder(id:)`). Opaque: do not "
    "parse it."
)


@strawberry.interface(
    description="An object with an id unique across every type, refetchable with "
    "`node(id:)`/`nodes(ids:)`: Order, Trade, PriceAlert, ApiKey, User."
)
class Node:
    id: strawberry.ID = strawberry.field(description=NODE_ID)
