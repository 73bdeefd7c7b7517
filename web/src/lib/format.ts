const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const usdSmall = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumSignificantDigits: 6 });
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 });

type Num = string | number | null | undefined;

export function num(value: Num): number | null {
  if (value === null || value === undefined || value === "") return null;
  const n = typeof value === "number" ? value : Number(value);
  return Number.isFinite(n) ? n : null;
}

/** USD: cents above 1 USD, significant digits below (DOGE at 0.1234). */
export function money(value: Num): string {
  const n = num(value);
  if (n === null) return "—";
  return Math.abs(n) >= 1 || n === 0 ? usd.format(n) : usdSmall.format(n);
}

export function signedMoney(value: Num): string {
  const n = num(value);
  if (n === null) return "—";
  return (n > 0 ? "+" : "") + money(n);
}

export function percent(value: Num): string {
  const n = num(value);
  if (n === null) return "—";
  return `${n > 0 ? "+" : ""}${n.toFixed(2)} %`;
}

export function quantity(value: Num): string {
  const n = num(value);
  if (n === null) return "—";
  return n.toLocaleString("en-US", { maximumFractionDigits: 8 });
}

export function compactNumber(value: Num): string {
  const n = num(value);
  return n === null ? "—" : compact.format(n);
}

/** "up", "down" or "" for colouring a signed figure. */
export function trend(value: Num): "up" | "down" | "" {
  const n = num(value);
  if (!n) return "";
  return n > 0 ? "up" : "down";
}

export function dateTime(value: string | null | undefined): string {
  if (!value) return "—";
  return new Date(value).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" });
}

export function ago(value: string | null | undefined, now = Date.now()): string {
  if (!value) return "never";
  const seconds = Math.max(0, Math.round((now - Date.parse(value)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** A client order id: unique per order, so a retried placement is not doubled. */
export function newClientOrderId(): string {
  return `web-${crypto.randomUUID()}`;
}
