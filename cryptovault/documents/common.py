"""Helpers shared by documents: ids and timestamps.

Ids are ObjectId hex strings. They sort by creation time, look the same in every
layer (a Viewer's user id, a GraphQL ID, a Mongo _id) and a malformed id from a client
is simply not found, never a parse error.

Timestamps are UTC with millisecond precision, what the store keeps: a value compared
or put in a cursor before it is written equals the value read back."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId


def new_id() -> str:
    return str(ObjectId())


def now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
