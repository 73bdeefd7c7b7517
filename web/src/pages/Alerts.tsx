import { type FormEvent, useEffect, useState } from "react";
import { useMutation } from "urql";
import { alertsVersion, useAlertsVersion } from "../api/activity";
import { problem, type Problem } from "../api/errors";
import { useFreshQuery } from "../api/hooks";
import { useAssets, usePrices } from "../api/market";
import { Field, FormError } from "../components/Field";
import { graphql } from "../gql";
import type { AlertCondition } from "../gql/graphql";
import { dateTime, money, percent, trend } from "../lib/format";
import { Link } from "../lib/router";
import { useWatchlist } from "./Markets";

const AlertsQuery = graphql(`
  query PriceAlerts($symbol: String) {
    priceAlerts(first: 50, symbol: $symbol) {
      edges {
        node {
          id
          symbol
          condition
          value
          status
          createdAt
          triggeredAt
          triggeredPrice
        }
      }
    }
  }
`);

const CreateAlert = graphql(`
  mutation CreatePriceAlert($input: CreatePriceAlertInput!) {
    createPriceAlert(input: $input) {
      id
      status
    }
  }
`);

const DeleteAlert = graphql(`
  mutation DeletePriceAlert($id: ID!) {
    deletePriceAlert(id: $id) {
      id
    }
  }
`);

const CONDITIONS: { value: AlertCondition; label: string }[] = [
  { value: "ABOVE", label: "Price rises to" },
  { value: "BELOW", label: "Price falls to" },
  { value: "PERCENT_CHANGE_24H", label: "24 h change reaches (%)" },
];

function describe(condition: string, value: string): string {
  if (condition === "ABOVE") return `≥ ${money(value)}`;
  if (condition === "BELOW") return `≤ ${money(value)}`;
  return `24 h ${Number(value) > 0 ? "≥ +" : "≤ "}${value} %`;
}

function useReloadOnAlerts(reload: () => void) {
  const version = useAlertsVersion();
  useEffect(() => {
    if (version) reload();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [version]);
}

export function AlertForm({ symbol: fixed, onCreated }: { symbol?: string; onCreated?: () => void }) {
  const assets = useAssets();
  const prices = usePrices();
  const [symbol, setSymbol] = useState(fixed ?? "BTC");
  const [condition, setCondition] = useState<AlertCondition>("ABOVE");
  const [value, setValue] = useState("");
  const [error, setError] = useState<Problem | null>(null);
  const [done, setDone] = useState(false);
  const [{ fetching }, create] = useMutation(CreateAlert);
  const target = fixed ?? symbol;
  const current = prices[target];
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setDone(false);
    const result = await create({ input: { symbol: target, condition, value: value.trim() } });
    if (result.error) {
      setError(problem(result.error));
      return;
    }
    setValue("");
    setDone(true);
    alertsVersion.update((v) => v + 1);
    onCreated?.();
  };
  return (
    <form className="card form" onSubmit={submit} data-testid="alert-form" noValidate>
      <h3>New alert</h3>
      {fixed ? null : (
        <Field label="Asset" id="symbol" error={error?.fields.symbol}>
          <select value={symbol} onChange={(e) => setSymbol(e.target.value)} name="symbol">
            {assets.map((a) => (
              <option key={a.symbol} value={a.symbol}>
                {a.symbol} · {a.name}
              </option>
            ))}
          </select>
        </Field>
      )}
      <Field label="When" id="condition">
        <select value={condition} onChange={(e) => setCondition(e.target.value as AlertCondition)} name="condition">
          {CONDITIONS.map((c) => (
            <option key={c.value} value={c.value}>
              {c.label}
            </option>
          ))}
        </select>
      </Field>
      <Field
        label={condition === "PERCENT_CHANGE_24H" ? "Percent (e.g. 5 or -5)" : "Price (USD)"}
        id="value"
        error={error?.fields.value}
        hint={current ? `Now ${money(current.price)}, ${percent(current.changePercent24h)} in 24 h` : undefined}
      >
        <input name="value" inputMode="decimal" autoComplete="off" value={value} onChange={(e) => setValue(e.target.value)} />
      </Field>
      <FormError message={error && !error.fields.value && !error.fields.symbol ? error.message : null} />
      {done ? <div className="form-ok">Alert created: you will be notified once.</div> : null}
      <button className="primary" type="submit" disabled={fetching}>
        Create alert
      </button>
    </form>
  );
}

