import { useState } from "react";
import { useStore } from "../lib/store";
import { session } from "../api/auth";
import { useAsset, usePrice } from "../api/market";
import { CandleChart, INTERVALS } from "../components/CandleChart";
import type { CandleInterval } from "../gql/graphql";
import { compactNumber, money, percent, trend } from "../lib/format";
import { Link } from "../lib/router";
import { useWatchlist } from "./Markets";
import { OrderTicket } from "./OrderTicket";
import { OrdersTable } from "./Orders";
import { AlertForm, AlertsTable } from "./Alerts";

export function AssetPage({ symbol }: { symbol: string }) {
  const asset = useAsset(symbol);
  const tick = usePrice(symbol);
  const signedIn = !!useStore(session);
  const { symbols, toggle } = useWatchlist();
  const [interval, setChartInterval] = useState<CandleInterval>("ONE_MINUTE");
  return (
    <section>
      <header className="page-head asset-head">
        <div>
          <h1>
            {symbol} <span className="muted">{asset?.name}</span>
            {signedIn ? (
              <button className={`star ${symbols.includes(symbol) ? "on" : ""}`} onClick={() => void toggle(symbol)} aria-label="Watchlist">
                {symbols.includes(symbol) ? "★" : "☆"}
              </button>
            ) : null}
          </h1>
          <div className="quote">
            <span className={`big flash-${tick?.direction ?? ""}`} data-testid="asset-price">
              {money(tick?.price)}
            </span>
            <span className={trend(tick?.changePercent24h)}>
              {percent(tick?.changePercent24h)} ({money(tick?.change24h)})
            </span>
          </div>
        </div>
        <dl className="stats-row">
          <dt>Bid</dt>
          <dd>{money(tick?.bid)}</dd>
          <dt>Ask</dt>
          <dd>{money(tick?.ask)}</dd>
          <dt>24 h high</dt>
          <dd>{money(tick?.high24h)}</dd>
          <dt>24 h low</dt>
          <dd>{money(tick?.low24h)}</dd>
          <dt>Volume</dt>
          <dd>{compactNumber(tick?.volume24h)}</dd>
        </dl>
      </header>
      <div className="trade-layout">
        <div className="card chart-card">
          <div className="tabs" role="tablist" aria-label="Interval">
            {INTERVALS.map((i) => (
              <button key={i.value} role="tab" aria-selected={interval === i.value} className={interval === i.value ? "active" : ""} onClick={() => setChartInterval(i.value)}>
                {i.label}
              </button>
            ))}
          </div>
          <CandleChart symbol={symbol} interval={interval} key={`${symbol}-${interval}`} />
        </div>
        <aside>
          {signedIn ? (
            <OrderTicket symbol={symbol} key={symbol} />
          ) : (
            <div className="card center">
              <p>Sign in to trade {symbol} with paper money.</p>
              <Link className="button primary" to={`/signin?next=/markets/${symbol}`}>
                Sign in
              </Link>
            </div>
          )}
        </aside>
      </div>
      {signedIn ? (
        <>
          <h2>Open {symbol} orders</h2>
          <OrdersTable symbol={symbol} open />
          <h2>{symbol} price alerts</h2>
          <div className="two-col">
            <AlertForm symbol={symbol} />
            <AlertsTable symbol={symbol} />
          </div>
        </>
      ) : null}
    </section>
  );
}
