"""Helpers shared by documents: ids, timestamps and the time-cursor page filter.

Ids are ObjectId hex strings. They sort by creation time, look the same in every
layer (a Viewer's user id, a GraphQL ID, a Mongo _id) and a malformed id from a client
is simply not found, never a parse error.

Timestamps are UTC with millisecond precision, what the store keeps: a value compared
or put in a cursor before it is written equals the value read back."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from beanie import Document
from bson import Decimal128, ObjectId


def new_id() -> str:
    return str(ObjectId())


def now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def older_than(after: tuple[datetime, str], field: str = "created_at") -> dict[str, Any]:
    """The store filter for what comes after a time cursor's item (schema.pagination's
    decode_time_cursor) in (field, _id) newest-first order."""
    at, item_id = after
    return {"$or": [{field: {"$lt": at}}, {field: at, "_id": {"$lt": item_id}}]}


async def by_ids[D: Document](model: type[D], ids: list[str], **owner: str) -> list[D]:
    """The documents of `model` with these ids (and these owner fields), in one read."""
    if not ids:
        return []
    return await model.find({"_id": {"$in": ids}, **owner}).to_list()


def to_decimal(value: Any) -> Decimal:
    """A stored amount (Decimal128, or a Decimal/str/int from a model) as a Decimal."""
    return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))
