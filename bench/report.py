"""The bench's figures as Markdown tables, with the issue's targets checked."""

from __future__ import annotations

from typing import Any

from bench.common import fmt


def _by(rows: list[dict[str, Any]], server: str) -> dict[int, dict[str, Any]]:
    return {r["subscribers"]: r for r in rows if r["server"] == server and "ticks" in r}


def fanout_table(rows: list[dict[str, Any]]) -> list[str]:
    floor = _by(rows, "floor")
    out = [
        "| N | server | ticks | tick-to-all p50 / p99 ms | message p50 / p99 ms "
        "| server CPU µs/msg | x floor | RSS KB/conn | RSS growth B/msg |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "ticks" not in r:
            out.append(f"| {r['subscribers']:,} | {r['server']} | — | {r.get('error')} |||||")
            continue
        base = floor.get(r["subscribers"])
        ratio = r["cpu_us_per_msg"] / base["cpu_us_per_msg"] if base else float("nan")
        note = f" ({r['error']})" if r.get("error") else ""
        out.append(
            f"| {r['subscribers']:,} | {r['server']}{note} | {r['ticks']} "
            f"| {fmt(r['to_all_p50_ms'])} / {fmt(r['to_all_p99_ms'])} "
            f"| {fmt(r['msg_p50_ms'])} / {fmt(r['msg_p99_ms'])} "
            f"| {fmt(r['cpu_us_per_msg'])} | {fmt(ratio, 2)} "
            f"| {fmt(r['rss_per_connection_kb'])} | {fmt(r['rss_growth_bytes_per_msg'])} |"
        )
    return out


def marginal(rows: list[dict[str, Any]], server: str) -> float:
    """CPU per additional subscriber per tick (µs): the slope between the smallest
    and largest N, free of the per-tick work (HTTP trigger, market bookkeeping)."""
    runs = _by(rows, server)
    if len(runs) < 2:
        return float("nan")
    lo, hi = min(runs), max(runs)
    per_tick = {n: runs[n]["cpu_us_per_msg"] * n for n in (lo, hi)}
    return (per_tick[hi] - per_tick[lo]) / (hi - lo)


def http_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| query | conns | app req/s | floor req/s | x floor | app p50 / p99 ms "
        "| floor p50 / p99 ms | app CPU µs/req | floor CPU µs/req | CPU x floor | bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| `{r['query']}` | {r['connections']} | {fmt(r['rps'], 0)} | {fmt(r['floor_rps'], 0)} "
            f"| {fmt(r['rps_ratio'], 2)} | {fmt(r['p50_ms'], 2)} / {fmt(r['p99_ms'], 2)} "
            f"| {fmt(r['floor_p50_ms'], 2)} / {fmt(r['floor_p99_ms'], 2)} "
            f"| {fmt(r['cpu_us_per_request'], 0)} | {fmt(r['floor_cpu_us_per_request'], 0)} "
            f"| {fmt(r['cpu_ratio'], 2)} | {r['response_bytes']:,} |"
        )
    return out


def in_process_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| query | app path | app CPU µs | Strawberry `schema.execute` CPU µs "
        "| graphql-core `execute` CPU µs | app ratio | Strawberry ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| `{r['query']}` | {r.get('app_path', '—')} | {fmt(r.get('app_us', float('nan')))} "
            f"| {fmt(r['strawberry_us'])} | {fmt(r['graphql_core_us'])} "
            f"| {fmt(r.get('app_ratio', float('nan')), 2)} | {fmt(r['ratio'], 2)} |"
        )
    return out


