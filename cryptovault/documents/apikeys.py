"""Partner API keys: only a digest of the secret is stored."""

from __future__ import annotations

from datetime import datetime

import pymongo
from beanie import Document
from pydantic import Field
from pymongo import IndexModel

from cryptovault.documents.common import new_id


class ApiKeyDocument(Document):
    id: str = Field(default_factory=new_id)  # type: ignore[assignment]
    user_id: str
    name: str
    prefix: str  # public part of the key, used to find it
    secret_hash: str  # SHA-256 of the whole key
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    # The owner's `key_epoch` when the key was created (UserDocument).
    epoch: int = 0

    class Settings:
        name = "api_keys"
        indexes = [
            IndexModel([("prefix", pymongo.ASCENDING)], unique=True, name="prefix_unique"),
            IndexModel(
                [
                    ("user_id", pymongo.ASCENDING),
                    ("created_at", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="user_created",
            ),
        ]
