import { useEffect, useState } from "react";
import { useMutation } from "urql";
import { useOrdersVersion } from "../api/activity";
import { problem } from "../api/errors";
import { useFreshQuery } from "../api/hooks";
import { FormError } from "../components/Field";
import { graphql } from "../gql";
import type { OrderStatus } from "../gql/graphql";
import { dateTime, money, quantity } from "../lib/format";
import { Link } from "../lib/router";

const OrdersQuery = graphql(`
  query Orders($status: [OrderStatus!], $symbol: String, $first: Int!) {
    orders(first: $first, status: $status, symbol: $symbol) {
      edges {
        node {
          id
          symbol
          side
          type
          timeInForce
          status
          quantity
          quoteQuantity
          limitPrice
          stopPrice
          filledQuantity
          averageFillPrice
          fees
          rejectReason
          cancelRequested
          createdAt
        }
      }
    }
  }
`);

const TradesQuery = graphql(`
  query Trades($symbol: String) {
    trades(first: 25, symbol: $symbol) {
      edges {
        node {
          id
          symbol
          side
          quantity
          price
          fee
          liquidity
          createdAt
        }
      }
    }
  }
`);

const CancelOrder = graphql(`
  mutation CancelOrder($id: ID!) {
    cancelOrder(id: $id) {
      id
      status
      cancelRequested
    }
  }
`);

const OPEN: OrderStatus[] = ["PENDING", "OPEN", "PARTIALLY_FILLED"];
const DONE: OrderStatus[] = ["FILLED", "CANCELED", "REJECTED", "EXPIRED"];

function useReloadOnOrders(reload: () => void) {
  const version = useOrdersVersion();
  useEffect(() => {
    if (version) reload();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [version]);
}

const label = (s: string) => s.replace("_", " ").toLowerCase();

export function OrdersTable({ symbol, open, first = 25 }: { symbol?: string; open: boolean; first?: number }) {
  const [{ data, fetching }, reload] = useFreshQuery(OrdersQuery, { status: open ? OPEN : DONE, symbol: symbol ?? null, first });
  useReloadOnOrders(reload);
  const [cancelState, cancel] = useMutation(CancelOrder);
  const [error, setError] = useState<string | null>(null);
  const orders = data?.orders.edges.map((e) => e.node) ?? [];
  const onCancel = async (id: string) => {
    setError(null);
    const result = await cancel({ id });
    if (result.error) setError(problem(result.error)?.message ?? "Could not cancel");
    reload();
  };
  return (
    <div className="card flush" data-testid={open ? "open-orders" : "order-history"}>
      <FormError message={error} />
      <table className="table">
        <thead>
          <tr>
            <th>Placed</th>
            {symbol ? null : <th>Asset</th>}
            <th>Side</th>
            <th>Type</th>
            <th className="num">Quantity</th>
            <th className="num">Price</th>
            <th className="num">Filled</th>
            <th>Status</th>
            {open ? <th /> : null}
          </tr>
        </thead>
        <tbody>
          {orders.length === 0 ? (
            <tr>
              <td colSpan={9} className="empty">
                {fetching && !data ? "Loading…" : open ? "No open orders." : "No orders yet."}
              </td>
            </tr>
          ) : (
            orders.map((o) => (
              <tr key={o.id} data-testid="order-row" data-status={o.status}>
                <td className="muted">{dateTime(o.createdAt)}</td>
                {symbol ? null : (
                  <td>
                    <Link to={`/markets/${o.symbol}`}>{o.symbol}</Link>
                  </td>
                )}
                <td className={o.side === "BUY" ? "up" : "down"}>{o.side.toLowerCase()}</td>
                <td>
                  {label(o.type)} <span className="muted">{o.timeInForce}</span>
                </td>
                <td className="num">{o.quantity ? quantity(o.quantity) : money(o.quoteQuantity)}</td>
                <td className="num">
                  {o.limitPrice ? money(o.limitPrice) : o.stopPrice ? `stop ${money(o.stopPrice)}` : "market"}
                  {o.limitPrice && o.stopPrice ? <div className="muted">stop {money(o.stopPrice)}</div> : null}
                </td>
                <td className="num">
                  {quantity(o.filledQuantity)}
                  {o.averageFillPrice ? <div className="muted">@ {money(o.averageFillPrice)}</div> : null}
                </td>
                <td>
                  <span className={`badge ${o.status.toLowerCase()}`} title={o.rejectReason ?? undefined}>
                    {label(o.status)}
                  </span>
                  {o.cancelRequested ? <span className="muted"> cancel requested</span> : null}
                </td>
                {open ? (
                  <td className="num">
                    <button className="small danger" disabled={cancelState.fetching || o.status === "PENDING"} onClick={() => void onCancel(o.id)}>
                      Cancel
                    </button>
                  </td>
                ) : null}
              </tr>
            ))
          )}
        </tbody>
      </table>
    </div>
  );
}

export function TradesTable({ symbol }: { symbol?: string }) {
  const [{ data, fetching }, reload] = useFreshQuery(TradesQuery, { symbol: symbol ?? null });
  useReloadOnOrders(reload);
  const trades = data?.trades.edges.map((e) => e.node) ?? [];
  return (
    <div className="card flush" data-testid="fills">
      <table className="table">
        <thead>
          <tr>
            <th>Time</th>
            <th>Asset</th>
            <th>Side</th>
            <th className="num">Quantity</th>
            <th className="num">Price</th>
            <th className="num">Fee</th>
            <th>Liquidity</th>
          </tr>
        </thead>
        <tbody>
          {trades.length === 0 ? (
            <tr>
              <td colSpan={7} className="empty">
                {fetching && !data ? "Loading…" : "No fills yet."}
              </td>
            </tr>
          ) : (
            trades.map((t) => (
              <tr key={t.id} data-testid="fill-row">
                <td className="muted">{dateTime(t.createdAt)}</td>
                <td>{t.symbol}</td>
                <td className={t.side === "BUY" ? "up" : "down"}>{t.side.toLowerCase()}</td>
                <td className="num">{quantity(t.quantity)}</td>
                <td className="num">{money(t.price)}</td>
                <td className="num">{money(t.fee)}</td>
                <td className="muted">{t.liquidity.toLowerCase()}</td>
              </tr>
            ))
          )}
        </tbody>
      </table>
    </div>
  );
}

export function Orders() {
  return (
    <section>
      <header className="page-head">
        <h1>Orders</h1>
        <p className="muted">Open orders, fills as they happen, and what is done. Place orders from an asset's page.</p>
      </header>
      <h2>Open orders</h2>
      <OrdersTable open />
      <h2>Fills</h2>
      <TradesTable />
      <h2>History</h2>
      <OrdersTable open={false} />
    </section>
  );
}
