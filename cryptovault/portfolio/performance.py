"""Portfolio arithmetic, free of storage: cost basis by weighted average cost, realized
and unrealized P&L, and the time-weighted return of a series of valuations. Every
figure is a Decimal; nothing is rounded until it is shown (see `usd`).

Formulas (README "Portfolio, watchlists and alerts"):

- buy q, paying P (USD, fee included):      quantity += q; cost += P
- sell q, receiving R (USD, net of the fee):  basis = cost * q / quantity
                                              realized += R - basis
                                              cost -= basis; quantity -= q
- average cost = cost / quantity
- unrealized = quantity * bid - cost
- time-weighted return over valuations V0..Vn with cumulative external flows C0..Cn
  (deposits and admin adjustments, withdrawals negative):
      TWR = prod_i (V_i - (C_i - C_{i-1})) / V_{i-1}  - 1
  (a flow is counted at the end of the period it falls in: valuations are taken right
  after every flow, so it earns nothing before it arrived); periods that start from a
  zero value are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import pairwise

ZERO = Decimal(0)
CENT = Decimal("0.01")
HUNDRED = Decimal(100)


def usd(value: Decimal) -> Decimal:
    """A USD figure as shown: to the cent, half-even."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def percent(part: Decimal, whole: Decimal) -> Decimal | None:
    """part / whole in percent, two decimals; None when whole is zero."""
    if not whole:
        return None
    return (part / whole * HUNDRED).quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass(slots=True)
class Position:
    """One asset's holding at weighted average cost, from the cash each movement
    actually moved (fees and rounding included)."""

    quantity: Decimal = ZERO
    cost: Decimal = ZERO  # cost basis of `quantity`, fees included (USD)
    realized_pnl: Decimal = ZERO  # from sells, net of their fees (USD)

    def buy(self, quantity: Decimal, paid: Decimal) -> None:
        """`paid`: the USD that left the account, fee included."""
        self.quantity += quantity
        self.cost += paid

    def sell(self, quantity: Decimal, received: Decimal) -> None:
        """`received`: the USD that arrived, net of the fee."""
        basis = self._basis(quantity)
        self.realized_pnl += received - basis
        self.cost -= basis
        self.quantity = max(self.quantity - quantity, ZERO)

    def credit(self, quantity: Decimal) -> None:
        """Units received without a price (an admin adjustment): a zero cost."""
        self.quantity += quantity

    def debit(self, quantity: Decimal) -> None:
        """Units removed without a sale (an admin adjustment): they take their share
        of the cost with them, no P&L."""
        self.cost -= self._basis(quantity)
        self.quantity = max(self.quantity - quantity, ZERO)

    def _basis(self, quantity: Decimal) -> Decimal:
        # Taking all of it (or more: units without a known cost) takes all the cost.
        if quantity >= self.quantity:
            return self.cost
        return self.cost * quantity / self.quantity

    @property
    def average_cost(self) -> Decimal | None:
        return self.cost / self.quantity if self.quantity else None

    def unrealized_pnl(self, bid: Decimal) -> Decimal:
        return self.quantity * bid - self.cost


@dataclass(frozen=True, slots=True)
class Valuation:
    """The portfolio's value at a moment, with the external flows received so far."""

    at: datetime
    value: Decimal
    net_flows: Decimal  # cumulative deposits and adjustments (withdrawals negative)


def time_weighted_return(points: Sequence[Valuation]) -> Decimal | None:
    """The time-weighted return (a fraction, e.g. 0.21 for +21 %) of valuations in
    time order; None when no period started from a positive value."""
    growth = Decimal(1)
    measured = False
    for before, after in pairwise(points):
        if before.value <= 0:
            continue
        flow = after.net_flows - before.net_flows
        growth *= (after.value - flow) / before.value
        measured = True
    return growth - 1 if measured else None
