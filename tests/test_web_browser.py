"""The web app and GraphiQL in a real browser: headless Debian Chromium driven by
Playwright against `cryptovault serve` (embedded store) fed by a replayed price
file in which BTC rises steadily, so that orders fill and alerts fire on cue.

Every step waits for a condition on the page, never for a fixed time. Every page
is watched for console errors and CSP violations. With CRYPTOVAULT_SCREENSHOTS set
(`make screenshots`) the tests also save a screenshot of each page there.
"""

from __future__ import annotations

import io
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import zxingcpp
from PIL import Image

from tests.conftest import LAX_AUTH_LIMITS, free_port

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "web" / "dist"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("CRYPTOVAULT_SCREENSHOTS")
TIMEOUT_MS = 30_000
PRICE = re.compile(r"^\$[\d,]+\.\d\d$")
# Replayed ticks: every asset every 0.25 s for 20 minutes; BTC rises by 1.25 to
# 8.75 USD a tick (strictly), the others wander.
TICK_SECONDS = 0.25
TICKS = 4_800
START = {
    "BTC": 91_000.0,
    "ETH": 3_050.0,
    "SOL": 138.0,
    "XRP": 2.18,
    "ADA": 0.42,
    "DOGE": 0.148,
    "DOT": 2.35,
    "AVAX": 13.8,
    "LINK": 13.2,
    "LTC": 84.5,
}


def _missing() -> list[str]:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -e '.[dev]')")
    if not (DIST / "index.html").is_file() or not (DIST / "graphiql.html").is_file():
        missing.append("the web build (make web)")
    return missing


if _missing():
    if os.environ.get("CI") == "true":
        raise RuntimeError("browser tests cannot run in CI: missing " + ", ".join(_missing()))
    pytest.skip("browser tests need " + ", ".join(_missing()), allow_module_level=True)

from playwright.sync_api import (  # noqa: E402
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

expect.set_options(timeout=TIMEOUT_MS)


def _price(symbol: str, i: int) -> float:
    base = START[symbol]
    if symbol == "BTC":
        return base + 5 * i + 15 * math.sin(i / 6)  # derivative >= 2.5: always rising
    k = len(symbol)
    return base * (1 + 0.012 * math.sin(i / 60 + k) + 0.004 * math.sin(i / 9 + 2 * k))


def write_prices(path: Path) -> None:
    rows = ["timestamp,symbol,price,volume"]
    for i in range(TICKS):
        ts = f"{1_700_000_000 + i * TICK_SECONDS:.2f}"
        rows.extend(f"{ts},{s},{_price(s, i):.6f},0.5" for s in START)
    path.write_text("\n".join(rows) + "\n")


class Server:
    """`cryptovault serve` in a child process; stop() and start() again keep its
    port and data (a restart as a deploy would do it)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        prices = data_dir / "prices.csv"
        write_prices(prices)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "development",
            "DATA_DIR": str(data_dir),
            "MARKET_FEED": f"replay:{prices}",
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "WARNING",
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_KIB": "1024",
            "ARGON2_PARALLELISM": "1",
            "AUTH_RATE_LIMITS": LAX_AUTH_LIMITS,
            "COST_BUDGET": "10000000",
            "COST_BUDGET_ANONYMOUS": "10000000",
            "REQUEST_TIMEOUT_SECONDS": "60",
            "WEB_DIST_DIR": str(DIST),
        }
        self.env.pop("MONGODB_URL", None)
        self.env.pop("REDIS_URL", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.port_args = ("--port", str(self.port))

    def cli(self, *args: str, stdin: str | None = None) -> None:
        subprocess.run(
            [sys.executable, "-m", "cryptovault", *args],
            env=self.env,
            input=stdin.encode() if stdin else None,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cryptovault", "serve", "--host", "127.0.0.1", *self.port_args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.data_dir / "server.log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.data_dir / "server.log").read_text()[-3000:])
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not get ready within 90 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def query(self, query: str, token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = httpx.post(f"{self.url}/graphql", json={"query": query}, headers=headers).json()
        assert not body.get("errors"), body
        return body["data"]


ADMIN = ("ops@example.com", "operator passphrase 42")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("web"))
    # Before the server starts: the embedded store is then not in use.
    server.cli("create-admin", "--email", ADMIN[0], "--password-stdin", stdin=ADMIN[1])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
            ],
        )
        yield browser
        browser.close()


class Watched:
    """A browser context whose pages report console errors, CSP violations and any
    request leaving the server's origin."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base
        self.context: BrowserContext = browser.new_context(
            base_url=base, viewport={"width": 1360, "height": 860}
        )
        self.problems: list[str] = []
        self.foreign: list[str] = []
        self.context.expose_binding(
            "__cspViolation", lambda _source, text: self.problems.append(f"CSP: {text}")
        )
        self.context.add_init_script(
            "document.addEventListener('securitypolicyviolation', e =>"
            " window.__cspViolation(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));"
        )
        self.context.route("**/*", self._route)
        self.page = self.new_page()

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.base) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def new_page(self) -> Page:
        page = self.context.new_page()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.problems.append(f"console: {message.text[:300]}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        return page

    def check(self, allow: Callable[[str], bool] = lambda _: False) -> None:
        problems = [p for p in self.problems if not allow(p)]
        assert not problems, problems
        assert not self.foreign, f"requests to other origins: {self.foreign}"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Browser, server: Server) -> Iterator[Watched]:
    w = Watched(browser, server.url)
    yield w
    try:
        w.check()
    finally:
        w.close()


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def sign_up(page: Page, email: str, password: str = "correct horse battery") -> None:
    page.goto("/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account").last.click()
    expect(page).to_have_url(f"{page.url.split('/signup')[0]}/portfolio")
    expect(page.get_by_test_id("total-value")).to_have_text("$10,000.00")


