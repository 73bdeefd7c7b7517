import { link } from "../api/client";
import { Store, useStore } from "../lib/store";

/** Says plainly when live data stopped, and that it comes back by itself. */
export function ConnectionBanner() {
  const state = useStore(link);
  if (state.status !== "down") return null;
  return (
    <div className="banner" role="alert" data-testid="connection-down">
      <strong>Connection lost.</strong> Live prices and order updates are paused ({state.reason ?? "server unreachable"}).
      Reconnecting{state.attempts > 1 ? ` (attempt ${state.attempts})` : ""}…
    </div>
  );
}

export function LiveDot() {
  const { status } = useStore(link);
  const label = status === "connected" ? "Live" : status === "connecting" ? "Connecting" : "Offline";
  return (
    <span className={`live-dot ${status}`} data-testid="live-status" data-status={status}>
      {label}
    </span>
  );
}

export type Toast = { id: number; title: string; body: string; kind: "info" | "good" | "bad" };
export const toasts = new Store<Toast[]>([]);
let nextId = 1;

export function toast(title: string, body: string, kind: Toast["kind"] = "info"): void {
  const id = nextId++;
  toasts.update((all) => [...all.slice(-4), { id, title, body, kind }]);
  setTimeout(() => toasts.update((all) => all.filter((t) => t.id !== id)), 8000);
}

export function Toasts() {
  const all = useStore(toasts);
  return (
    <div className="toasts" aria-live="polite">
      {all.map((t) => (
        <div key={t.id} className={`toast ${t.kind}`} data-testid="toast">
          <strong>{t.title}</strong>
          <span>{t.body}</span>
          <button className="link" onClick={() => toasts.update((a) => a.filter((x) => x.id !== t.id))} aria-label="Dismiss">
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
