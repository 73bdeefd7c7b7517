"""The audit log: who did what, to what, from where, when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pymongo
from beanie import Document
from pydantic import Field
from pymongo import IndexModel

from cryptovault.documents.common import new_id


class AuditEntryDocument(Document):
    id: str = Field(default_factory=new_id)  # type: ignore[assignment]
    at: datetime
    action: str  # dotted, e.g. "auth.login.succeeded", "order.placed"
    actor_id: str | None = None  # the user who acted (None: anonymous or system)
    actor_api_key_id: str | None = None  # set when the actor used an API key
    user_id: str | None = None  # the account concerned (shown in its securityEvents)
    target: str | None = None  # "<kind>:<id>", e.g. "session:65f0...", "order:65f1..."
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    class Settings:
        name = "audit_log"
        indexes = [
            IndexModel([("at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)], name="at_id"),
            IndexModel(
                [
                    ("user_id", pymongo.ASCENDING),
                    ("at", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="user_at_id",
            ),
            IndexModel(
                [
                    ("actor_id", pymongo.ASCENDING),
                    ("at", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="actor_at_id",
            ),
            IndexModel(
                [
                    ("action", pymongo.ASCENDING),
                    ("at", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="action_at_id",
            ),
        ]
