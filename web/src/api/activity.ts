/**
 * The signed-in user's live streams, mounted once: order updates (fills) and fired
 * price alerts. Each event bumps a version that pages showing orders, balances,
 * trades or alerts reload on, and shows a notification.
 */
import { graphql } from "../gql";
import { Store, useStore } from "../lib/store";
import { useLive } from "./hooks";
import { toast } from "../components/Status";
import { money, quantity } from "../lib/format";

const OrderUpdates = graphql(`
  subscription OrderUpdates {
    orderUpdates {
      id
      symbol
      side
      type
      status
      quantity
      filledQuantity
      averageFillPrice
      rejectReason
    }
  }
`);

const AlertsLive = graphql(`
  subscription AlertsLive {
    alerts {
      id
      symbol
      condition
      value
      triggeredAt
      triggeredPrice
    }
  }
`);

export const ordersVersion = new Store(0);
export const alertsVersion = new Store(0);
export const useOrdersVersion = () => useStore(ordersVersion);
export const useAlertsVersion = () => useStore(alertsVersion);

const CONDITION: Record<string, string> = { ABOVE: "rose to", BELOW: "fell to", PERCENT_CHANGE_24H: "moved" };

export function Activity({ signedIn }: { signedIn: boolean }): null {
  useLive(
    OrderUpdates,
    {},
    ({ orderUpdates: o }) => {
      ordersVersion.update((v) => v + 1);
      const what = `${o.side === "BUY" ? "Buy" : "Sell"} ${quantity(o.filledQuantity)} ${o.symbol}`;
      if (o.status === "FILLED") toast("Order filled", `${what} at ${money(o.averageFillPrice)}`, "good");
      else if (o.status === "PARTIALLY_FILLED") toast("Partly filled", `${what} so far at ${money(o.averageFillPrice)}`, "good");
      else if (o.status === "EXPIRED") toast("Order expired", `${o.symbol} ${o.type.toLowerCase()} order`, "info");
      else if (o.status === "CANCELED" && o.rejectReason) toast("Order canceled", o.rejectReason, "bad");
    },
    { pause: !signedIn },
  );
  useLive(
    AlertsLive,
    {},
    ({ alerts: a }) => {
      alertsVersion.update((v) => v + 1);
      const target = a.condition === "PERCENT_CHANGE_24H" ? `${a.value} % in 24 h` : money(a.value);
      toast(`Price alert: ${a.symbol}`, `${a.symbol} ${CONDITION[a.condition]} ${target} (last ${money(a.triggeredPrice)})`, "info");
    },
    { pause: !signedIn },
  );
  return null;
}