def targets(results: dict[str, Any]) -> list[str]:
    lines = ["| target | measured | met |", "|---|---|---|"]

    def row(target: str, measured: str, ok: bool | None) -> None:
        mark = "—" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {target} | {measured} | {mark} |")

    fan = results.get("fanout", [])
    if fan:
        floor, grouped = _by(fan, "floor"), _by(fan, "grouped")
        ratios = {
            n: grouped[n]["cpu_us_per_msg"] / floor[n]["cpu_us_per_msg"]
            for n in grouped
            if n in floor
        }
        text = ", ".join(f"{n:,}: {r:.2f}x" for n, r in sorted(ratios.items()))
        slope = marginal(fan, "grouped") / marginal(fan, "floor")
        row(
            "fan-out CPU per delivered message <= 1.2x floor (issue 16)",
            f"{text}; per added subscriber {slope:.2f}x",
            all(r <= 1.2 for r in ratios.values()) if ratios else None,
        )
        if 10_000 in grouped:
            p99 = grouped[10_000]["to_all_p99_ms"]
            row("10,000 subscribers: tick-to-all p99 <= 250 ms", f"{p99:.0f} ms", p99 <= 250)
        big = max(grouped) if grouped else None
        if big:
            kb = grouped[big]["rss_per_connection_kb"]
            row(f"idle subscriber socket <= 30 KB ({big:,} sockets)", f"{kb:.1f} KB", kb <= 30)
    soak = [r for r in results.get("soak", []) if r.get("server") == "grouped" and "ticks" in r]
    if soak:
        s = soak[0]
        per = s["rss_growth_bytes_per_msg"]
        row(
            f"memory flat: {s['ticks']:,} events to {s['subscribers']} subscribers, < 100 B "
            "per event per subscriber",
            f"{per:.2f} B ({s['rss_growth_mb']:.1f} MB in all)",
            per < 100,
        )
    http = results.get("http", [])
    for r in http:
        if r["query"] in ("ping", "prices"):
            row(
                f"`{r['query']}` over HTTP >= 0.5x plain Starlette ({r['connections']} conn)",
                f"{r['rps_ratio']:.2f}x req/s, {r['cpu_ratio']:.2f}x CPU per request",
                r["rps_ratio"] >= 0.5,
            )
    for r in results.get("in_process", []):
        ratio = r.get("app_ratio", r["ratio"])
        row(
            f"`{r['query']}` in-process <= 1.3x graphql-core execute",
            f"{ratio:.2f}x ({r.get('app_path', 'view')})",
            ratio <= 1.3,
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), Linux {m['kernel']}, "
        f"Python {m['python']}, strawberry {m['strawberry']}, graphql-core {m['graphql-core']}, "
        f"uvicorn {m['uvicorn']} (uvloop, websockets-sansio), mode: "
        f"{'quick' if results.get('quick') else 'full'}.",
        "",
        "### Targets",
        "",
        *targets(results),
    ]
    if results.get("fanout"):
        out += ["", "### Tick fan-out (`prices`, one symbol)", "", *fanout_table(results["fanout"])]
        out += [
            "",
            "Per added subscriber (slope between the smallest and largest N): floor "
            f"{fmt(marginal(results['fanout'], 'floor'))} µs, grouped "
            f"{fmt(marginal(results['fanout'], 'grouped'))} µs, naive "
            f"{fmt(marginal(results['fanout'], 'naive'))} µs.",
        ]
    if results.get("soak"):
        out += ["", "### Memory soak", "", *fanout_table(results["soak"])]
    if results.get("http"):
        out += ["", "### HTTP queries", "", *http_table(results["http"])]
    if results.get("in_process"):
        out += ["", "### In-process execution", "", *in_process_table(results["in_process"])]
    titles = {
        "orders": "placeOrder on the embedded store",
        "limiter": "Limiter overhead",
        "alerts": "Price alert check per tick",
        "extensions": "What each schema extension adds (in process)",
    }
    for name, title in titles.items():
        if name in results:
            text = str(results[name]).strip()
            # The orders bench prints a markdown table; the others aligned text.
            body = [text] if text.startswith("|") else ["```", text, "```"]
            out += ["", f"### {title}", "", *body]
    return "\n".join(out) + "\n"
