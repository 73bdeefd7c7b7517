"""A tick: one price observation of one asset, as it travels on the event bus."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from cryptovault.market.assets import Asset


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    price: Decimal
    bid: Decimal
    ask: Decimal
    volume: Decimal
    timestamp: datetime
    source: str = "simulated"
    seq: int = 0

    def to_message(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "price": str(self.price),
            "bid": str(self.bid),
            "ask": str(self.ask),
            "volume": str(self.volume),
            "ts": self.timestamp.isoformat(),
            "source": self.source,
            "seq": self.seq,
        }

    @classmethod
    def from_message(cls, message: dict[str, object]) -> Tick:
        return cls(
            symbol=str(message["symbol"]),
            price=Decimal(str(message["price"])),
            bid=Decimal(str(message["bid"])),
            ask=Decimal(str(message["ask"])),
            volume=Decimal(str(message["volume"])),
            timestamp=datetime.fromisoformat(str(message["ts"])),
            source=str(message.get("source", "")),
            seq=int(message.get("seq", 0)),  # type: ignore[call-overload]
        )

    def survives_json(self) -> bool:
        """Whether `from_message` of this tick's message, after a JSON round trip, is
        this very tick: equal, and of the same types. True for what the feeds make
        (plain Decimals, whose `str` reads back with the same digits and exponent; a
        UTC or naive timestamp, which `fromisoformat` gives back with the same
        `tzinfo`); False for anything else (another time zone comes back as a fixed
        offset, a subclass as its base, a string orjson would refuse...)."""
        ts = self.timestamp
        return (
            type(ts) is datetime
            and (ts.tzinfo is UTC or ts.tzinfo is None)
            and not ts.fold
            and type(self.price) is Decimal
            and type(self.bid) is Decimal
            and type(self.ask) is Decimal
            and type(self.volume) is Decimal
            and type(self.symbol) is str
            and self.symbol.isascii()
            and type(self.source) is str
            and self.source.isascii()
            and type(self.seq) is int
            and _INT64_MIN <= self.seq <= _UINT64_MAX
        )


# The integers orjson writes.
_INT64_MIN, _UINT64_MAX = -(1 << 63), (1 << 64) - 1


def quote(
    asset: Asset,
    price: Decimal,
    volume: Decimal,
    source: str,
    timestamp: datetime | None = None,
    seq: int = 0,
) -> Tick:
    """A tick around a last price, with the asset's bid/ask spread (bid rounded
    down, ask rounded up, never crossing)."""
    price = asset.floor_price(price)
    half = price * asset.half_spread_bps / Decimal(10_000)
    bid = asset.floor_price(price - half)
    ask = asset.ceil_price(price + half)
    if ask <= bid:
        ask = bid + asset.price_increment
    return Tick(
        symbol=asset.symbol,
        price=price,
        bid=bid,
        ask=ask,
        volume=asset.floor_quantity(volume),
        timestamp=timestamp or datetime.now(UTC),
        source=source,
        seq=seq,
    )