def btc_price(server: Server) -> Decimal:
    return Decimal(server.query('{ prices(symbols: ["BTC"]) { price } }')["prices"][0]["price"])


# -- the tests ---------------------------------------------------------------------------


def test_markets_show_live_prices_with_a_trend(watched: Watched) -> None:
    page = watched.page
    page.goto("/")
    cell = page.get_by_test_id("price-BTC")
    expect(cell).to_have_text(PRICE)
    first = cell.inner_text()
    expect(cell).not_to_have_text(first)  # the next tick
    expect(page.locator('[data-testid="market-ETH"] svg.spark path')).to_have_count(1)
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-status", "connected")
    shot(page, "markets")


def test_candle_chart_pages_history_and_moves_the_open_candle(watched: Watched) -> None:
    page = watched.page
    page.goto("/")
    page.get_by_test_id("market-BTC").click()
    expect(page).to_have_url(f"{watched.base}/markets/BTC")
    chart = page.get_by_test_id("candle-chart")
    expect(chart).not_to_have_attribute("data-candles", "0")
    expect(chart.locator("canvas").first).to_be_visible()
    expect(chart).to_have_attribute("data-live-close", re.compile(r"\d"))
    close = chart.get_attribute("data-live-close")
    expect(chart).not_to_have_attribute("data-live-close", close or "")  # it moves
    page.get_by_role("tab", name="5m", exact=True).click()
    expect(page.get_by_role("tab", name="5m", exact=True)).to_have_attribute(
        "aria-selected", "true"
    )
    expect(page.get_by_test_id("candle-chart")).not_to_have_attribute("data-candles", "0")
    shot(page, "chart")


def test_sign_up_place_cancel_and_fill_orders(watched: Watched, server: Server) -> None:
    page = watched.page
    sign_up(page, "trader@example.com")
    page.goto("/markets/BTC")
    ticket = page.get_by_test_id("order-ticket")
    # The server's validation error is shown at the field it names.
    ticket.get_by_label("Quantity (BTC)").fill("0.01")
    ticket.get_by_label("Limit price (USD)").fill("80000.001")
    ticket.get_by_role("button", name="Buy BTC").last.click()
    expect(ticket.get_by_test_id("error-limitPrice")).to_contain_text("multiple of")
    # A limit order far below the market rests, and is canceled.
    ticket.get_by_label("Limit price (USD)").fill("80000.00")
    ticket.get_by_role("button", name="Buy BTC").last.click()
    expect(ticket.get_by_test_id("order-placed")).to_contain_text("open")
    open_orders = page.get_by_test_id("open-orders")
    row = open_orders.get_by_test_id("order-row")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "OPEN")
    shot(page, "trade")
    row.get_by_role("button", name="Cancel").click()
    expect(open_orders).to_contain_text("No open orders.")
    # A market order fills at once: the fill streams in and the portfolio follows.
    ticket.get_by_role("tab", name="Market", exact=True).click()
    ticket.get_by_role("button", name="Buy BTC").last.click()
    expect(ticket.get_by_test_id("order-placed")).to_contain_text("filled")
    expect(page.get_by_test_id("toast").filter(has_text="Order filled")).to_be_visible()
    page.get_by_role("link", name="Orders", exact=True).click()
    expect(page.get_by_test_id("fills").get_by_test_id("fill-row")).to_have_count(1)
    expect(page.get_by_test_id("order-history").get_by_test_id("order-row")).to_have_count(2)
    shot(page, "orders")
    page.get_by_role("link", name="Portfolio", exact=True).click()
    holding = page.get_by_test_id("holding-BTC")
    expect(holding).to_contain_text("0.01")
    expect(page.get_by_test_id("cash")).not_to_have_text("$10,000.00")
    value = page.get_by_test_id("total-value").inner_text()
    expect(page.get_by_test_id("total-value")).not_to_have_text(value)  # live: BTC moves
    expect(page.get_by_test_id("value-chart")).not_to_have_attribute("data-points", "0")
    shot(page, "portfolio")


