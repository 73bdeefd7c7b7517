"""The asset catalogue: every tradable asset, quoted in USD."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from cryptovault.errors import BadUserInput


@dataclass(frozen=True, slots=True)
class Asset:
    symbol: str
    name: str
    quantity_increment: Decimal
    price_increment: Decimal
    # Simulation parameters: a realistic starting price, annualised volatility and
    # the half-spread between the last price and the best bid/ask, in basis points.
    start_price: Decimal
    volatility: Decimal
    half_spread_bps: Decimal
    min_size: Decimal
    min_notional: Decimal = Decimal("1")

    @property
    def precision(self) -> int:
        """Number of decimal places in a quantity."""
        return max(0, -self.quantity_increment.as_tuple().exponent)  # type: ignore[operator]

    @property
    def price_precision(self) -> int:
        return max(0, -self.price_increment.as_tuple().exponent)  # type: ignore[operator]

    def floor_price(self, value: Decimal) -> Decimal:
        return value.quantize(self.price_increment, rounding=ROUND_FLOOR)

    def ceil_price(self, value: Decimal) -> Decimal:
        return value.quantize(self.price_increment, rounding=ROUND_CEILING)

    def floor_quantity(self, value: Decimal) -> Decimal:
        return value.quantize(self.quantity_increment, rounding=ROUND_FLOOR)


def _asset(
    symbol: str, name: str, qty: str, px: str, start: str, vol: str, spread: str, min_size: str
) -> Asset:
    return Asset(
        symbol=symbol,
        name=name,
        quantity_increment=Decimal(qty),
        price_increment=Decimal(px),
        start_price=Decimal(start),
        volatility=Decimal(vol),
        half_spread_bps=Decimal(spread),
        min_size=Decimal(min_size),
    )


ASSETS: dict[str, Asset] = {
    a.symbol: a
    for a in (
        _asset("BTC", "Bitcoin", "0.00000001", "0.01", "91250.00", "0.55", "0.5", "0.00001"),
        _asset("ETH", "Ethereum", "0.00000001", "0.01", "3045.00", "0.70", "1", "0.0001"),
        _asset("SOL", "Solana", "0.000001", "0.01", "138.50", "0.95", "2", "0.001"),
        _asset("XRP", "XRP", "0.000001", "0.0001", "2.1800", "0.90", "2", "1"),
        _asset("ADA", "Cardano", "0.01", "0.0001", "0.4200", "0.90", "3", "1"),
        _asset("DOGE", "Dogecoin", "0.1", "0.00001", "0.14800", "1.10", "3", "10"),
        _asset("DOT", "Polkadot", "0.0001", "0.001", "2.350", "0.90", "4", "0.1"),
        _asset("AVAX", "Avalanche", "0.0001", "0.01", "13.80", "1.00", "3", "0.01"),
        _asset("LINK", "Chainlink", "0.0001", "0.001", "13.200", "0.90", "3", "0.01"),
        _asset("LTC", "Litecoin", "0.0001", "0.01", "84.50", "0.75", "3", "0.01"),
    )
}


def get_asset(symbol: str) -> Asset:
    """The asset for a symbol (case-insensitive), or BAD_USER_INPUT naming it."""
    asset = ASSETS.get(symbol.strip().upper())
    if asset is None:
        raise BadUserInput(f"Unknown symbol {symbol!r}", symbol=symbol)
    return asset


def resolve_symbols(symbols: list[str] | None) -> list[Asset]:
    """Assets for a symbol filter: None means all; an empty list is an error."""
    if symbols is None:
        return list(ASSETS.values())
    if not symbols:
        raise BadUserInput("symbols must not be empty (omit it for every asset)")
    seen: dict[str, Asset] = {}
    for symbol in symbols:
        asset = get_asset(symbol)
        seen.setdefault(asset.symbol, asset)
    return list(seen.values())