export function AlertsTable({ symbol }: { symbol?: string }) {
  const [{ data, fetching }, reload] = useFreshQuery(AlertsQuery, { symbol: symbol ?? null });
  useReloadOnAlerts(reload);
  const [, remove] = useMutation(DeleteAlert);
  const alerts = data?.priceAlerts.edges.map((e) => e.node) ?? [];
  return (
    <div className="card flush" data-testid="alerts">
      <table className="table">
        <thead>
          <tr>
            <th>Asset</th>
            <th>Condition</th>
            <th>Status</th>
            <th>Fired</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {alerts.length === 0 ? (
            <tr>
              <td colSpan={5} className="empty">
                {fetching && !data ? "Loading…" : "No alerts."}
              </td>
            </tr>
          ) : (
            alerts.map((a) => (
              <tr key={a.id} data-testid="alert-row" data-status={a.status}>
                <td>{a.symbol}</td>
                <td>{describe(a.condition, a.value)}</td>
                <td>
                  <span className={`badge ${a.status.toLowerCase()}`}>{a.status.toLowerCase()}</span>
                </td>
                <td className="muted">{a.triggeredAt ? `${dateTime(a.triggeredAt)} at ${money(a.triggeredPrice)}` : "—"}</td>
                <td className="num">
                  <button
                    className="small"
                    onClick={async () => {
                      await remove({ id: a.id });
                      reload();
                    }}
                  >
                    Delete
                  </button>
                </td>
              </tr>
            ))
          )}
        </tbody>
      </table>
    </div>
  );
}

function Watchlist() {
  const { symbols, toggle } = useWatchlist();
  const prices = usePrices();
  const assets = useAssets();
  const [adding, setAdding] = useState("");
  const unwatched = assets.filter((a) => !symbols.includes(a.symbol));
  return (
    <div className="card" data-testid="watchlist">
      {symbols.length === 0 ? <p className="muted">Nothing watched yet. Star assets on the markets page, or add one here.</p> : null}
      <ul className="watchlist">
        {symbols.map((s) => (
          <li key={s}>
            <Link to={`/markets/${s}`}>
              <strong>{s}</strong>
            </Link>
            <span className="num">{money(prices[s]?.price)}</span>
            <span className={`num ${trend(prices[s]?.changePercent24h)}`}>{percent(prices[s]?.changePercent24h)}</span>
            <button className="small" onClick={() => void toggle(s)}>
              Remove
            </button>
          </li>
        ))}
      </ul>
      {unwatched.length ? (
        <form
          className="inline"
          onSubmit={(e) => {
            e.preventDefault();
            if (adding) void toggle(adding).then(() => setAdding(""));
          }}
        >
          <select value={adding} onChange={(e) => setAdding(e.target.value)} aria-label="Asset to watch">
            <option value="">Add an asset…</option>
            {unwatched.map((a) => (
              <option key={a.symbol} value={a.symbol}>
                {a.symbol} · {a.name}
              </option>
            ))}
          </select>
          <button type="submit" disabled={!adding}>
            Watch
          </button>
        </form>
      ) : null}
    </div>
  );
}

export function Alerts() {
  return (
    <section>
      <header className="page-head">
        <h1>Watchlist and alerts</h1>
        <p className="muted">An alert fires once, on the first tick that meets it, and shows up here and as a notification.</p>
      </header>
      <h2>Watchlist</h2>
      <Watchlist />
      <h2>Price alerts</h2>
      <div className="two-col">
        <AlertForm />
        <AlertsTable />
      </div>
    </section>
  );
}
