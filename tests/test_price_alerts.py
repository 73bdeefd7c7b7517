"""Price alerts through the API and the store: create, list, delete (owner only), the
per-user cap (also under concurrency), firing exactly once on the tick that crosses,
delivery over the `alerts` subscription, and the index kept current across instances."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from bson import Decimal128
from websockets.asyncio.client import connect

from cryptovault.documents.alerts import AlertQuotaDocument, PriceAlertDocument
from cryptovault.documents.common import new_id
from cryptovault.documents.watchlists import WatchlistDocument
from cryptovault.errors import Conflict
from cryptovault.portfolio.alert_index import AlertCondition
from tests.conftest import PASSWORD, bearer, error_codes, make_settings, sign_up, tick

MAX_ACTIVE = 5
CREATE = """mutation($input: CreatePriceAlertInput!) {
  createPriceAlert(input: $input) {
    id symbol condition value status createdAt triggeredAt triggeredPrice
    triggeredChangePercent24h
  }
}"""
DELETE = "mutation($id: ID!) { deletePriceAlert(id: $id) { id status } }"
LIST = """query($first: Int, $after: String, $status: [AlertStatus!], $symbol: String) {
  priceAlerts(first: $first, after: $after, status: $status, symbol: $symbol) {
    edges { cursor node { id symbol condition value status triggeredPrice } }
    pageInfo { hasNextPage endCursor }
  }
}"""
ALERTS = "subscription { alerts { id symbol condition value status triggeredAt triggeredPrice } }"
WAIT = 10  # seconds: a bound for a message that should come, never an assertion


@pytest.fixture(scope="module")
async def settings(store_server):
    return make_settings(store_server.url, alerts_max_active=MAX_ACTIVE)


def alert_input(symbol: str, condition: str, value: str) -> dict:
    return {"input": {"symbol": symbol, "condition": condition, "value": value}}


async def create(gql, symbol: str, condition: str, value: str) -> dict:
    return (await gql.data(CREATE, alert_input(symbol, condition, value)))["createPriceAlert"]


async def ids_with_status(status: str, user_id: str) -> set[str]:
    docs = await PriceAlertDocument.find({"user_id": user_id, "status": status}).to_list()
    return {d.id for d in docs}


async def test_an_alert_is_created_active_with_a_canonical_value(user_gql, services):
    created = await create(user_gql, "btc", "ABOVE", "250000")
    assert created["symbol"] == "BTC" and created["condition"] == "ABOVE"
    assert created["value"] == "250000.00" and created["status"] == "ACTIVE"
    assert created["triggeredAt"] is None and created["triggeredPrice"] is None
    assert created["id"] in services.alerts.index


@pytest.mark.parametrize(
    ("symbol", "condition", "value"),
    [
        ("NOPE", "ABOVE", "10"),
        ("BTC", "ABOVE", "0"),
        ("BTC", "BELOW", "-5"),
        ("BTC", "ABOVE", "100.001"),  # BTC prices are multiples of 0.01
        ("BTC", "ABOVE", "1e20"),
        ("BTC", "PERCENT_CHANGE_24H", "0"),
        ("BTC", "PERCENT_CHANGE_24H", "-100"),
        ("BTC", "PERCENT_CHANGE_24H", "2.555"),
    ],
)
async def test_bad_alerts_are_refused_and_nothing_is_written(
    user_gql, services, symbol, condition, value
):
    before = len(services.alerts.index)
    body = await user_gql.execute(CREATE, alert_input(symbol, condition, value))
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert await ids_with_status("ACTIVE", user_gql.payload["user"]["id"]) == set()
    assert len(services.alerts.index) == before


async def test_a_condition_already_met_is_refused(user_gql, services):
    await services.market.publish_tick(tick("AVAX", "14.00"))
    for condition, value in (("ABOVE", "13.00"), ("BELOW", "14.00")):
        body = await user_gql.execute(CREATE, alert_input("AVAX", condition, value))
        assert error_codes(body) == ["BAD_USER_INPUT"]
        assert body["errors"][0]["extensions"]["price"] == "14.00"
    assert (await create(user_gql, "AVAX", "ABOVE", "14.01"))["status"] == "ACTIVE"


async def test_alerts_are_listed_newest_first_filtered_and_paged(user_gql):
    made = [
        await create(user_gql, "ETH", "ABOVE", "100000"),
        await create(user_gql, "ETH", "BELOW", "1"),
        await create(user_gql, "SOL", "PERCENT_CHANGE_24H", "-12.5"),
    ]
    page = (await user_gql.data(LIST, {"first": 2}))["priceAlerts"]
    assert [e["node"]["id"] for e in page["edges"]] == [made[2]["id"], made[1]["id"]]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = (await user_gql.data(LIST, {"first": 2, "after": page["pageInfo"]["endCursor"]}))[
        "priceAlerts"
    ]
    assert [e["node"]["id"] for e in rest["edges"]] == [made[0]["id"]]
    assert rest["pageInfo"]["hasNextPage"] is False
    eth = (await user_gql.data(LIST, {"symbol": "eth"}))["priceAlerts"]["edges"]
    assert {e["node"]["id"] for e in eth} == {made[0]["id"], made[1]["id"]}
    triggered = (await user_gql.data(LIST, {"status": ["TRIGGERED"]}))["priceAlerts"]["edges"]
    assert triggered == []
    assert made[2]["value"] == "-12.50"
    assert error_codes(await user_gql.execute(LIST, {"first": 500})) == ["BAD_USER_INPUT"]
    assert error_codes(await user_gql.execute(LIST, {"after": "garbage"})) == ["BAD_USER_INPUT"]
    # An empty filter is a mistake, not "no alerts" (the same as orders(status: [])).
    assert error_codes(await user_gql.execute(LIST, {"status": []})) == ["BAD_USER_INPUT"]


async def test_only_the_owner_can_delete_an_alert(user_gql, services):
    mine = await create(user_gql, "LTC", "ABOVE", "1000")
    other = await sign_up(user_gql)
    body = await user_gql.execute(DELETE, {"id": mine["id"]}, headers=bearer(other["accessToken"]))
    assert error_codes(body) == ["NOT_FOUND"]
    assert await PriceAlertDocument.get(mine["id"]) is not None
    assert error_codes(await user_gql.execute(DELETE, {"id": "not-an-id"})) == ["NOT_FOUND"]
    assert (await user_gql.data(DELETE, {"id": mine["id"]}))["deletePriceAlert"] == {
        "id": mine["id"],
        "status": "ACTIVE",
    }
    assert await PriceAlertDocument.get(mine["id"]) is None
    assert mine["id"] not in services.alerts.index
    # A deleted alert never fires.
    await services.market.publish_tick(tick("LTC", "1500.00"))
    await services.alerts.drain()
    assert await PriceAlertDocument.get(mine["id"]) is None


async def test_the_cap_counts_active_alerts_and_a_deleted_or_fired_one_frees_a_slot(
    user_gql, services
):
    made = [await create(user_gql, "XRP", "ABOVE", f"{10 + i}") for i in range(MAX_ACTIVE)]
    body = await user_gql.execute(CREATE, alert_input("XRP", "ABOVE", "99"))
    assert error_codes(body) == ["CONFLICT"]
    assert body["errors"][0]["extensions"]["maximum"] == MAX_ACTIVE
    assert len(await ids_with_status("ACTIVE", user_gql.payload["user"]["id"])) == MAX_ACTIVE
    await user_gql.data(DELETE, {"id": made[0]["id"]})
    await create(user_gql, "XRP", "ABOVE", "99")
    # Firing frees a slot too.
    await services.market.publish_tick(tick("XRP", "11.0000"))
    await services.alerts.drain()
    assert (await create(user_gql, "XRP", "ABOVE", "98"))["status"] == "ACTIVE"


async def test_concurrent_creations_cannot_pass_the_cap(services):
    user_id = new_id()
    for i in range(MAX_ACTIVE - 2):
        await services.alerts.create(user_id, "DOGE", AlertCondition.ABOVE, Decimal(10 + i))
    results = await asyncio.gather(
        *(
            services.alerts.create(user_id, "DOGE", AlertCondition.ABOVE, Decimal(50 + i))
            for i in range(6)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Conflict) for r in results) == 4, results
    assert all(isinstance(r, (Conflict, PriceAlertDocument)) for r in results)
    active = await ids_with_status("ACTIVE", user_id)
    assert len(active) == MAX_ACTIVE
    quota = await AlertQuotaDocument.get(user_id)
    assert set(quota.active) == active


async def test_a_slot_left_behind_by_a_crash_is_reclaimed(services):
    user_id = new_id()
    alerts = [
        await services.alerts.create(user_id, "DOT", AlertCondition.BELOW, Decimal(1 + i))
        for i in range(MAX_ACTIVE)
    ]
    # A process stopped after marking one triggered, before releasing its slot.
    await PriceAlertDocument.get_pymongo_collection().update_one(
        {"_id": alerts[0].id}, {"$set": {"status": "TRIGGERED"}}
    )
    created = await services.alerts.create(user_id, "DOT", AlertCondition.BELOW, Decimal("0.5"))
    quota = await AlertQuotaDocument.get(user_id)
    assert set(quota.active) == {a.id for a in alerts[1:]} | {created.id}


async def open_socket(live_url: str, token: str):
    ws = await connect(f"ws://{live_url}/graphql", subprotocols=["graphql-transport-ws"])
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    )
    assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "connection_ack"
    return ws


async def subscribed(services, topic: str) -> None:
    async with asyncio.timeout(WAIT):
        while services.hub.subscriber_count(topic) == 0:
            await asyncio.sleep(0.01)


async def test_an_alert_fires_once_on_the_crossing_tick_and_reaches_its_owner(
    live_url, user_gql, services
):
    user_id = user_gql.payload["user"]["id"]
    await services.market.publish_tick(tick("LINK", "13.000"))
    above = await create(user_gql, "LINK", "ABOVE", "14.5")
    below = await create(user_gql, "LINK", "BELOW", "12")
    ws = await open_socket(live_url, user_gql.payload["accessToken"])
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": ALERTS}}))
    await subscribed(services, f"alerts:{user_id}")
    fired_before = services.alerts.fired
    await services.market.publish_tick(tick("LINK", "14.499"))  # not yet
    await services.market.publish_tick(tick("LINK", "14.600"))  # crosses 14.5
    await services.alerts.drain()
    message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    event = message["payload"]["data"]["alerts"]
    assert event["id"] == above["id"] and event["status"] == "TRIGGERED"
    assert event["triggeredPrice"] == "14.600" and event["value"] == "14.500"
    assert event["triggeredAt"] is not None
    # The same price again, then higher: nothing fires a second time.
    await services.market.publish_tick(tick("LINK", "14.600"))
    await services.market.publish_tick(tick("LINK", "20.000"))
    await services.alerts.drain()
    assert services.alerts.fired == fired_before + 1
    assert await ids_with_status("TRIGGERED", user_id) >= {above["id"]}
    assert below["id"] in await ids_with_status("ACTIVE", user_id)
    listed = (await user_gql.data(LIST, {"status": ["TRIGGERED"], "symbol": "LINK"}))[
        "priceAlerts"
    ]["edges"]
    assert [e["node"]["triggeredPrice"] for e in listed] == ["14.600"]
    # The falling one fires on its own tick, and only to this user.
    await services.market.publish_tick(tick("LINK", "11.990"))
    message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert message["payload"]["data"]["alerts"]["id"] == below["id"]
    await ws.close()


async def test_a_percent_change_alert_fires_on_the_24h_change(user_gql, services):
    await services.market.publish_tick(tick("ADA", "0.4000"))
    day = services.market.quote("ADA").day
    base = day.open  # the 24 h reference price
    up = await create(user_gql, "ADA", "PERCENT_CHANGE_24H", "5")
    down = await create(user_gql, "ADA", "PERCENT_CHANGE_24H", "-5")
    await services.market.publish_tick(tick("ADA", str(base * Decimal("1.04"))))
    await services.alerts.drain()
    assert up["id"] in services.alerts.index
    await services.market.publish_tick(tick("ADA", str(base * Decimal("1.05"))))
    await services.alerts.drain()
    fired = await PriceAlertDocument.get(up["id"])
    assert fired.status == "TRIGGERED"
    assert fired.triggered_change_percent == Decimal("5.00")
    assert (await PriceAlertDocument.get(down["id"])).status == "ACTIVE"


async def test_alerts_need_a_viewer_and_the_portfolio_scopes(gql, user_gql):
    assert error_codes(await gql.execute(LIST)) == ["UNAUTHENTICATED"]
    assert error_codes(await gql.execute(CREATE, alert_input("BTC", "ABOVE", "1"))) == [
        "UNAUTHENTICATED"
    ]
    create_key = 'mutation { createApiKey(name: "r", scopes: [PORTFOLIO_READ]) { key } }'
    key = (await user_gql.data(create_key))["createApiKey"]["key"]
    reader = {"X-API-Key": key}
    assert not (await gql.execute(LIST, headers=reader)).get("errors")
    body = await gql.execute(CREATE, alert_input("BTC", "ABOVE", "1000000"), headers=reader)
    assert error_codes(body) == ["FORBIDDEN"]


async def test_a_tick_crossing_5_of_400_stored_alerts_writes_only_those_5(services, commands):
    """The store-backed check, with fewer alerts than the in-memory one
    (test_alert_index): each insert into the embedded engine scans the collection, so
    10,000 documents would take tens of minutes there (README)."""
    count = 400
    users = [new_id() for _ in range(20)]
    docs = [
        {
            "_id": new_id(),
            "user_id": users[i % len(users)],
            "symbol": "SOL",
            "condition": "ABOVE" if i % 2 == 0 else "BELOW",
            # ABOVE from 200.00 up by 0.50; BELOW from 100.00 down by 0.10.
            "value": Decimal128(
                Decimal("200") + Decimal("0.25") * i
                if i % 2 == 0
                else Decimal("100") - Decimal("0.05") * i
            ),
            "status": "ACTIVE",
            "created_at": datetime.now(UTC),
        }
        for i in range(count)
    ]
    baseline = services.alerts.index.count("SOL")
    started = time.perf_counter()
    collection = PriceAlertDocument.get_pymongo_collection()
    for start in range(0, count, 100):
        await collection.insert_many(docs[start : start + 100], ordered=False)
    inserted_in = time.perf_counter() - started
    await services.alerts.resync()
    assert services.alerts.index.count("SOL") == baseline + count
    # One instant for every tick: no candle closes meanwhile (no candle writes counted).
    at = datetime.now(UTC)
    await services.market.publish_tick(tick("SOL", "150.00", at=at))
    await services.alerts.drain()
    # 202.00 reaches the five lowest ABOVE thresholds: 200.00, 200.50, ... 202.00.
    commands.reset()
    await services.market.publish_tick(tick("SOL", "202.00", at=at))
    await services.alerts.drain()
    # One conditional update per fired alert and one slot release per owner (five
    # here): the other 395 alerts cost nothing. (The trading engine's own commands on
    # each tick go to its collections.)
    sent = commands.on("price_alerts", "alert_quotas")
    assert sorted(sent) == ["findAndModify"] * 5 + ["update"] * 5
    ours = [d["_id"] for d in docs]
    triggered = await PriceAlertDocument.find(
        {"_id": {"$in": ours}, "status": "TRIGGERED"}
    ).to_list()
    assert {d.id for d in triggered} == {docs[i]["_id"] for i in range(0, 10, 2)}
    assert services.alerts.index.count("SOL") == baseline + count - 5
    commands.reset()
    fired = services.alerts.fired
    await services.market.publish_tick(tick("SOL", "202.00", at=at))
    await services.alerts.drain()
    assert services.alerts.fired == fired
    assert commands.on("price_alerts", "alert_quotas") == []
    print(f"\n{count} alerts inserted in {inserted_in:.2f} s")


async def test_a_new_leader_reloads_alerts_it_missed(services):
    # An alert written while this instance missed its "created" message.
    doc = PriceAlertDocument(
        user_id=new_id(),
        symbol="ETH",
        condition="BELOW",
        value=Decimal("500.00"),
        created_at=datetime.now(UTC),
    )
    await doc.insert()
    assert doc.id not in services.alerts.index
    market = services.market
    market.is_leader = False  # a follower: ticks are not checked
    await market.publish_tick(tick("ETH", "3000.00"))
    market.is_leader = True  # becomes the leader: reloads before checking on
    await market.publish_tick(tick("ETH", "3000.00"))
    await services.alerts.drain()
    assert doc.id in services.alerts.index
    await market.publish_tick(tick("ETH", "499.00"))
    await services.alerts.drain()
    assert (await PriceAlertDocument.get(doc.id)).status == "TRIGGERED"


async def test_export_includes_and_account_deletion_erases_watchlist_and_alerts(user_gql, services):
    user_id = user_gql.payload["user"]["id"]
    await user_gql.data('mutation { addToWatchlist(symbol: "BTC") { symbols } }')
    kept = await create(user_gql, "BTC", "ABOVE", "900000")
    data = (await user_gql.data("mutation { exportMyData }"))["exportMyData"]
    assert [w["symbols"] for w in data["watchlists"]] == [["BTC"]]
    assert [a["_id"] for a in data["price_alerts"]] == [kept["id"]]
    deleted = await user_gql.data(
        "mutation($p: String!) { deleteMyAccount(password: $p) }", {"p": PASSWORD}
    )
    assert deleted["deleteMyAccount"] is True
    assert await WatchlistDocument.get(user_id) is None
    assert await PriceAlertDocument.find({"user_id": user_id}).count() == 0
    assert await AlertQuotaDocument.get(user_id) is None
    assert kept["id"] not in services.alerts.index
