"""The smallest operation: `{ ping }`."""

from __future__ import annotations

import strawberry


@strawberry.type
class PingQuery:
    @strawberry.field(
        description='Always "pong": the cheapest operation, to check that the API answers.'
    )
    def ping(self) -> str:
        return "pong"
