"""Watchlists: per user, ordered, idempotent, capped, unknown symbols refused; API keys
need `portfolio:read` to read and `portfolio:write` to change them."""

from __future__ import annotations

import asyncio

import pytest

from cryptovault.config import ConfigError, load_settings
from cryptovault.documents.watchlists import WatchlistDocument
from cryptovault.errors import Conflict
from cryptovault.portfolio.watchlists import Watchlists
from tests.conftest import bearer, error_codes, sign_up, tick

WATCHLIST = "{ watchlist { symbols updatedAt assets { symbol price { price bid } } } }"
ADD = "mutation($s: String!) { addToWatchlist(symbol: $s) { symbols updatedAt } }"
REMOVE = "mutation($s: String!) { removeFromWatchlist(symbol: $s) { symbols updatedAt } }"
CREATE_KEY = """mutation($s: [ApiKeyScope!]!) { createApiKey(name: "bot", scopes: $s) { key } }"""


async def test_a_new_watchlist_is_empty(user_gql):
    assert (await user_gql.data(WATCHLIST))["watchlist"] == {
        "symbols": [],
        "updatedAt": None,
        "assets": [],
    }


async def test_symbols_are_kept_in_the_order_added_with_their_prices(user_gql, services):
    await services.market.publish_tick(tick("ETH", "3000.00"))
    assert (await user_gql.data(ADD, {"s": "eth"}))["addToWatchlist"]["symbols"] == ["ETH"]
    assert (await user_gql.data(ADD, {"s": " BTC "}))["addToWatchlist"]["symbols"] == [
        "ETH",
        "BTC",
    ]
    watchlist = (await user_gql.data(WATCHLIST))["watchlist"]
    assert watchlist["symbols"] == ["ETH", "BTC"]
    assert [a["symbol"] for a in watchlist["assets"]] == ["ETH", "BTC"]
    assert watchlist["assets"][0]["price"]["price"] == "3000.00"
    assert watchlist["updatedAt"] is not None


async def test_adding_and_removing_are_idempotent(user_gql):
    await user_gql.data(ADD, {"s": "SOL"})
    first = (await user_gql.data(ADD, {"s": "ADA"}))["addToWatchlist"]
    again = (await user_gql.data(ADD, {"s": "SOL"}))["addToWatchlist"]
    assert again == first  # nothing changed, not even updatedAt
    removed = (await user_gql.data(REMOVE, {"s": "sol"}))["removeFromWatchlist"]
    assert removed["symbols"] == ["ADA"]
    assert (await user_gql.data(REMOVE, {"s": "SOL"}))["removeFromWatchlist"] == removed
    # Removing from a watchlist that was never created is not an error either.
    fresh = await sign_up(user_gql)
    body = await user_gql.execute(REMOVE, {"s": "BTC"}, headers=bearer(fresh["accessToken"]))
    assert body["data"]["removeFromWatchlist"] == {"symbols": [], "updatedAt": None}


@pytest.mark.parametrize("mutation", [ADD, REMOVE])
async def test_unknown_symbols_are_refused_and_nothing_is_written(user_gql, mutation):
    body = await user_gql.execute(mutation, {"s": "NOPE"})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["data"] is None
    user_id = user_gql.payload["user"]["id"]
    assert await WatchlistDocument.get(user_id) is None


async def test_each_user_sees_only_their_own_watchlist(user_gql):
    await user_gql.data(ADD, {"s": "DOGE"})
    other = await sign_up(user_gql)
    theirs = await user_gql.data(WATCHLIST, headers=bearer(other["accessToken"]))
    assert theirs["watchlist"]["symbols"] == []


async def test_anonymous_callers_have_no_watchlist(gql):
    assert error_codes(await gql.execute(WATCHLIST)) == ["UNAUTHENTICATED"]
    assert error_codes(await gql.execute(ADD, {"s": "BTC"})) == ["UNAUTHENTICATED"]


async def test_api_keys_need_portfolio_scopes(user_gql, gql):
    async def key(*scopes: str) -> dict[str, str]:
        created = await user_gql.data(CREATE_KEY, {"s": list(scopes)})
        return {"X-API-Key": created["createApiKey"]["key"]}

    market_only = await key("MARKET_READ")
    reader = await key("PORTFOLIO_READ")
    writer = await key("PORTFOLIO_READ", "PORTFOLIO_WRITE")
    assert error_codes(await gql.execute(WATCHLIST, headers=market_only)) == ["FORBIDDEN"]
    assert not (await gql.execute(WATCHLIST, headers=reader)).get("errors")
    refused = await gql.execute(ADD, {"s": "BTC"}, headers=reader)
    assert error_codes(refused) == ["FORBIDDEN"]
    assert refused["errors"][0]["extensions"]["scope"] == "portfolio:write"
    added = await gql.data(ADD, {"s": "LTC"}, headers=writer)
    assert added["addToWatchlist"]["symbols"] == ["LTC"]
    # The key acts as its owner: the same watchlist.
    assert (await user_gql.data(WATCHLIST))["watchlist"]["symbols"] == ["LTC"]


async def test_concurrent_adds_never_pass_the_cap(services):
    watchlists = Watchlists(max_symbols=3)
    symbols = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "AVAX"]
    results = await asyncio.gather(
        *(watchlists.add("cap-user", s) for s in symbols), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(refused) == len(symbols) - 3
    assert all(not isinstance(r, Exception) or isinstance(r, Conflict) for r in results)
    stored = await watchlists.get("cap-user")
    assert len(stored.symbols) == 3 and set(stored.symbols) <= set(symbols)
    # Full: a symbol already there is still fine (idempotent), a new one is not.
    assert (await watchlists.add("cap-user", stored.symbols[0])).symbols == stored.symbols
    with pytest.raises(Conflict):
        await watchlists.add("cap-user", next(s for s in symbols if s not in stored.symbols))
    await watchlists.remove("cap-user", stored.symbols[0])
    assert len((await watchlists.add("cap-user", "LINK")).symbols) == 3


async def test_the_full_watchlist_error_says_so(user_gql, services):
    services.watchlists.max_symbols = 2
    try:
        await user_gql.data(ADD, {"s": "BTC"})
        await user_gql.data(ADD, {"s": "ETH"})
        body = await user_gql.execute(ADD, {"s": "SOL"})
    finally:
        services.watchlists.max_symbols = 50
    assert error_codes(body) == ["CONFLICT"]
    assert body["errors"][0]["extensions"]["maximum"] == 2
    assert (await user_gql.data(WATCHLIST))["watchlist"]["symbols"] == ["BTC", "ETH"]


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("WATCHLIST_MAX_SYMBOLS", "0"), ("ALERTS_MAX_ACTIVE", "many"), ("ALERTS_MAX_ACTIVE", "-1")],
)
def test_portfolio_caps_are_validated_at_start_up(tmp_path, variable, raw):
    with pytest.raises(ConfigError, match=variable):
        load_settings({"DATA_DIR": str(tmp_path), variable: raw}, env_file=None)
    configured = load_settings(
        {"DATA_DIR": str(tmp_path), "WATCHLIST_MAX_SYMBOLS": "7", "ALERTS_MAX_ACTIVE": "9"},
        env_file=None,
    )
    assert (configured.watchlist_max_symbols, configured.alerts_max_active) == (7, 9)
