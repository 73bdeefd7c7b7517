import { useEffect, useMemo, useState } from "react";
import { useOrdersVersion } from "../api/activity";
import { useFreshQuery, useLive } from "../api/hooks";
import { ValueChart } from "../components/ValueChart";
import { graphql } from "../gql";
import type { HistoryRange, PortfolioFieldsFragment } from "../gql/graphql";
import { dateTime, money, percent, quantity, signedMoney, trend } from "../lib/format";
import { Link } from "../lib/router";

const PortfolioFields = graphql(`
  fragment PortfolioFields on Portfolio {
    totalValue
    cash
    cashAvailable
    realizedPnl
    unrealizedPnl
    dayChange
    dayChangePercent
    netDeposits
    complete
    valuedAt
    holdings {
      asset
      quantity
      available
      held
      averageCost
      costBasis
      price
      marketValue
      unrealizedPnl
      unrealizedPnlPercent
      allocationPercent
      dayChange
    }
  }
`);
void PortfolioFields;

const PortfolioQuery = graphql(`
  query Portfolio($range: HistoryRange!) {
    portfolio {
      ...PortfolioFields
      history(range: $range) {
        startValue
        endValue
        netFlows
        profit
        timeWeightedReturn
        points(limit: 200) {
          at
          value
        }
      }
    }
  }
`);

const PortfolioLive = graphql(`
  subscription PortfolioLive {
    portfolio {
      ...PortfolioFields
    }
  }
`);

const RANGES: { value: HistoryRange; label: string }[] = [
  { value: "DAY", label: "24 h" },
  { value: "WEEK", label: "7 d" },
  { value: "MONTH", label: "30 d" },
  { value: "YEAR", label: "1 y" },
  { value: "ALL", label: "All" },
];

const PALETTE = ["#3dd68c", "#4aa3ff", "#f5b942", "#b57cff", "#ff7a59", "#36c5c5", "#e86bb3", "#9bd15c", "#f0616d", "#c9a27e"];