def test_a_price_alert_fires_and_is_shown(watched: Watched, server: Server) -> None:
    page = watched.page
    sign_up(page, "alerts@example.com")
    page.get_by_role("link", name="Alerts", exact=True).click()
    form = page.get_by_test_id("alert-form")
    form.get_by_label("Asset").select_option("BTC")
    target = (btc_price(server) + 40).quantize(Decimal("0.01"))  # ~4 s of rising BTC
    form.get_by_label("Price (USD)").fill(str(target))
    form.get_by_role("button", name="Create alert").click()
    alerts = page.get_by_test_id("alerts")
    expect(alerts.get_by_test_id("alert-row")).to_have_attribute("data-status", "ACTIVE")
    expect(page.get_by_test_id("toast").filter(has_text="Price alert: BTC")).to_be_visible()
    expect(alerts.get_by_test_id("alert-row")).to_have_attribute("data-status", "TRIGGERED")
    shot(page, "alerts")


def test_two_factor_sign_in_sessions_and_api_keys(watched: Watched) -> None:
    page = watched.page
    sign_up(page, "careful@example.com")
    page.get_by_test_id("account-link").click()
    page.get_by_role("button", name="Set up two-factor authentication").click()
    secret = page.get_by_test_id("totp-secret").inner_text().strip()
    # The QR code holds the same key, for the authenticator app's camera.
    scanned = zxingcpp.read_barcodes(
        Image.open(io.BytesIO(page.get_by_test_id("totp-qr").screenshot()))
    )
    assert len(scanned) == 1 and scanned[0].format == zxingcpp.BarcodeFormat.QRCode
    uri = urllib.parse.urlparse(scanned[0].text)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert urllib.parse.parse_qs(uri.query)["secret"] == [secret]
    shot(page, "two-factor-setup")
    recovery = page.locator(".codes li").first.inner_text().strip()
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_test_id("two-factor")).to_contain_text("Two-factor authentication is on")
    expect(page.get_by_test_id("sessions").locator("tbody tr")).to_have_count(1)
    # API keys: created with scopes, shown once, revoked.
    keys = page.get_by_test_id("api-key-form")
    keys.get_by_label("Name").fill("bot")
    keys.get_by_label("trade — place and cancel orders").check()
    keys.get_by_role("button", name="Create key").click()
    expect(page.get_by_test_id("new-api-key")).to_contain_text("cvk_")
    listed = page.get_by_test_id("api-keys")
    expect(listed).to_contain_text("trade")
    shot(page, "account")
    listed.get_by_role("button", name="Revoke").click()
    expect(listed).to_contain_text("No API keys.")
    # Signing in again asks for the second factor; a recovery code passes it.
    page.get_by_test_id("sign-out").click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    page.goto("/signin")
    page.get_by_label("Email").fill("careful@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").last.click()
    page.get_by_label("Code").fill(recovery)
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_test_id("account-link")).to_have_text("careful@example.com")


def test_admin_sees_users_stats_audit_and_reconciliation(watched: Watched) -> None:
    page = watched.page
    page.goto("/signin?next=/admin")
    page.get_by_label("Email").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").last.click()
    expect(page).to_have_url(f"{watched.base}/admin")
    expect(page.get_by_test_id("reconciliation")).to_contain_text("The books balance.")
    users = page.get_by_test_id("users")
    row = users.locator("tr", has_text="trader@example.com")
    row.get_by_role("button", name="Freeze").click()
    row.get_by_placeholder("Reason").fill("review")
    row.get_by_role("button", name="Freeze").click()
    expect(row).to_contain_text("frozen")
    expect(page.get_by_test_id("audit-log")).to_contain_text("user.frozen")
    shot(page, "admin")
    row.get_by_role("button", name="Unfreeze").click()
    expect(row).to_contain_text("active")


