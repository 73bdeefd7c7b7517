"""How the app serves the web build (cryptovault/web.py): pages under a strict CSP and
never cached, hashed assets cached for good, the single-page app's paths, and a
page that says how to build the app when there is no build."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from cryptovault.app import create_app
from cryptovault.web import IMMUTABLE, page_csp

HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text(
        '<!doctype html><div id="root"></div><script type="module" src="/assets/app-X1.js"></script>'
    )
    (tmp_path / "graphiql.html").write_text("<!doctype html><title>GraphiQL</title>")
    (tmp_path / "assets" / "app-X1.js").write_text("export {}")
    return tmp_path


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_the_app_is_served_at_the_root_under_a_strict_policy(settings, services, dist):
    async with client(create_app(replace(settings, web_dist_dir=dist), services=services)) as c:
        page = await c.get("/", headers=HTML)
    assert page.status_code == 200 and 'id="root"' in page.text
    csp = page.headers["content-security-policy"]
    assert csp == page_csp("testserver")
    assert "script-src 'self';" in csp and "unsafe" not in csp
    assert page.headers["cache-control"] == "no-store"


async def test_hashed_assets_are_cached_for_good_and_unknown_ones_are_404(settings, services, dist):
    async with client(create_app(replace(settings, web_dist_dir=dist), services=services)) as c:
        asset = await c.get("/assets/app-X1.js")
        missing = await c.get("/assets/app-nope.js")
        escape = await c.get("/assets/..%2Findex.html")
    assert asset.status_code == 200 and asset.text == "export {}"
    assert asset.headers["cache-control"] == IMMUTABLE
    assert asset.headers["content-type"].startswith("text/javascript")
    assert missing.status_code == 404 and escape.status_code == 404


async def test_app_paths_fall_back_to_the_app_for_browsers_only(settings, services, dist):
    async with client(create_app(replace(settings, web_dist_dir=dist), services=services)) as c:
        deep = await c.get("/markets/BTC", headers=HTML)
        api_client = await c.get("/markets/BTC")
        post = await c.post("/portfolio", headers=HTML)
        health = await c.get("/health", headers=HTML)
    assert deep.status_code == 200 and 'id="root"' in deep.text
    assert api_client.status_code == 404 and post.status_code == 404
    assert health.json()["status"] == "ok"


async def test_without_a_build_the_api_runs_and_the_root_says_how_to_build(
    settings, services, tmp_path
):
    app = create_app(replace(settings, web_dist_dir=tmp_path / "missing"), services=services)
    async with client(app) as c:
        root = await c.get("/", headers=HTML)
        graphiql = await c.get("/graphql", headers=HTML)
        query = await c.post("/graphql", json={"query": "{ ping }"})
    assert root.status_code == 503 and "make web" in root.text and "npm ci" in root.text
    assert "make web" in graphiql.text
    assert root.headers["content-security-policy"].startswith("default-src 'none'")
    assert query.json()["data"] == {"ping": "pong"}