export function Portfolio() {
  const [range, setRange] = useState<HistoryRange>("DAY");
  const [{ data, error }, reload] = useFreshQuery(PortfolioQuery, { range });
  const [live, setLive] = useState<PortfolioFieldsFragment | null>(null);
  const version = useOrdersVersion();
  useEffect(() => {
    if (version) reload();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [version]);
  useLive(PortfolioLive, {}, (event) => setLive(event.portfolio));
  const p: PortfolioFieldsFragment | undefined = live ?? data?.portfolio;
  const history = data?.portfolio.history;
  const points = useMemo(() => {
    const base = history?.points ?? [];
    return live ? [...base, { at: live.valuedAt, value: live.totalValue }] : base;
  }, [history, live]);

  if (!p) {
    return <section className="page-head">{error ? <p className="error">{error.message}</p> : <p className="muted">Loading portfolio…</p>}</section>;
  }
  const pnl = Number(p.totalValue) - Number(p.netDeposits);
  const segments = [
    ...p.holdings.map((h, i) => ({ label: h.asset, pct: Number(h.allocationPercent ?? 0), color: PALETTE[i % PALETTE.length] })),
    { label: "Cash", pct: Number(p.totalValue) > 0 ? (Number(p.cash) / Number(p.totalValue)) * 100 : 100, color: "#51606f" },
  ];
  return (
    <section>
      <header className="page-head">
        <h1>Portfolio</h1>
        <p className="muted">Valued at the bid, live. {p.complete ? "" : "Some holdings have no price yet and are left out."}</p>
      </header>
      <div className="kpis">
        <div className="kpi card">
          <span className="label">Total value</span>
          <span className="big" data-testid="total-value">
            {money(p.totalValue)}
          </span>
          <span className={trend(p.dayChange)}>
            {signedMoney(p.dayChange)} ({percent(p.dayChangePercent)}) today
          </span>
        </div>
        <div className="kpi card">
          <span className="label">Cash</span>
          <span className="big" data-testid="cash">
            {money(p.cash)}
          </span>
          <span className="muted">{money(p.cashAvailable)} available</span>
        </div>
        <div className="kpi card">
          <span className="label">Profit and loss</span>
          <span className={`big ${trend(pnl)}`}>{signedMoney(pnl)}</span>
          <span className="muted">
            realized {signedMoney(p.realizedPnl)} · unrealized {signedMoney(p.unrealizedPnl)}
          </span>
        </div>
        <div className="kpi card">
          <span className="label">Return ({RANGES.find((r) => r.value === range)?.label})</span>
          <span className={`big ${trend(history?.timeWeightedReturn)}`}>{percent(history?.timeWeightedReturn)}</span>
          <span className="muted">time-weighted, deposits excluded</span>
        </div>
      </div>
      <div className="card chart-card">
        <div className="row spread">
          <h3>Value</h3>
          <div className="tabs small" role="tablist" aria-label="Range">
            {RANGES.map((r) => (
              <button key={r.value} role="tab" aria-selected={range === r.value} className={range === r.value ? "active" : ""} onClick={() => setRange(r.value)}>
                {r.label}
              </button>
            ))}
          </div>
        </div>
        <ValueChart points={points} />
      </div>
      <h2>Allocation</h2>
      <div className="card">
        <div className="allocation" aria-label="Allocation">
          {segments.map((s) => (
            <span key={s.label} className="segment" style={{ width: `${Math.max(s.pct, 0)}%`, background: s.color }} title={`${s.label} ${s.pct.toFixed(2)} %`} />
          ))}
        </div>
        <ul className="legend">
          {segments.map((s) => (
            <li key={s.label}>
              <span className="swatch" style={{ background: s.color }} />
              {s.label} <span className="muted">{s.pct.toFixed(2)} %</span>
            </li>
          ))}
        </ul>
      </div>
      <h2>Holdings</h2>
      <div className="card flush">
        <table className="table" data-testid="holdings">
          <thead>
            <tr>
              <th>Asset</th>
              <th className="num">Quantity</th>
              <th className="num">Average cost</th>
              <th className="num">Price (bid)</th>
              <th className="num">Value</th>
              <th className="num">Unrealized P&amp;L</th>
              <th className="num">24 h</th>
              <th className="num">Allocation</th>
            </tr>
          </thead>
          <tbody>
            {p.holdings.length === 0 ? (
              <tr>
                <td colSpan={8} className="empty">
                  No holdings yet: <Link to="/markets/BTC">buy something</Link>.
                </td>
              </tr>
            ) : (
              p.holdings.map((h) => (
                <tr key={h.asset} data-testid={`holding-${h.asset}`}>
                  <td>
                    <Link to={`/markets/${h.asset}`}>
                      <strong>{h.asset}</strong>
                    </Link>
                  </td>
                  <td className="num">
                    {quantity(h.quantity)}
                    {Number(h.held) > 0 ? <div className="muted">{quantity(h.held)} held</div> : null}
                  </td>
                  <td className="num">{money(h.averageCost)}</td>
                  <td className="num">{money(h.price)}</td>
                  <td className="num">{money(h.marketValue)}</td>
                  <td className={`num ${trend(h.unrealizedPnl)}`}>
                    {signedMoney(h.unrealizedPnl)}
                    <div>{percent(h.unrealizedPnlPercent)}</div>
                  </td>
                  <td className={`num ${trend(h.dayChange)}`}>{signedMoney(h.dayChange)}</td>
                  <td className="num">{percent(h.allocationPercent).replace("+", "")}</td>
                </tr>
              ))
            )}
          </tbody>
        </table>
      </div>
      <p className="muted small">
        Valued {dateTime(p.valuedAt)} · net deposits {money(p.netDeposits)}
      </p>
    </section>
  );
}
