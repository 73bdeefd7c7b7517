"""The browser side: the web app (`web/`, built by Vite into WEB_DIST_DIR) at `/` and
every app path, GraphiQL on browser visits of `/graphql`, and their hashed assets.

Invariants: every file under `/assets/` has a content hash in its name, so it is
cached for a year as immutable; pages are never cached, so a deploy is seen at the
next visit. No page loads anything from another origin and none runs an inline
script: the policy allows scripts from 'self' only. Without a build the API still
runs, and `/` says how to build the app.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from cryptovault.middleware import API_CSP

IMMUTABLE = "public, max-age=31536000, immutable"
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_HOST = re.compile(r"^[A-Za-z0-9.\[\]:-]{1,255}$")
_ASSET = re.compile(r"^[A-Za-z0-9._-]{1,200}$")

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CryptoVault</title></head>
<body>
<h1>CryptoVault API</h1>
<p>The API is running at <a href="/graphql">/graphql</a>, but the web app and the
GraphiQL page are not built.</p>
<p>Build them with Node.js 20 or later and npm: <code>make web</code> (or
<code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>), then reload this page.
<code>make run</code> builds them by itself when Node.js is installed.</p>
</body></html>
"""


def page_csp(host: str | None, *, graphiql: bool = False) -> str:
    """The policy of the app's and GraphiQL's pages: everything from 'self'.

    GraphiQL's editor (Monaco) adds <style> elements at run time and its stylesheet
    embeds its fonts as data: URLs, so its page allows inline styles and data: fonts;
    scripts stay 'self' only on both pages."""
    connect = "'self'"
    if host and _HOST.match(host):
        # Subscriptions: not every browser counts ws(s) to this host as 'self'.
        connect = f"'self' ws://{host} wss://{host}"
    style = "'self' 'unsafe-inline'" if graphiql else "'self'"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            f"style-src {style}",
            "img-src 'self' data:",
            f"font-src 'self'{' data:' if graphiql else ''}",
            f"connect-src {connect}",
            "worker-src 'self'",
            "manifest-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


class WebApp:
    """Serves the built pages and assets from `dist` (read per request, so a rebuild
    needs no restart)."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist

    @property
    def built(self) -> bool:
        return (self.dist / "index.html").is_file()

    def page(self, request: Request, name: str) -> Response:
        host = request.headers.get("host")
        path = self.dist / name
        if not path.is_file():
            return HTMLResponse(
                NOT_BUILT, status_code=503, headers={"Content-Security-Policy": API_CSP}
            )
        return HTMLResponse(
            path.read_bytes(),
            headers={"Content-Security-Policy": page_csp(host, graphiql=name == "graphiql.html")},
        )

    def graphiql(self, request: Request) -> Response:
        return self.page(request, "graphiql.html")

    async def index(self, request: Request) -> Response:
        return self.page(request, "index.html")

    async def app_path(self, request: Request) -> Response:
        """A path of the single-page app (e.g. /portfolio, a reload or a shared link):
        index.html for browser navigations; anything else is an unknown URL."""
        accept = request.headers.get("accept", "")
        if request.method not in ("GET", "HEAD") or "text/html" not in accept:
            raise HTTPException(404)
        return self.page(request, "index.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        path = self.dist / "assets" / name
        if not _ASSET.match(name) or not path.is_file():
            raise HTTPException(404)
        headers = {
            "Cache-Control": IMMUTABLE,
            # A worker script runs under its own response's policy.
            "Content-Security-Policy": page_csp(request.headers.get("host")),
        }
        return FileResponse(path, headers=headers)

    def routes(self) -> list[BaseRoute]:
        """Mounted after the API's routes: the last one catches every other GET."""
        return [
            Route("/", self.index, methods=["GET", "HEAD"]),
            Route("/assets/{name}", self.asset, methods=["GET", "HEAD"]),
            # Every method, so that a POST to an unknown path stays a 404, not a 405.
            Route("/{path:path}", self.app_path, methods=ANY_METHOD),
        ]
