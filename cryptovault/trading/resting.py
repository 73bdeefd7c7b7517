"""Which symbols have no live order, as far as this instance knows: the matcher then
skips its store read on their ticks (a tick of a symbol nobody trades costs no round
trip).

What keeps that safe whatever the timing:
- an order becomes live only by its placement's insert, and every change the engine
  commits is followed by an order event (`TradingEngine._publish`): noted here first
  on the instance that made it, then heard by every instance on the bus;
- "none" is learned only from a store read that found no live order of the symbol,
  and only if no event of the symbol (nor a bus reconnect) was noted since just
  before that read was sent (`mark`): an order written after the read was evaluated
  is announced after its write, so after the mark, and the answer is not kept;
- what was learned is kept for `recheck` seconds at most, and a bus reconnect forgets
  everything: an event lost on the bus can delay a fill by that much, never lose it
  (the order stays in the store and the next read finds it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

# How long a read's answer is trusted without an event (seconds).
RECHECK_SECONDS = 5.0


class RestingOrders:
    """Per symbol: unknown (read the store), "no live order" (skip) or "some live
    order" (no need to ask again whether there is one), each answer until `recheck`
    seconds after it was read or until an order event of the symbol."""

    __slots__ = ("_changes", "_clock", "_known", "_resets", "recheck")

    def __init__(
        self, recheck: float = RECHECK_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.recheck = recheck
        self._clock = clock
        # symbol -> (any live order, trusted until)
        self._known: dict[str, tuple[bool, float]] = {}
        self._changes: dict[str, int] = {}  # order events noted per symbol
        self._resets = 0  # bus reconnects

    def none(self, symbol: str) -> bool:
        """Known to have no live order: its tick has nothing to match."""
        known = self._known.get(symbol)
        return known is not None and not known[0] and self._clock() < known[1]

    def known(self, symbol: str) -> bool:
        known = self._known.get(symbol)
        return known is not None and self._clock() < known[1]

    def mark(self, symbol: str) -> tuple[int, int]:
        """Taken before the read whose answer `learned` is given."""
        return self._resets, self._changes.get(symbol, 0)

    def learned(self, symbol: str, live: bool, mark: tuple[int, int]) -> None:
        """What a read sent after `mark` found; kept only if nothing changed since."""
        if mark == self.mark(symbol):
            self._known[symbol] = (live, self._clock() + self.recheck)

    def changed(self, symbol: str) -> None:
        """An order of the symbol changed (an order event, here or on another instance)."""
        self._changes[symbol] = self._changes.get(symbol, 0) + 1
        self._known.pop(symbol, None)

    def forget(self) -> None:
        """The bus reconnected: events may have been lost meanwhile."""
        self._resets += 1
        self._known.clear()
