"""PageInfo's Relay meaning on every list: startCursor/endCursor are the page's ends,
hasNextPage whether items follow, hasPreviousPage whether the list (same filters)
still holds an item at or before the `after` cursor."""

from __future__ import annotations

import pytest

from tests.conftest import tick

ALERT = """mutation($s: String!, $v: Decimal!) {
  createPriceAlert(input: {symbol: $s, condition: ABOVE, value: $v}) { id } }"""
DELETE = "mutation($id: ID!) { deletePriceAlert(id: $id) { id } }"
ALERTS = """query($first: Int, $after: String, $symbol: String) {
  priceAlerts(first: $first, after: $after, symbol: $symbol) {
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""
KEY = "mutation($n: String!) { createApiKey(name: $n, scopes: [MARKET_READ]) { apiKey { id } } }"
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
KEYS = """query($first: Int, $after: String) { apiKeys(first: $first, after: $after) {
  edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""
CANDLES = """query($after: String) { candles(symbol: "BTC", interval: ONE_MINUTE, first: 1, after: $after) {
  edges { cursor } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""


@pytest.fixture(autouse=True)
def quotes(services):
    services.market.apply(tick("BTC", "100.00"))
    services.market.apply(tick("ETH", "2000.00"))


def ends(page: dict) -> tuple[str | None, str | None]:
    edges = page["edges"]
    return (edges[0]["cursor"], edges[-1]["cursor"]) if edges else (None, None)


async def test_page_info_has_both_ends_and_knows_what_comes_before(user_gql):
    made = [
        (await user_gql.data(ALERT, {"s": "BTC", "v": f"{200 + i}"}))["createPriceAlert"]["id"]
        for i in range(3)
    ]
    first = (await user_gql.data(ALERTS, {"first": 2}))["priceAlerts"]
    info = first["pageInfo"]
    assert [e["node"]["id"] for e in first["edges"]] == [made[2], made[1]]
    assert (info["startCursor"], info["endCursor"]) == ends(first)
    assert info["hasNextPage"] is True and info["hasPreviousPage"] is False

    second = (await user_gql.data(ALERTS, {"first": 2, "after": info["endCursor"]}))["priceAlerts"]
    assert [e["node"]["id"] for e in second["edges"]] == [made[0]]
    assert second["pageInfo"]["hasNextPage"] is False
    assert second["pageInfo"]["hasPreviousPage"] is True
    assert (second["pageInfo"]["startCursor"], second["pageInfo"]["endCursor"]) == ends(second)

    # The items before the cursor are gone: nothing comes before the page any more.
    for alert_id in made[1:]:
        await user_gql.data(DELETE, {"id": alert_id})
    again = (await user_gql.data(ALERTS, {"first": 2, "after": info["endCursor"]}))["priceAlerts"]
    assert [e["node"]["id"] for e in again["edges"]] == [made[0]]
    assert again["pageInfo"]["hasPreviousPage"] is False


async def test_an_empty_page_has_no_cursors_and_filters_apply_to_what_comes_before(user_gql):
    await user_gql.data(ALERT, {"s": "BTC", "v": "300"})
    older = (await user_gql.data(ALERT, {"s": "ETH", "v": "3000"}))["createPriceAlert"]["id"]
    await user_gql.data(ALERT, {"s": "BTC", "v": "301"})
    # Only ETH alerts: the BTC alert newer than the cursor is not "before" this page.
    eth = (await user_gql.data(ALERTS, {"first": 1, "symbol": "ETH"}))["priceAlerts"]
    assert [e["node"]["id"] for e in eth["edges"]] == [older]
    rest = (
        await user_gql.data(
            ALERTS, {"first": 1, "symbol": "ETH", "after": eth["pageInfo"]["endCursor"]}
        )
    )["priceAlerts"]
    assert rest["edges"] == []
    assert rest["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "startCursor": None,
        "endCursor": None,
    }


async def test_revoked_keys_before_the_cursor_do_not_count(user_gql):
    made = [
        (await user_gql.data(KEY, {"n": f"k{i}"}))["createApiKey"]["apiKey"]["id"] for i in range(2)
    ]
    first = (await user_gql.data(KEYS, {"first": 1}))["apiKeys"]
    cursor = first["pageInfo"]["endCursor"]
    later = (await user_gql.data(KEYS, {"first": 1, "after": cursor}))["apiKeys"]
    assert later["pageInfo"]["hasPreviousPage"] is True
    await user_gql.data(REVOKE_KEY, {"id": made[1]})
    later = (await user_gql.data(KEYS, {"first": 1, "after": cursor}))["apiKeys"]
    assert [e["node"]["id"] for e in later["edges"]] == [made[0]]
    assert later["pageInfo"]["hasPreviousPage"] is False


async def test_candles_page_info(gql):
    first = (await gql.data(CANDLES))["candles"]
    assert first["pageInfo"]["hasPreviousPage"] is False
    assert (first["pageInfo"]["startCursor"], first["pageInfo"]["endCursor"]) == ends(first)
    # The open candle is at the cursor: it comes before the next page.
    later = (await gql.data(CANDLES, {"after": first["pageInfo"]["endCursor"]}))["candles"]
    assert later["pageInfo"]["hasPreviousPage"] is True
