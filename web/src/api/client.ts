/**
 * The GraphQL client: queries and mutations over HTTP, subscriptions over one
 * graphql-ws socket. The socket authenticates in `connection_init` with the current
 * access token and is restarted when the session changes, so private streams always
 * run under a live token. Its state is published for the "connection lost" banner.
 */
import { authExchange } from "@urql/exchange-auth";
import { createClient as createWsClient, type Client as WsClient } from "graphql-ws";
import { Client, cacheExchange, fetchExchange, subscriptionExchange } from "urql";
import { expiresSoon, freshToken, refresh, session, setSession } from "./auth";
import { Store } from "../lib/store";

export type LinkState = {
  status: "connecting" | "connected" | "down";
  /** Failed attempts since the socket was last up. */
  attempts: number;
  /** Bumped on every (re)connection after the first: pages reload what they show. */
  epoch: number;
  /** Why the socket is down, when known. */
  reason?: string;
};

export const link = new Store<LinkState>({ status: "connecting", attempts: 0, epoch: 0 });

let activeSocket: WebSocket | null = null;
let sentToken: string | null = null;
let restarting = false;
let everConnected = false;
/** connectionParams is running: it reads the session when it finishes. */
let authenticating = false;

const wsUrl = () => {
  const url = new URL("/graphql", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
};

function isCloseEvent(event: unknown): event is CloseEvent {
  return typeof event === "object" && event !== null && "code" in event;
}

export const ws: WsClient = createWsClient({
  url: wsUrl,
  lazy: false,
  // A close that is not retried (4403) is handled by shouldRetry below; the default
  // would log it to the console as an error.
  onNonLazyError: () => undefined,
  keepAlive: 10_000,
  retryAttempts: Number.POSITIVE_INFINITY,
  // A restart of ours reconnects at once; a lost server is tried again after 1 s,
  // 2 s, 4 s, then every 5 s (with jitter), for as long as it is away.
  retryWait: async (retries) => {
    if (restarting) return;
    const base = Math.min(1000 * 2 ** retries, 5000);
    await new Promise((resolve) => setTimeout(resolve, base + Math.random() * 500));
  },
  connectionParams: async () => {
    authenticating = true;
    try {
      sentToken = await freshToken();
    } finally {
      authenticating = false;
    }
    return sentToken ? { authorization: `Bearer ${sentToken}` } : {};
  },
  // 4403 means the token sent was refused (expired, revoked, signed out). Retrying
  // with the same one would be refused again (graphql-ws retries it by default):
  // retry only once a refresh has produced another token.
  shouldRetry: (event) => {
    if (isCloseEvent(event) && event.code === 4403) {
      void refresh().then((next) => {
        if (!next) setSession(null);
        restartSocket();
      });
      return false;
    }
    return true;
  },
  on: {
    connecting: () => link.update((s) => ({ ...s, status: s.status === "down" ? "down" : "connecting" })),
    opened: (socket) => {
      activeSocket = socket as WebSocket;
    },
    connected: () => {
      restarting = false;
      link.update((s) => ({
        status: "connected",
        attempts: 0,
        epoch: everConnected ? s.epoch + 1 : s.epoch,
      }));
      everConnected = true;
    },
    closed: (event) => {
      activeSocket = null;
      if (restarting) return;
      const code = isCloseEvent(event) ? event.code : 0;
      const reason = isCloseEvent(event) && event.reason ? event.reason : code ? `closed (${code})` : "unreachable";
      link.update((s) => ({ ...s, status: "down", attempts: s.attempts + 1, reason }));
    },
  },
});

/** Reconnect with the current credentials (after a sign-in, refresh or sign-out);
 * graphql-ws resubscribes every running subscription on the new socket. */
export function restartSocket(): void {
  const token = session.get()?.accessToken ?? null;
  if (authenticating || (token === sentToken && activeSocket)) return;
  if (activeSocket && activeSocket.readyState === WebSocket.OPEN) {
    restarting = true;
    link.update((s) => ({ ...s, status: "connecting" }));
    activeSocket.close(4205, "Client Restart");
  } else {
    // Closed after a fatal 4403: a new subscription (or this ping) connects again.
    link.update((s) => ({ ...s, epoch: s.epoch + 1 }));
  }
}

session.subscribe(() => {
  const current = session.get();
  if (current === undefined) return;
  if ((current?.accessToken ?? null) !== sentToken) restartSocket();
});

export const client = new Client({
  url: "/graphql",
  fetchOptions: { credentials: "same-origin", headers: { accept: "application/json" } },
  preferGetMethod: false,
  exchanges: [
    cacheExchange,
    authExchange(async (utils) => {
      return {
        addAuthToOperation(operation) {
          const token = session.get()?.accessToken;
          return token ? utils.appendHeaders(operation, { Authorization: `Bearer ${token}` }) : operation;
        },
        willAuthError: () => expiresSoon() || session.get() === undefined,
        didAuthError: (error) =>
          error.graphQLErrors.some(
            (e) => e.extensions?.code === "UNAUTHENTICATED" && e.extensions?.reason === "TOKEN_EXPIRED",
          ),
        async refreshAuth() {
          if (session.get() === undefined) await freshToken();
          else await refresh();
        },
      };
    }),
    fetchExchange,
    subscriptionExchange({
      forwardSubscription: (request) => ({
        subscribe: (sink) => ({
          unsubscribe: ws.subscribe({ ...request, query: request.query ?? "" }, sink),
        }),
      }),
    }),
  ],
});
