"""Accounts in the schema: the `User` type and the `viewer` query."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from cryptovault.documents.users import UserDocument
from cryptovault.resolvers import users as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.node import NODE_ID, Node


@strawberry.enum(description="What an account may do: ADMIN adds the admin-only fields.")
class Role(Enum):
    USER = strawberry.enum_value("USER", description="An account holder: their own data only.")
    ADMIN = strawberry.enum_value(
        "ADMIN",
        description="An operator: also the admin fields (users, stats, auditLog, "
        "reconciliation, freezes, adjustments), in a user session only.",
    )


@strawberry.type(description="An account.")
class User(Node):
    id: strawberry.ID = strawberry.field(description=NODE_ID)
    email: str = strawberry.field(description="Normalized: trimmed and lower-case.")
    role: Role = strawberry.field(description="USER, or ADMIN for operators.")
    two_factor_enabled: bool = strawberry.field(
        description="True once a TOTP app is confirmed: login then needs `otp`."
    )
    frozen: bool = strawberry.field(
        description="A frozen account can sign in and read, but not trade or create API keys."
    )
    frozen_reason: str | None = strawberry.field(
        default=None, description="Why the account was frozen (set by an administrator)."
    )
    created_at: datetime = strawberry.field(description="When the account was registered.")
    last_login_at: datetime | None = strawberry.field(
        default=None, description="The last successful sign-in."
    )

    @classmethod
    def from_domain(cls, doc: UserDocument) -> User:
        return cls(
            id=doc.id,  # type: ignore[arg-type]
            email=doc.email,
            role=Role(doc.role),
            two_factor_enabled=doc.two_factor_enabled,
            frozen=doc.frozen,
            frozen_reason=doc.frozen_reason,
            created_at=doc.created_at,
            last_login_at=doc.last_login_at,
        )


@strawberry.type
class UserQuery:
    @strawberry.field(
        description="The caller: null for anonymous callers; UNAUTHENTICATED when the "
        "credentials sent are refused (e.g. an expired access token)."
    )
    async def viewer(self, info: Info) -> User | None:
        doc = await resolve.viewer(info)
        return User.from_domain(doc) if doc is not None else None
