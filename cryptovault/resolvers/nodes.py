"""`node`/`nodes`: find the objects behind ids with the same owner and permission
rules as each type's own fields (schema/nodes.py says which)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptovault.documents.alerts import PriceAlertDocument
from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.common import by_ids
from cryptovault.documents.trading import OrderDocument, TradeDocument
from cryptovault.documents.users import UserDocument
from cryptovault.errors import BadUserInput, DomainError, Forbidden
from cryptovault.resolvers import access

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info
    from cryptovault.security.viewer import Viewer

# What ids look like (documents/common.py): an ObjectId, or a trade's
# "<order id>:<fill number>". Anything else is no object: not looked up.
_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
_TRADE_ID = re.compile(r"[0-9a-f]{24}:[0-9]{1,9}")
PORTFOLIO_READ = "portfolio:read"
# The most ids one `nodes` call reads (its cost is one object per id).
MAX_NODES = 100

type NodeDocument = (
    OrderDocument | TradeDocument | PriceAlertDocument | ApiKeyDocument | UserDocument
)


def _may(check: Callable[[Info], object], info: Info) -> bool:
    try:
        check(info)
    except DomainError:
        return False
    return True


async def nodes(info: Info, ids: list[str]) -> list[NodeDocument | None]:
    """The documents behind `ids`, in order (None where the caller may not read it)."""
    viewer: Viewer = access.require_viewer(info)
    if not 1 <= len(ids) <= MAX_NODES:
        raise BadUserInput(f"ids must hold 1 to {MAX_NODES} ids", count=len(ids))
    wanted = set(ids)
    object_ids = sorted(i for i in wanted if _OBJECT_ID.fullmatch(i))
    trade_ids = sorted(i for i in wanted if _TRADE_ID.fullmatch(i))
    admin = _may(access.require_admin, info)
    user_ids = object_ids if admin else [i for i in object_ids if i == viewer.user_id]
    mine = viewer.user_id
    orders, alerts, keys, users, trades = await asyncio.gather(
        by_ids(OrderDocument, object_ids, user_id=mine),
        by_ids(PriceAlertDocument, object_ids, user_id=mine),
        by_ids(ApiKeyDocument, object_ids, user_id=mine),
        by_ids(UserDocument, user_ids),
        by_ids(TradeDocument, trade_ids, user_id=mine),
    )
    # The caller's own objects, found: the key's scopes and the session rule apply as
    # on the type's own fields (a refusal reveals nothing of anyone else's).
    if orders or alerts or trades:
        access.require_scope(info, PORTFOLIO_READ)
    if keys and not _may(access.require_user_session, info):
        raise Forbidden(access.NOT_USER_SESSION)
    found: dict[str, NodeDocument] = {}
    for docs in (users, keys, alerts, orders, trades):
        found.update((d.id, d) for d in docs)
    return [found.get(i) for i in ids]
