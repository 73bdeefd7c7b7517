"""The in-memory alert index: a tick pops exactly the alerts it crosses, once, and
finds them by binary search (the comparisons it makes are counted) rather than by
looking at every alert."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from cryptovault.portfolio.alert_index import AlertCondition, AlertIndex, Thresholds, Watch
from cryptovault.portfolio.alerts import met

ABOVE, BELOW, PCT = AlertCondition.ABOVE, AlertCondition.BELOW, AlertCondition.PERCENT_CHANGE_24H


def watch(i: int, condition: AlertCondition, value: str, symbol: str = "BTC") -> Watch:
    return Watch(f"a{i:06d}", f"u{i % 37}", symbol, condition, Decimal(value))


def no_percent() -> Decimal | None:
    raise AssertionError("the 24 h change must not be computed without percent alerts")


def ten_thousand_alerts() -> tuple[AlertIndex, list[Watch]]:
    """5,000 ABOVE between 100,000.00 and 149,999.90 and 5,000 BELOW between 50,000.00
    and 89,992.00 on BTC, shuffled; a few on other symbols."""
    rng = random.Random(5)
    watches = [watch(i, ABOVE, f"{100000 + i * 10}.00") for i in range(5000)]
    watches += [watch(5000 + i, BELOW, f"{50000 + i * 8}.00") for i in range(5000)]
    watches += [watch(20000 + i, ABOVE, "1.00", symbol="ETH") for i in range(10)]
    rng.shuffle(watches)
    return AlertIndex(watches), watches


def test_a_tick_crossing_five_of_ten_thousand_pops_exactly_those_five_once():
    index, _ = ten_thousand_alerts()
    assert index.count("BTC") == 10_000
    # 100,040.00 reaches the five lowest ABOVE thresholds (100,000 .. 100,040).
    fired = index.pop_crossed("BTC", Decimal("100040.00"), no_percent)
    assert sorted(w.alert_id for w in fired) == [f"a{i:06d}" for i in range(5)]
    assert all(w.condition is ABOVE and w.value <= Decimal("100040") for w in fired)
    assert index.count("BTC") == 9_995
    assert index.pop_crossed("BTC", Decimal("100040.00"), no_percent) == []
    # Falling: 89,960.00 reaches the five highest BELOW thresholds.
    fired = index.pop_crossed("BTC", Decimal("89960.00"), no_percent)
    assert sorted(w.value for w in fired) == [Decimal(89960 + 8 * k) for k in range(5)]
    assert index.pop_crossed("BTC", Decimal("89960.00"), no_percent) == []
    assert index.count("BTC") == 9_990 and index.count("ETH") == 10


class Counted:
    """A metric that counts the comparisons made against it."""

    def __init__(self, value: Decimal, counter: list[int]) -> None:
        self.value, self.counter = value, counter

    def __neg__(self) -> Counted:
        return Counted(-self.value, self.counter)

    def _cmp(self, other: object, op) -> bool:
        self.counter[0] += 1
        return op(self.value, other)

    def __eq__(self, other: object) -> bool:
        return self._cmp(other, lambda a, b: a == b)

    def __lt__(self, other: object) -> bool:
        return self._cmp(other, lambda a, b: a < b)

    def __gt__(self, other: object) -> bool:
        return self._cmp(other, lambda a, b: a > b)

    def __le__(self, other: object) -> bool:
        return self._cmp(other, lambda a, b: a <= b)

    def __ge__(self, other: object) -> bool:
        return self._cmp(other, lambda a, b: a >= b)

    __hash__ = None  # type: ignore[assignment]


def test_finding_the_crossed_alerts_takes_a_logarithmic_number_of_comparisons():
    for rising in (True, False):
        side = Thresholds(rising=rising)
        for i in range(10_000):
            side.add(Decimal(1000 + i), f"a{i:05d}")
        counter = [0]
        # Crossing five: the five lowest rising thresholds, or the five highest falling.
        metric = Decimal(1004) if rising else Decimal(10995)
        crossed = side.pop_crossed(Counted(metric, counter))  # type: ignore[arg-type]
        assert len(crossed) == 5 and len(side) == 9_995
        # Binary search over 10,000 keys: 14 halvings, at most 2 comparisons each,
        # not one per alert.
        assert counter[0] <= 2 * 15, counter[0]


def test_the_change_percent_is_computed_only_for_symbols_with_percent_alerts():
    index = AlertIndex([watch(1, ABOVE, "10"), watch(2, PCT, "5", "ETH")])
    assert index.pop_crossed("BTC", Decimal("9"), no_percent) == []
    calls = []

    def percent() -> Decimal:
        calls.append(1)
        return Decimal("5.00")

    assert [w.alert_id for w in index.pop_crossed("ETH", Decimal("1"), percent)] == ["a000002"]
    assert calls == [1]


def test_percent_alerts_are_signed():
    index = AlertIndex(
        [watch(1, PCT, "5"), watch(2, PCT, "10"), watch(3, PCT, "-5"), watch(4, PCT, "-10")]
    )
    assert index.pop_crossed("BTC", Decimal(1), lambda: Decimal("4.99")) == []
    assert [w.alert_id for w in index.pop_crossed("BTC", Decimal(1), lambda: Decimal("5"))] == [
        "a000001"
    ]
    assert [w.alert_id for w in index.pop_crossed("BTC", Decimal(1), lambda: Decimal("-7"))] == [
        "a000003"
    ]
    assert index.pop_crossed("BTC", Decimal(1), lambda: None) == []  # change unknown
    fired = index.pop_crossed("BTC", Decimal(1), lambda: Decimal("-10.5"))
    assert [w.alert_id for w in fired] == ["a000004"]
    assert len(index) == 1  # +10 % is still waiting


def test_add_and_remove_are_idempotent_and_removed_alerts_never_fire():
    index = AlertIndex()
    a, b = watch(1, ABOVE, "100"), watch(2, ABOVE, "100")  # equal thresholds
    index.add(a)
    index.add(a)
    index.add(b)
    assert len(index) == 2
    assert index.remove("a000001") == a
    assert index.remove("a000001") is None and index.remove("nope") is None
    assert index.pop_crossed("BTC", Decimal("1000"), no_percent) == [b]
    assert len(index) == 0 and index.count("BTC") == 0


prices = st.decimals(min_value=1, max_value=1000, places=2, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    alerts=st.lists(st.tuples(st.sampled_from([ABOVE, BELOW, PCT]), prices), max_size=40),
    ticks=st.lists(st.tuples(prices, st.decimals(-50, 50, places=2)), min_size=1, max_size=10),
)
def test_the_index_fires_what_a_full_scan_would(alerts, ticks):
    """Property: after any sequence of ticks, the fired alerts are exactly those a scan
    of every alert against the rule `met` fires, each once."""
    watches = [
        watch(i, c, str(v if c is not PCT else (v - 500) / 10 or Decimal(1)))
        for i, (c, v) in enumerate(alerts)
    ]
    index = AlertIndex(watches)
    waiting = {w.alert_id: w for w in watches}
    for price, percent in ticks:
        fired = index.pop_crossed("BTC", price, lambda p=percent: p)
        expected = {i for i, w in waiting.items() if met(w.condition, w.value, price, percent)}
        assert sorted(w.alert_id for w in fired) == sorted(expected)
        for i in expected:
            del waiting[i]
    assert len(index) == len(waiting)
