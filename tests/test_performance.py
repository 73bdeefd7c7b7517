"""Portfolio arithmetic with hand-computed expectations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from cryptovault.portfolio.performance import (
    Position,
    Valuation,
    percent,
    time_weighted_return,
    usd,
)


def test_weighted_average_cost_and_realized_pnl_net_of_fees():
    # Buy 1 BTC at 100 (fee 0.10), buy 1 at 200 (fee 0.20), sell 1 at 300 (fee 0.30).
    btc = Position()
    btc.buy(D(1), D("100.10"))
    btc.buy(D(1), D("200.20"))
    assert btc.cost == D("300.30") and btc.average_cost == D("150.15")
    btc.sell(D(1), D("299.70"))
    # 300 - 0.30 - 150.15
    assert btc.realized_pnl == D("149.55")
    assert btc.quantity == D(1) and btc.cost == D("150.15") and btc.average_cost == D("150.15")
    assert btc.unrealized_pnl(D(250)) == D("99.85")
    btc.sell(D(1), D(100))
    assert btc.quantity == 0 and btc.cost == 0 and btc.average_cost is None
    assert btc.realized_pnl == D("149.55") + D(100) - D("150.15")


def test_a_partial_sell_keeps_the_average_cost():
    eth = Position()
    eth.buy(D(3), D("30.30"))
    eth.sell(D(1), D(12))
    assert eth.average_cost == D("10.1")
    assert eth.realized_pnl == D("1.9")


def test_units_without_a_price_have_no_cost_and_removed_units_take_their_cost():
    sol = Position()
    sol.buy(D(2), D(200))
    sol.credit(D(2))  # an admin credit
    assert sol.quantity == 4 and sol.average_cost == D(50)
    sol.debit(D(1))  # an admin debit: no P&L
    assert sol.cost == D(150) and sol.realized_pnl == 0
    sol.sell(D(5), D(500))  # more than known: all the cost goes
    assert sol.quantity == 0 and sol.cost == 0 and sol.realized_pnl == D(350)


def test_a_deposit_in_the_middle_of_the_range_is_not_return():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    points = [
        Valuation(t, D(1000), D(1000)),  # 1,000 deposited
        Valuation(t + timedelta(days=1), D(1100), D(1000)),  # market +10 %
        Valuation(t + timedelta(days=2), D(2100), D(2000)),  # 1,000 more deposited
        Valuation(t + timedelta(days=3), D(2310), D(2000)),  # market +10 %
    ]
    # 1.1 x (2100 - 1000) / 1100 x 2310 / 2100 - 1 = 21 %, not the 131 % of value growth.
    assert time_weighted_return(points) == D("0.21")
    # A withdrawal is a negative flow: not a loss either.
    points.append(Valuation(t + timedelta(days=4), D(1310), D(1000)))
    assert time_weighted_return(points) == D("0.21")


def test_periods_from_an_empty_portfolio_are_skipped():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert time_weighted_return([Valuation(t, D(0), D(0))]) is None
    points = [
        Valuation(t, D(0), D(0)),
        Valuation(t + timedelta(hours=1), D(500), D(500)),
        Valuation(t + timedelta(hours=2), D(450), D(500)),
    ]
    assert time_weighted_return(points) == D("-0.1")


def test_display_rounding():
    assert usd(D("1.005")) == D("1.00") and usd(D("1.015")) == D("1.02")
    assert percent(D(1), D(3)) == D("33.33") and percent(D(1), D(0)) is None
