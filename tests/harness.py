"""Apps with their own settings, for tests of limits and policies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette

from cryptovault.app import create_app
from cryptovault.services import Services, start_services
from tests.auth import TestAuthenticator
from tests.conftest import make_settings


@contextlib.asynccontextmanager
async def running(store_url: str, **overrides: Any) -> AsyncIterator[tuple[Starlette, Services]]:
    """Services and app for `make_settings(**overrides)`, with the test authenticator."""
    settings = make_settings(store_url, **overrides)
    services = await start_services(settings, feed=None)
    services.authenticator = TestAuthenticator()
    try:
        yield create_app(settings, services=services), services
    finally:
        with contextlib.suppress(Exception):
            await services.store.client.drop_database(settings.mongodb_db)
        await services.close()


@contextlib.asynccontextmanager
async def http(app: Starlette, ip: str = "10.9.8.7") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def gql(client: httpx.AsyncClient, query: str, variables: dict | None = None, **kw: Any):
    return await client.post("/graphql", json={"query": query, "variables": variables or {}}, **kw)


def codes(body: dict | list) -> list[str]:
    items = body if isinstance(body, list) else [body]
    return [e.get("extensions", {}).get("code") for b in items for e in b.get("errors") or []]
