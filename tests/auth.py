"""A test-only Authenticator: `Authorization: Bearer test:<user_id>[:<scope>,<scope>]`
(or the same in a WebSocket connection_init payload's `authorization`) is a Viewer.
Without scopes it is a user session; with scopes an API key of that user."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.requests import HTTPConnection

from cryptovault.errors import DomainError, Unauthenticated
from cryptovault.security.viewer import Viewer


def bearer(user_id: str, *scopes: str) -> dict[str, str]:
    token = f"test:{user_id}" + (f":{','.join(scopes)}" if scopes else "")
    return {"Authorization": f"Bearer {token}"}


class TestAuthenticator:
    async def authenticate(
        self, request: HTTPConnection, payload: Mapping[str, object] | None = None
    ) -> Viewer | None:
        raw = payload.get("authorization") if payload is not None else None
        if payload is None:
            raw = request.headers.get("authorization")
        if not raw:
            return None
        scheme, _, token = str(raw).partition(" ")
        kind, _, rest = token.partition(":")
        if scheme != "Bearer" or kind != "test" or not rest:
            raise Unauthenticated("Invalid test token")
        user_id, _, scopes = rest.partition(":")
        if not scopes:
            return Viewer(user_id=user_id)
        return Viewer(
            user_id=user_id,
            scopes=frozenset(scopes.split(",")),
            api_key_id=f"key-{user_id}",
        )

    def anonymous(self, request: HTTPConnection) -> bool:
        # As TokenAuthenticator.anonymous: no credential header, `authenticate` says None.
        return all(key != b"authorization" for key, _ in request.scope["headers"])

    async def revalidate(self, viewers: Sequence[Viewer]) -> list[Viewer | DomainError]:
        # Test tokens are stored nowhere: they stand as long as the socket does.
        return list(viewers)
