"""Valuing a portfolio: balances (what is held now) priced at the current bid (what
the holdings would fetch), with cost basis and realized P&L from the user's books.
Pure: no store, no market service; the caller passes the quotes.

- marketValue = quantity x bid;  totalValue = cash + sum of marketValue
- unrealizedPnl = marketValue - cost basis;  unrealizedPnl% = unrealizedPnl / cost x 100
- allocation% = marketValue / totalValue x 100
- dayChange = sum over holdings of quantity x (last price - last price 24 h ago): what
  the current holdings gained or lost over 24 hours (cash has no day change);
  dayChange% = dayChange / (totalValue - dayChange) x 100
USD figures are shown to the cent, percentages to 2 decimals; average cost keeps the
precision of an average fill price."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from cryptovault.market.assets import ASSETS
from cryptovault.market.service import Quote
from cryptovault.portfolio.books import Books
from cryptovault.portfolio.performance import ZERO, percent, usd
from cryptovault.trading.ledger import USD


@dataclass(frozen=True, slots=True)
class BalanceLine:
    asset: str
    available: Decimal
    held: Decimal

    @property
    def total(self) -> Decimal:
        return self.available + self.held


@dataclass(frozen=True, slots=True)
class HoldingValue:
    asset: str
    quantity: Decimal
    available: Decimal
    held: Decimal
    average_cost: Decimal | None
    cost_basis: Decimal
    price: Decimal | None  # the bid used; None until the asset has a price
    market_value: Decimal | None
    unrealized_pnl: Decimal | None
    unrealized_pnl_percent: Decimal | None
    allocation_percent: Decimal | None
    day_change: Decimal | None


@dataclass(frozen=True, slots=True)
class PortfolioValue:
    user_id: str
    at: datetime
    total_value: Decimal
    cash: Decimal
    cash_available: Decimal
    cash_held: Decimal
    holdings: tuple[HoldingValue, ...]
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    day_change: Decimal
    day_change_percent: Decimal | None
    net_flows: Decimal
    complete: bool  # False while a holding has no price yet (left out of the totals)


def average_price(value: Decimal, asset: str) -> Decimal:
    """Like an order's averageFillPrice: 4 more decimals than the price increment."""
    return value.quantize(ASSETS[asset].price_increment / 10_000).normalize()


def value_portfolio(
    user_id: str,
    at: datetime,
    balances: Iterable[BalanceLine],
    books: Books,
    quote: Callable[[str], Quote | None],
) -> PortfolioValue:
    cash = BalanceLine(USD, ZERO, ZERO)
    lines: list[tuple[BalanceLine, Quote | None]] = []
    for line in balances:
        if line.asset == USD:
            cash = line
        elif line.total > 0 and line.asset in ASSETS:
            lines.append((line, quote(line.asset)))
    priced_total = cash.total + sum(
        (line.total * q.tick.bid for line, q in lines if q is not None), ZERO
    )
    holdings: list[HoldingValue] = []
    unrealized = day_change = ZERO
    for line, q in sorted(lines, key=lambda item: item[0].asset):
        position = books.positions.get(line.asset)
        # The books and the balance agree once every entry is folded; if a movement
        # is still being written, its units take the average cost.
        if position is None or not position.quantity:
            cost = ZERO
        elif position.quantity == line.total:
            cost = position.cost
        else:
            cost = position.cost / position.quantity * line.total
        average = cost / line.total if cost else None
        market_value = pnl = pnl_percent = allocation = change = None
        if q is not None:
            market_value = line.total * q.tick.bid
            pnl = market_value - cost
            pnl_percent = percent(pnl, cost)
            allocation = percent(market_value, priced_total)
            if q.day is not None:
                change = line.total * q.day.change(q.tick.price)
                day_change += change
            unrealized += pnl
        holdings.append(
            HoldingValue(
                asset=line.asset,
                quantity=line.total,
                available=line.available,
                held=line.held,
                average_cost=average_price(average, line.asset) if average is not None else None,
                cost_basis=usd(cost),
                price=q.tick.bid if q is not None else None,
                market_value=usd(market_value) if market_value is not None else None,
                unrealized_pnl=usd(pnl) if pnl is not None else None,
                unrealized_pnl_percent=pnl_percent,
                allocation_percent=allocation,
                day_change=usd(change) if change is not None else None,
            )
        )
    return PortfolioValue(
        user_id=user_id,
        at=at,
        total_value=usd(priced_total),
        cash=usd(cash.total),
        cash_available=usd(cash.available),
        cash_held=usd(cash.held),
        holdings=tuple(holdings),
        realized_pnl=usd(books.realized_pnl),
        unrealized_pnl=usd(unrealized),
        day_change=usd(day_change),
        day_change_percent=percent(day_change, priced_total - day_change),
        net_flows=usd(books.net_flows),
        complete=all(q is not None for _, q in lines),
    )
