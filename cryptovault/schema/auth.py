"""Sign-in, sessions, two-factor authentication and API keys in the schema."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.sessions import SessionDocument
from cryptovault.extensions.cost import cost
from cryptovault.resolvers import auth as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.enums import register_enum
from cryptovault.schema.node import NODE_ID, Node
from cryptovault.schema.pagination import AFTER, Connection, connection, first_argument
from cryptovault.schema.permissions import USER_SESSION, IsAuthenticated, IsUserSession, NotFrozen
from cryptovault.schema.users import User
from cryptovault.security import identity
from cryptovault.security.apikeys import API_KEYS
from cryptovault.security.sessions import SESSIONS


@strawberry.input(description="A new account.")
class RegisterInput:
    email: str = strawberry.field(
        description="The sign-in address (trimmed, lower-cased); CONFLICT if an account has it."
    )
    password: str = strawberry.field(
        description="10 to 128 characters, not containing the email's local part."
    )


@strawberry.input(description="Credentials for `login`.")
class LoginInput:
    email: str = strawberry.field(description="The account's email (case-insensitive).")
    password: str = strawberry.field(description="The account's password.")
    otp: str | None = strawberry.field(
        default=None,
        description="With two-factor authentication on: the current 6-digit code, or a "
        "recovery code (each works once).",
    )
    device_token: str | None = strawberry.field(
        default=None,
        description="The `deviceToken` this device received when it last signed in "
        "(browsers send the `cryptovault_device` cookie instead): failed attempts made "
        "elsewhere on the account never slow this device down.",
    )


@strawberry.type(
    description="A signed-in session. Send `accessToken` as `Authorization: Bearer ...`; "
    "exchange `refreshToken` (once) for new tokens with `refreshToken` before `expiresAt`. "
    "Over HTTP the refresh token is also set as an HttpOnly cookie for browsers."
)
class AuthPayload:
    access_token: str = strawberry.field(description="A JWT valid for 15 minutes.")
    refresh_token: str = strawberry.field(
        description="Opaque; works once: each use returns a new one. Reusing a spent "
        "refresh token revokes the whole session."
    )
    expires_at: datetime = strawberry.field(description="When the access token expires.")
    refresh_token_expires_at: datetime = strawberry.field(
        description="When the refresh token (and so the session) expires unless "
        "used: REFRESH_TOKEN_TTL_DAYS (14 by default) after this "
        "sign-in or refresh."
    )
    user: User = strawberry.field(description="The signed-in account.")
    device_token: str | None = strawberry.field(
        default=None,
        description="`register` and `login` only: keep it on this device and send it "
        "with every later `login` (LoginInput.deviceToken). Valid for a year, until the "
        "password changes. Over HTTP also set as the HttpOnly cookie `cryptovault_device`.",
    )

    @classmethod
    def from_domain(cls, signed_in: identity.SignIn) -> AuthPayload:
        return cls(
            access_token=signed_in.access.token,
            refresh_token=signed_in.refresh_token,
            expires_at=signed_in.access.claims.expires_at,
            refresh_token_expires_at=signed_in.refresh_expires_at,
            user=User.from_domain(signed_in.user),
            device_token=signed_in.device_token,
        )


@strawberry.type(description="A signed-in device: one login and its refreshes.")
class Session:
    id: strawberry.ID = strawberry.field(description="The session's id, for `revokeSession`.")
    created_at: datetime = strawberry.field(description="When the session signed in.")
    last_used_at: datetime = strawberry.field(description="When its refresh token was last used.")
    expires_at: datetime = strawberry.field(
        description="When the session ends unless refreshed again."
    )
    ip: str | None = strawberry.field(
        description="The client address it signed in or last refreshed from."
    )
    user_agent: str | None = strawberry.field(
        description="The User-Agent header it signed in or last refreshed with."
    )
    current: bool = strawberry.field(description="True for the session making this request.")

    @classmethod
    def from_domain(cls, doc: SessionDocument, current_id: str | None) -> Session:
        return cls(
            id=doc.id,  # type: ignore[arg-type]
            created_at=doc.created_at,
            last_used_at=doc.last_used_at,
            expires_at=doc.expires_at,
            ip=doc.ip,
            user_agent=doc.user_agent,
            current=doc.id == current_id,
        )


class ApiKeyScope(Enum):
    MARKET_READ = "market:read"
    PORTFOLIO_READ = "portfolio:read"
    PORTFOLIO_WRITE = "portfolio:write"  # watchlist and price alerts
    TRADE = "trade"
    SCHEMA_READ = "schema:read"


register_enum(
    ApiKeyScope,
    name="ApiKeyScope",
    description="What an API key may do (it acts as its owner within these).",
    values={
        "MARKET_READ": "Market data. Market fields are public today, so this grants nothing "
        "more yet; give it to keys that only read the market.",
        "PORTFOLIO_READ": "Read the account: balances, portfolio, orders, trades, ledger, "
        "watchlist, price alerts, `node` for those, and their streams.",
        "PORTFOLIO_WRITE": "Change the watchlist and price alerts.",
        "TRADE": "Place and cancel orders.",
        "SCHEMA_READ": "Introspect the schema where production forbids it.",
    },
)


@strawberry.type(description="A partner API key (the secret itself is never shown again).")
class ApiKey(Node):
    id: strawberry.ID = strawberry.field(description=NODE_ID)
    name: str = strawberry.field(description="Your label for it (1 to 64 characters).")
    prefix: str = strawberry.field(description="The key's public part: `cvk_<prefix>_...`.")
    scopes: list[ApiKeyScope] = strawberry.field(
        description="What it may do; it acts as its owner within these."
    )
    created_at: datetime = strawberry.field(description="When it was created.")
    last_used_at: datetime | None = strawberry.field(description="Updated at most once a minute.")
    revoked_at: datetime | None = strawberry.field(
        description="When it was revoked; null while active."
    )

    @classmethod
    def from_domain(cls, doc: ApiKeyDocument) -> ApiKey:
        return cls(
            id=doc.id,  # type: ignore[arg-type]
            name=doc.name,
            prefix=doc.prefix,
            scopes=[ApiKeyScope(s) for s in doc.scopes],
            created_at=doc.created_at,
            last_used_at=doc.last_used_at,
            revoked_at=doc.revoked_at,
        )


@strawberry.type(description="A new API key. `key` is shown only here, once: store it now.")
class CreatedApiKey:
    key: str = strawberry.field(description="Send as the `X-API-Key` header.")
    api_key: ApiKey = strawberry.field(description="The key's details, as `apiKeys` lists them.")


@strawberry.type(
    description="Two-factor setup: add `secret` (or scan `otpauthUri`) in an authenticator "
    "app, then call `confirmTwoFactor` with a code. Store the recovery codes: each signs "
    "in once without the app. Shown only here."
)
class TwoFactorSetup:
    secret: str = strawberry.field(
        description="The TOTP secret (base32), for manual entry in an authenticator app."
    )
    otpauth_uri: str = strawberry.field(
        description="The same secret as an otpauth:// URI, to show as a QR code."
    )
    recovery_codes: list[str] = strawberry.field(
        description="10 single-use codes that sign in (and disable 2FA) without the app."
    )

    @classmethod
    def from_domain(cls, setup: identity.TwoFactorSetup) -> TwoFactorSetup:
        return cls(
            secret=setup.secret, otpauth_uri=setup.otpauth_uri, recovery_codes=setup.recovery_codes
        )


@strawberry.type
class AuthQuery:
    @strawberry.field(
        description="The viewer's signed-in sessions, newest first.",
        permission_classes=USER_SESSION,
        metadata=cost(max_page=SESSIONS.maximum),
    )
    async def sessions(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(SESSIONS)] = SESSIONS.default,
        after: Annotated[str | None, AFTER] = None,
    ) -> Connection[Session]:
        page, current = await resolve.sessions(info, first, after)
        return connection(page, lambda doc: Session.from_domain(doc, current))

    @strawberry.field(
        description="The viewer's active API keys, newest first.",
        permission_classes=USER_SESSION,
        metadata=cost(max_page=API_KEYS.maximum),
    )
    async def api_keys(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(API_KEYS)] = API_KEYS.default,
        after: Annotated[str | None, AFTER] = None,
    ) -> Connection[ApiKey]:
        return connection(await resolve.api_keys(info, first, after), ApiKey.from_domain)


@strawberry.type
class AuthMutation:
    @strawberry.mutation(description="Create an account and sign in.")
    async def register(
        self,
        info: Info,
        input: Annotated[
            RegisterInput, strawberry.argument(description="The new account's email and password.")
        ],
    ) -> AuthPayload:
        return AuthPayload.from_domain(await resolve.register(info, input.email, input.password))

    @strawberry.mutation(
        description="Sign in. Wrong email or password: UNAUTHENTICATED (the same either "
        "way). 5 failures in 15 minutes: ACCOUNT_LOCKED for 15 minutes. With two-factor "
        "on and no valid `otp`: TWO_FACTOR_REQUIRED."
    )
    async def login(
        self,
        info: Info,
        input: Annotated[
            LoginInput,
            strawberry.argument(
                description="Email, password, and the 2FA code and device token when you have them."
            ),
        ],
    ) -> AuthPayload:
        signed_in = await resolve.login(
            info, input.email, input.password, input.otp, input.device_token
        )
        return AuthPayload.from_domain(signed_in)

    @strawberry.mutation(
        description="Exchange a refresh token for new tokens. Without the argument the "
        "HttpOnly cookie is used, and the request must carry the `X-CSRF-Protection` header."
    )
    async def refresh_token(
        self,
        info: Info,
        refresh_token: Annotated[
            str | None,
            strawberry.argument(
                description="The refresh token from the last AuthPayload; omit it in "
                "browsers (the HttpOnly cookie is used)."
            ),
        ] = None,
    ) -> AuthPayload:
        return AuthPayload.from_domain(await resolve.refresh(info, refresh_token))

    @strawberry.mutation(
        description="End the current session and revoke its access token. A browser whose "
        "access token expired can log out with the refresh cookie (and X-CSRF-Protection)."
    )
    async def logout(self, info: Info) -> bool:
        return await resolve.logout(info)

    @strawberry.mutation(
        description="Change the password; every other session is signed out.",
        permission_classes=USER_SESSION,
    )
    async def change_password(
        self,
        info: Info,
        current_password: Annotated[
            str, strawberry.argument(description="The password now (BAD_USER_INPUT if wrong).")
        ],
        new_password: Annotated[
            str,
            strawberry.argument(
                description="The new password: 10 to 128 characters, not containing the "
                "email's local part."
            ),
        ],
    ) -> bool:
        return await resolve.change_password(info, current_password, new_password)

    @strawberry.mutation(
        description="Mail a single-use reset token (valid 30 minutes) if the account exists. "
        "Always returns true: it does not reveal whether an account exists."
    )
    async def request_password_reset(
        self,
        info: Info,
        email: Annotated[str, strawberry.argument(description="The account's email.")],
    ) -> bool:
        return await resolve.request_password_reset(info, email)

    @strawberry.mutation(
        description="Set a new password with a mailed reset token; every session is signed out."
    )
    async def reset_password(
        self,
        info: Info,
        token: Annotated[
            str,
            strawberry.argument(
                description="The token from the reset mail (single use, 30 minutes); "
                "BAD_USER_INPUT when invalid, spent or expired."
            ),
        ],
        new_password: Annotated[
            str,
            strawberry.argument(
                description="The new password: 10 to 128 characters, not containing the "
                "email's local part."
            ),
        ],
    ) -> bool:
        return await resolve.reset_password(info, token, new_password)

    @strawberry.mutation(
        description="Sign out one of the viewer's sessions (NOT_FOUND for any other id).",
        permission_classes=USER_SESSION,
    )
    async def revoke_session(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="A Session id from `sessions`.")
        ],
    ) -> bool:
        return await resolve.revoke_session(info, id)

    @strawberry.mutation(
        description="Sign out every session but this one; returns how many ended.",
        permission_classes=USER_SESSION,
    )
    async def revoke_other_sessions(self, info: Info) -> int:
        return await resolve.revoke_other_sessions(info)

    @strawberry.mutation(
        description="Start two-factor setup (confirm it with `confirmTwoFactor`).",
        permission_classes=USER_SESSION,
    )
    async def enable_two_factor(self, info: Info) -> TwoFactorSetup:
        return TwoFactorSetup.from_domain(await resolve.enable_two_factor(info))

    @strawberry.mutation(
        description="Turn two-factor authentication on with a current code from the app.",
        permission_classes=USER_SESSION,
    )
    async def confirm_two_factor(
        self,
        info: Info,
        code: Annotated[
            str,
            strawberry.argument(
                description="The 6-digit code the authenticator app shows now; "
                "BAD_USER_INPUT if wrong."
            ),
        ],
    ) -> User:
        return User.from_domain(await resolve.confirm_two_factor(info, code))

    @strawberry.mutation(
        description="Turn two-factor authentication off with a current code or a recovery code.",
        permission_classes=USER_SESSION,
    )
    async def disable_two_factor(
        self,
        info: Info,
        code: Annotated[
            str,
            strawberry.argument(
                description="A current 6-digit code or an unused recovery code; "
                "BAD_USER_INPUT if wrong."
            ),
        ],
    ) -> User:
        return User.from_domain(await resolve.disable_two_factor(info, code))

    @strawberry.mutation(
        description="Create an API key for a partner integration (frozen accounts cannot).",
        permission_classes=[IsAuthenticated, IsUserSession, NotFrozen],
    )
    async def create_api_key(
        self,
        info: Info,
        name: Annotated[
            str, strawberry.argument(description="Your label for the key: 1 to 64 characters.")
        ],
        scopes: Annotated[
            list[ApiKeyScope],
            strawberry.argument(
                description="At least one scope (BAD_USER_INPUT otherwise): grant only what"
                " the integration needs."
            ),
        ],
    ) -> CreatedApiKey:
        doc, key = await resolve.create_api_key(info, name, [s.value for s in scopes])
        return CreatedApiKey(key=key, api_key=ApiKey.from_domain(doc))

    @strawberry.mutation(
        description="Revoke one of the viewer's API keys (NOT_FOUND for any other id).",
        permission_classes=USER_SESSION,
    )
    async def revoke_api_key(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="An ApiKey id from `apiKeys`.")
        ],
    ) -> ApiKey:
        return ApiKey.from_domain(await resolve.revoke_api_key(info, id))
