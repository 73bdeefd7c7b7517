/**
 * The order ticket: market, limit, stop and stop-limit orders with a time in force.
 * Each placement carries a generated clientOrderId, kept when the request never got
 * an answer (sending it again cannot place a second order) and renewed after one.
 * The server's validation errors are shown next to the field they name.
 */
import { type FormEvent, useEffect, useState } from "react";
import { useMutation } from "urql";
import { problem, type Problem } from "../api/errors";
import { useFreshQuery } from "../api/hooks";
import { ordersVersion, useOrdersVersion } from "../api/activity";
import { useAsset, usePrice } from "../api/market";
import { Field, FormError } from "../components/Field";
import { graphql } from "../gql";
import type { OrderSide, OrderType, TimeInForce } from "../gql/graphql";
import { money, newClientOrderId, num, quantity as fmtQty } from "../lib/format";

export const PlaceOrder = graphql(`
  mutation PlaceOrder($input: PlaceOrderInput!) {
    placeOrder(input: $input) {
      id
      clientOrderId
      symbol
      side
      type
      status
      quantity
      filledQuantity
      averageFillPrice
      fees
      rejectReason
    }
  }
`);

export const Balances = graphql(`
  query Balances {
    account {
      balances {
        asset
        available
        held
        total
      }
    }
  }
`);

const TYPES: { value: OrderType; label: string }[] = [
  { value: "MARKET", label: "Market" },
  { value: "LIMIT", label: "Limit" },
  { value: "STOP", label: "Stop" },
  { value: "STOP_LIMIT", label: "Stop limit" },
];

const TIF: { value: TimeInForce; label: string }[] = [
  { value: "GTC", label: "Good till canceled" },
  { value: "IOC", label: "Immediate or cancel" },
  { value: "FOK", label: "Fill or kill" },
  { value: "GTD", label: "Good till date" },
];

