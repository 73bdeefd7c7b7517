"""What a tick costs the price alert check, against the number of active alerts.

For 1,000, 10,000 and 100,000 active alerts on one symbol (half ABOVE, half BELOW,
thresholds in random order), in memory:

- quiet:  a tick that crosses no alert (the common case);
- fires5: a tick that crosses exactly 5 alerts (they leave the index);
- build:  loading the index from a list (what a start-up or resync does after the
          store read), per alert;
- scan:   for contrast, checking every alert against the tick (what the index avoids).

Times are the median of --rounds rounds of --ticks ticks each, per tick; ratios are
to the smallest size. The store is not involved: firing an alert costs one
conditional update per fired alert on top (tests/test_price_alerts.py counts them).
Writes bench/out/alerts.json.

    python -m bench.alerts [--ticks 200] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from decimal import Decimal
from pathlib import Path

from cryptovault.portfolio.alert_index import AlertCondition, AlertIndex, Watch
from cryptovault.portfolio.alerts import met

SIZES = (1_000, 10_000, 100_000)
OUT = Path(__file__).parent / "out"
BASE = Decimal(100_000)


def watches(n: int, seed: int = 1) -> list[Watch]:
    """n/2 ABOVE thresholds at BASE + 1, + 2, ... and n/2 BELOW at BASE - 1, - 2, ...
    (USD, one cent apart in price terms: every tick above BASE + k crosses k)."""
    half = n // 2
    result = [
        Watch(f"a{i}", f"u{i % 1000}", "BTC", AlertCondition.ABOVE, BASE + i + 1)
        for i in range(half)
    ] + [
        Watch(f"b{i}", f"u{i % 1000}", "BTC", AlertCondition.BELOW, BASE - i - 1)
        for i in range(n - half)
    ]
    random.Random(seed).shuffle(result)
    return result


def no_percent() -> Decimal | None:
    return None


def per_tick_ns(run, ticks: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        run(ticks)
        samples.append((time.perf_counter_ns() - started) / ticks)
    return statistics.median(samples)


def measure(n: int, ticks: int, rounds: int) -> dict[str, float]:
    alerts = watches(n)
    started = time.perf_counter_ns()
    index = AlertIndex(alerts)
    build_ns = (time.perf_counter_ns() - started) / n

    quiet_price = BASE  # between the highest BELOW and the lowest ABOVE

    def quiet(k: int) -> None:
        for _ in range(k):
            index.pop_crossed("BTC", quiet_price, no_percent)

    # Each tick 5 dollars higher than the last crosses the next 5 ABOVE thresholds.
    # Fresh indexes per round (outside the timing) so every tick fires exactly 5.
    rounds_left: list[AlertIndex] = []
    used: list[AlertIndex] = []  # freed after the timing, not inside it

    def fires5(k: int) -> None:
        idx = rounds_left.pop()
        used.append(idx)
        for step in range(1, k + 1):
            crossed = idx.pop_crossed("BTC", BASE + 5 * step, no_percent)
            assert len(crossed) == 5

    assert 5 * ticks <= n // 2, "too many ticks for this size"
    rounds_left.extend(AlertIndex(alerts) for _ in range(rounds))

    scan_ticks = max(1, ticks // 20)

    def scan(k: int) -> None:
        for _ in range(k):
            [w for w in alerts if met(w.condition, w.value, quiet_price, None)]

    return {
        "alerts": n,
        "quiet_ns": per_tick_ns(quiet, ticks, rounds),
        "fires5_ns": per_tick_ns(fires5, ticks, rounds),
        "build_ns_per_alert": build_ns,
        "scan_ns": per_tick_ns(scan, scan_ticks, max(3, rounds // 2)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    results = [measure(n, min(args.ticks, n // 10), args.rounds) for n in SIZES]
    base = results[0]
    print("\nprice alert check per tick, one symbol (median, in-memory index)")
    print(
        f"{'alerts':>8}{'quiet µs':>10}{'ratio':>7}{'fires 5 µs':>12}{'ratio':>7}"
        f"{'build µs/alert':>16}{'full scan µs':>14}{'ratio':>8}"
    )
    for r in results:
        r["quiet_ratio"] = r["quiet_ns"] / base["quiet_ns"]
        r["fires5_ratio"] = r["fires5_ns"] / base["fires5_ns"]
        r["scan_ratio"] = r["scan_ns"] / base["scan_ns"]
        print(
            f"{r['alerts']:>8,}{r['quiet_ns'] / 1000:>10.2f}{r['quiet_ratio']:>7.2f}"
            f"{r['fires5_ns'] / 1000:>12.2f}{r['fires5_ratio']:>7.2f}"
            f"{r['build_ns_per_alert'] / 1000:>16.2f}{r['scan_ns'] / 1000:>14.0f}"
            f"{r['scan_ratio']:>8.1f}"
        )
    print("ratios: to 1,000 alerts. The index grows with log(alerts) and the alerts that")
    print("fire; a full scan grows with every alert.")
    OUT.mkdir(exist_ok=True)
    (OUT / "alerts.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