def test_graphiql_runs_offline_with_a_token_in_the_headers(
    watched: Watched, server: Server
) -> None:
    page = watched.page
    server.query(
        'mutation { register(input: {email: "explorer@example.com",'
        ' password: "correct horse battery"}) { accessToken } }'
    )
    # A credential kept from an earlier visit that is no longer valid: the page asks
    # for a sign-in instead of failing.
    page.goto("/")
    page.evaluate(
        "localStorage.setItem('graphiql:headers', JSON.stringify({Authorization: 'Bearer x'}))"
    )
    query = "query Me { viewer { email } }"
    page.goto("/graphql?" + urllib.parse.urlencode({"q": query}))
    prompt = page.get_by_test_id("graphiql-signin")
    expect(prompt).to_contain_text("Sign in again")
    prompt.get_by_label("Email").fill("explorer@example.com")
    prompt.get_by_label("Password").fill("correct horse battery")
    prompt.get_by_role("button", name="Sign in").click()
    run = page.get_by_role("button", name="Execute query (Ctrl-Enter)")
    expect(page.locator(".graphiql-query-editor")).to_contain_text("viewer")
    page.get_by_text("Headers", exact=True).click()
    expect(page.locator(".graphiql-editor-tool")).to_contain_text("Authorization")
    run.click()
    response = page.locator(".result-window")
    expect(response).to_contain_text('"email": "explorer@example.com"')
    shot(page, "graphiql")
    # A private subscription: the token goes from the headers into connection_init.
    subscription = "subscription Live { portfolio { totalValue cash } }"
    page.goto("/graphql?" + urllib.parse.urlencode({"q": subscription}))
    expect(page.locator(".graphiql-query-editor")).to_contain_text("subscription Live")
    page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
    expect(page.locator(".result-window")).to_contain_text('"totalValue"')
    expect(page.locator(".result-window")).to_contain_text('"cash": "10000.00"')


def test_a_revoked_session_signs_the_page_out_without_a_retry_storm(
    watched: Watched, server: Server
) -> None:
    page = watched.page
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    sign_up(page, "revoked@example.com")
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-status", "connected")
    # Another sign-in of the same account signs this one out: its socket is closed
    # with 4403 and its refresh cookie no longer works.
    other = server.query(
        'mutation { login(input: {email: "revoked@example.com",'
        ' password: "correct horse battery"}) { accessToken } }'
    )["login"]["accessToken"]
    before = len(sockets)
    server.query("mutation { revokeOtherSessions }", token=other)
    expect(page.get_by_role("banner").get_by_role("link", name="Sign in")).to_be_visible()
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-status", "connected")
    expect(page.get_by_test_id("total-value")).to_have_count(0)
    # One new (anonymous) socket for the public streams, not a retry per attempt.
    assert len(sockets) - before == 1, sockets[before:]


def test_built_pages_load_nothing_inline_or_foreign() -> None:
    for name in ("index.html", "graphiql.html"):
        html = (DIST / name).read_text()
        assert "<script>" not in html and "<style" not in html and " style=" not in html
        assert "http://" not in html and "https://" not in html, name


def test_reconnects_after_a_server_restart(browser: Browser, server: Server) -> None:
    w = Watched(browser, server.url)
    try:
        page = w.page
        page.goto("/markets/BTC")
        price = page.get_by_test_id("asset-price")
        expect(price).to_have_text(PRICE)
        expect(page.get_by_test_id("live-status")).to_have_attribute("data-status", "connected")
        server.stop()
        expect(page.get_by_test_id("connection-down")).to_contain_text("Connection lost")
        shot(page, "connection-lost")
        server.start()
        expect(page.get_by_test_id("connection-down")).to_have_count(0, timeout=60_000)
        expect(page.get_by_test_id("live-status")).to_have_attribute("data-status", "connected")
        seen = price.inner_text()
        expect(price).not_to_have_text(seen)  # prices flow again
        # While the server was away the browser logged its failed connections.
        w.check(allow=lambda p: "WebSocket" in p or "Failed to load resource" in p)
    finally:
        w.close()
