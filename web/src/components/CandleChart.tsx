/**
 * Candles of one asset: a page of history from `candles`, older pages as the user
 * scrolls left, and the open candle moving live through the `candles` subscription.
 */
import { CandlestickSeries, createChart, type IChartApi, type ISeriesApi, type UTCTimestamp } from "lightweight-charts";
import { useCallback, useEffect, useRef, useState } from "react";
import { client } from "../api/client";
import { useLive } from "../api/hooks";
import { graphql } from "../gql";
import type { CandleInterval } from "../gql/graphql";
import { ChartCredit } from "./ChartCredit";
import { chartOptions, DOWN, toTime, UP } from "./charts";

const CandleFields = graphql(`
  fragment CandleFields on Candle {
    openTime
    open
    high
    low
    close
    volume
    closed
  }
`);
void CandleFields;

const CandlesPage = graphql(`
  query CandlesPage($symbol: String!, $interval: CandleInterval!, $after: String) {
    candles(symbol: $symbol, interval: $interval, first: 200, after: $after) {
      edges {
        node {
          ...CandleFields
        }
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
`);

const CandlesLive = graphql(`
  subscription CandlesLive($symbol: String!, $interval: CandleInterval!) {
    candles(symbol: $symbol, interval: $interval) {
      ...CandleFields
    }
  }
`);

type Bar = { time: UTCTimestamp; open: number; high: number; low: number; close: number };
type Node = { openTime: string; open: string; high: string; low: string; close: string };

const bar = (c: Node): Bar => ({
  time: toTime(c.openTime) as UTCTimestamp,
  open: Number(c.open),
  high: Number(c.high),
  low: Number(c.low),
  close: Number(c.close),
});

export const INTERVALS: { value: CandleInterval; label: string }[] = [
  { value: "ONE_MINUTE", label: "1m" },
  { value: "FIVE_MINUTES", label: "5m" },
  { value: "FIFTEEN_MINUTES", label: "15m" },
  { value: "ONE_HOUR", label: "1h" },
  { value: "ONE_DAY", label: "1d" },
];

export function CandleChart({ symbol, interval }: { symbol: string; interval: CandleInterval }) {
  const box = useRef<HTMLDivElement>(null);
  const chart = useRef<IChartApi | null>(null);
  const series = useRef<ISeriesApi<"Candlestick"> | null>(null);
  const bars = useRef<Map<number, Bar>>(new Map());
  const cursor = useRef<{ after: string | null; more: boolean; loading: boolean }>({ after: null, more: true, loading: false });
  const [state, setState] = useState<{ count: number; loading: boolean; more: boolean; error?: string }>({
    count: 0,
    loading: true,
    more: true,
  });

  const loadPage = useCallback(async () => {
    const c = cursor.current;
    if (c.loading || !c.more) return;
    c.loading = true;
    setState((s) => ({ ...s, loading: true }));
    const result = await client
      .query(CandlesPage, { symbol, interval, after: c.after }, { requestPolicy: "network-only" })
      .toPromise();
    c.loading = false;
    const page = result.data?.candles;
    if (!page) {
      setState((s) => ({ ...s, loading: false, error: result.error?.message ?? "Could not load candles" }));
      return;
    }
    for (const edge of page.edges) {
      const b = bar(edge.node);
      if (!bars.current.has(b.time)) bars.current.set(b.time, b);
    }
    c.after = page.pageInfo.endCursor ?? null;
    c.more = page.pageInfo.hasNextPage;
    series.current?.setData([...bars.current.values()].sort((a, b) => a.time - b.time));
    setState({ count: bars.current.size, loading: false, more: c.more });
  }, [symbol, interval]);

  useEffect(() => {
    if (!box.current) return;
    const created = createChart(box.current, chartOptions);
    const candles = created.addSeries(CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    chart.current = created;
    series.current = candles;
    bars.current = new Map();
    cursor.current = { after: null, more: true, loading: false };
    setState({ count: 0, loading: true, more: true });
    void loadPage().then(() => created.timeScale().scrollToRealTime());
    // Older candles when the left edge comes into view.
    const onRange = (range: { from: number } | null) => {
      if (range && range.from < 10) void loadPage();
    };
    created.timeScale().subscribeVisibleLogicalRangeChange(onRange);
    return () => {
      created.timeScale().unsubscribeVisibleLogicalRangeChange(onRange);
      created.remove();
      chart.current = null;
      series.current = null;
    };
  }, [symbol, interval, loadPage]);

  useLive(CandlesLive, { symbol, interval }, (event) => {
    const b = bar(event.candles);
    const latest = Math.max(0, ...bars.current.keys());
    if (b.time < latest) return; // an update of a candle already closed and drawn
    bars.current.set(b.time, b);
    series.current?.update(b);
    box.current?.setAttribute("data-live-close", String(b.close));
  });

  return (
    <div className="chart-wrap">
      <div className="chart" ref={box} data-testid="candle-chart" data-candles={state.count} />
      <div className="chart-status">
        {state.error ? <span className="error">{state.error}</span> : null}
        {state.loading ? "Loading candles…" : `${state.count} candle${state.count === 1 ? "" : "s"}${state.more ? " · scroll left for older" : " · all history loaded"}`}
        <ChartCredit />
      </div>
    </div>
  );
}