export function OrderTicket({ symbol }: { symbol: string }) {
  const asset = useAsset(symbol);
  const tick = usePrice(symbol);
  const version = useOrdersVersion();
  const [{ data: balances }, reloadBalances] = useFreshQuery(Balances, {});
  useEffect(() => {
    if (version) reloadBalances();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [version]);
  const [side, setSide] = useState<OrderSide>("BUY");
  const [type, setType] = useState<OrderType>("LIMIT");
  const [qty, setQty] = useState("");
  const [limitPrice, setLimitPrice] = useState("");
  const [stopPrice, setStopPrice] = useState("");
  const [tif, setTif] = useState<TimeInForce>("GTC");
  const [expiresAt, setExpiresAt] = useState("");
  const [clientOrderId, setClientOrderId] = useState(newClientOrderId);
  const [error, setError] = useState<Problem | null>(null);
  const [placed, setPlaced] = useState<string | null>(null);
  const [{ fetching }, place] = useMutation(PlaceOrder);

  const needsLimit = type === "LIMIT" || type === "STOP_LIMIT";
  const needsStop = type === "STOP" || type === "STOP_LIMIT";
  const reference = needsLimit ? num(limitPrice) : needsStop ? num(stopPrice) : num(side === "BUY" ? tick?.ask : tick?.bid);
  const estimate = reference !== null && num(qty) !== null ? reference * (num(qty) ?? 0) : null;
  const usd = balances?.account.balances.find((b) => b.asset === "USD");
  const base = balances?.account.balances.find((b) => b.asset === symbol);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setPlaced(null);
    const result = await place({
      input: {
        symbol,
        side,
        type,
        quantity: qty.trim() || null,
        limitPrice: needsLimit ? limitPrice.trim() || null : null,
        stopPrice: needsStop ? stopPrice.trim() || null : null,
        timeInForce: tif,
        expiresAt: tif === "GTD" && expiresAt ? new Date(expiresAt).toISOString() : null,
        clientOrderId,
      },
    });
    if (result.error) {
      const p = problem(result.error);
      setError(p);
      // Answered: that id is used up. Unanswered (network): keep it for the retry.
      if (result.error.graphQLErrors.length) setClientOrderId(newClientOrderId());
      return;
    }
    const order = result.data?.placeOrder;
    if (!order) return;
    setClientOrderId(newClientOrderId());
    // Lists of orders, fills and balances load again (placement may not stream an
    // update of its own for an order that only rests).
    ordersVersion.update((v) => v + 1);
    const filled = num(order.filledQuantity) ? ` · ${fmtQty(order.filledQuantity)} filled at ${money(order.averageFillPrice)}` : "";
    setPlaced(`${order.side === "BUY" ? "Buy" : "Sell"} ${fmtQty(order.quantity)} ${order.symbol}: ${order.status.replace("_", " ").toLowerCase()}${filled}`);
  };

  const fields = error?.fields ?? {};
  const general = error && Object.keys(fields).length === 0 ? error.message : null;
  return (
    <form className="card ticket" onSubmit={submit} data-testid="order-ticket" noValidate>
      <div className="segmented" role="group" aria-label="Side">
        {(["BUY", "SELL"] as const).map((s) => (
          <button type="button" key={s} className={`${s.toLowerCase()} ${side === s ? "active" : ""}`} onClick={() => setSide(s)} aria-pressed={side === s}>
            {s === "BUY" ? `Buy ${symbol}` : `Sell ${symbol}`}
          </button>
        ))}
      </div>
      <div className="tabs small" role="tablist" aria-label="Order type">
        {TYPES.map((t) => (
          <button type="button" role="tab" key={t.value} aria-selected={type === t.value} className={type === t.value ? "active" : ""} onClick={() => setType(t.value)}>
            {t.label}
          </button>
        ))}
      </div>
      <Field label={`Quantity (${symbol})`} error={fields.quantity ?? fields.quoteQuantity} id="quantity" hint={asset ? `Step ${asset.quantityIncrement}, minimum ${asset.minSize}` : undefined}>
        <input name="quantity" inputMode="decimal" autoComplete="off" value={qty} onChange={(e) => setQty(e.target.value)} placeholder="0.00" />
      </Field>
      {needsStop ? (
        <Field label="Stop price (USD)" error={fields.stopPrice} id="stopPrice" hint="Triggers when the last price reaches it">
          <input name="stopPrice" inputMode="decimal" autoComplete="off" value={stopPrice} onChange={(e) => setStopPrice(e.target.value)} placeholder={tick ? tick.price : ""} />
        </Field>
      ) : null}
      {needsLimit ? (
        <Field label="Limit price (USD)" error={fields.limitPrice} id="limitPrice" hint={asset ? `Tick ${asset.priceIncrement}` : undefined}>
          <input name="limitPrice" inputMode="decimal" autoComplete="off" value={limitPrice} onChange={(e) => setLimitPrice(e.target.value)} placeholder={tick ? tick.price : ""} />
        </Field>
      ) : null}
      <Field label="Time in force" error={fields.timeInForce} id="timeInForce">
        <select name="timeInForce" value={tif} onChange={(e) => setTif(e.target.value as TimeInForce)}>
          {TIF.map((t) => (
            <option key={t.value} value={t.value}>
              {t.label} ({t.value})
            </option>
          ))}
        </select>
      </Field>
      {tif === "GTD" ? (
        <Field label="Expires at" error={fields.expiresAt} id="expiresAt">
          <input name="expiresAt" type="datetime-local" value={expiresAt} onChange={(e) => setExpiresAt(e.target.value)} />
        </Field>
      ) : null}
      <dl className="summary">
        <dt>{side === "BUY" ? "Ask" : "Bid"}</dt>
        <dd>{money(side === "BUY" ? tick?.ask : tick?.bid)}</dd>
        <dt>Estimated {side === "BUY" ? "cost" : "proceeds"}</dt>
        <dd data-testid="estimate">{estimate === null ? "—" : money(estimate)}</dd>
        <dt>Available</dt>
        <dd>{side === "BUY" ? money(usd?.available ?? "0") : `${fmtQty(base?.available ?? "0")} ${symbol}`}</dd>
      </dl>
      <FormError message={general ?? (fields.clientOrderId || fields.symbol ? error?.message : null)} />
      {placed ? (
        <div className="form-ok" role="status" data-testid="order-placed">
          {placed}
        </div>
      ) : null}
      <button className={`primary wide ${side.toLowerCase()}`} disabled={fetching} type="submit">
        {fetching ? "Placing…" : `${side === "BUY" ? "Buy" : "Sell"} ${symbol}`}
      </button>
      <p className="hint mono" title="Sent as clientOrderId: a retried placement returns the same order">
        Order id {clientOrderId.slice(0, 16)}…
      </p>
    </form>
  );
}
