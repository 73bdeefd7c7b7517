"""`python -m bench [--quick] [--only fanout,http,inprocess]`: every scenario against
its floor, the figures printed and written to bench/out/ (results.json, report.md).
bench/RESULTS.md is the committed copy of a full run with its analysis."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from typing import Any

import uvloop

from bench import common, fanout, queries, report

SCENARIOS = ("fanout", "http", "inprocess")


async def run(only: set[str], quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": common.machine(), "quick": quick}
    with common.store() as store_url:
        if "fanout" in only:
            print(f"\n== tick fan-out\n{fanout.HEADER}", flush=True)
            results.update(await fanout.run(store_url, quick))
        if "http" in only:
            print("\n== HTTP queries", flush=True)
            results.update(await queries.http(store_url, quick))
        if "inprocess" in only:
            print("\n== in-process execution", flush=True)
            results.update(await queries.in_process(store_url, quick))
    return results


def teammates(quick: bool, results: dict[str, Any]) -> None:
    """Slots for the other features' benches (placeOrder throughput: bench.orders;
    limiter overhead: bench.limiter; cost as history grows: bench.growth). Each module's main(argv) runs in this process
    tree when present; its own output has the figures."""
    import importlib

    for name, argv in (
        ("orders", ["--quick"] if quick else []),
        ("limiter", ["--duration", "2", "--rounds", "1"] if quick else []),
        ("alerts", []),
        ("extensions", ["--n", "500"] if quick else []),
        ("introspection", ["--n", "10", "--rounds", "1"] if quick else []),
        ("growth", ["--quick", "--sizes", "100,2000"] if quick else []),
    ):
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            continue
        print(f"\n== {name}", flush=True)
        captured = io.StringIO()
        with contextlib.redirect_stdout(Tee(sys.stdout, captured)):
            module.main(argv)
        results[name] = captured.getvalue()


class Tee(io.TextIOBase):
    """Prints as usual and keeps a copy (a teammate bench's figures, for the report)."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, shorter runs")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    limit = common.raise_open_files()
    if limit < 21_000 and not args.quick:
        print(f"note: {limit} open files allowed; 10,000 sockets need ~10,100 per process")
    started = time.monotonic()
    results = uvloop.run(run(only, args.quick))
    if not args.only or args.only == ",".join(SCENARIOS):
        teammates(args.quick, results)
    common.OUT.mkdir(exist_ok=True)
    (common.OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))
    text = report.markdown(results)
    (common.OUT / "report.md").write_text(text)
    print("\n" + text)
    print(f"({time.monotonic() - started:.0f} s; bench/out/report.md, bench/out/results.json)")


if __name__ == "__main__":
    main()
