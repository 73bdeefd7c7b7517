"""Replay a CSV of historical prices (`timestamp,symbol,price[,volume]`) as live ticks,
keeping the original spacing divided by `speed`."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from cryptovault.market.assets import ASSETS
from cryptovault.market.feeds import Emit
from cryptovault.market.ticks import quote


class ReplayError(ValueError):
    pass


def _parse_time(raw: str) -> datetime:
    raw = raw.strip()
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except ValueError:
        pass
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def read_rows(path: Path) -> Iterator[tuple[datetime, str, Decimal, Decimal]]:
    with path.open(newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].startswith("#") or row[0].strip().lower() == "timestamp":
                continue
            if len(row) < 3:
                raise ReplayError(f"{path}:{number}: expected timestamp,symbol,price[,volume]")
            try:
                ts = _parse_time(row[0])
                price = Decimal(row[2].strip())
                volume = Decimal(row[3].strip()) if len(row) > 3 and row[3].strip() else Decimal(0)
            except (ValueError, InvalidOperation) as exc:
                raise ReplayError(f"{path}:{number}: {exc}") from None
            symbol = row[1].strip().upper()
            if symbol not in ASSETS:
                raise ReplayError(f"{path}:{number}: unknown symbol {symbol!r}")
            if price <= 0 or volume < 0:
                raise ReplayError(f"{path}:{number}: price must be > 0 and volume >= 0")
            yield ts, symbol, price, volume


class ReplayFeed:
    name = "replay"

    def __init__(self, path: Path, speed: float = 1.0, loop_forever: bool = False) -> None:
        self.path = path
        self.speed = speed
        self.loop_forever = loop_forever

    async def run(self, emit: Emit) -> None:
        while True:
            previous: datetime | None = None
            for seq, (ts, symbol, price, volume) in enumerate(read_rows(self.path), start=1):
                if previous is not None and ts > previous:
                    await asyncio.sleep((ts - previous).total_seconds() / self.speed)
                previous = ts
                await emit(quote(ASSETS[symbol], price, volume, self.name, seq=seq))
            if not self.loop_forever:
                return
