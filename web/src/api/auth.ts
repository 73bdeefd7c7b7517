/**
 * The signed-in session. The access token lives in memory only; the refresh token is
 * the server's HttpOnly `cryptovault_refresh` cookie, sent with `X-CSRF-Protection`.
 * A refresh token works once (reusing one revokes the session), so refreshes are
 * single-flight within the tab and serialized across tabs with a Web Lock.
 */
import { stringifyDocument } from "@urql/core";
import { graphql } from "../gql";
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { Store } from "../lib/store";

export const SessionFields = graphql(`
  fragment SessionFields on AuthPayload {
    accessToken
    expiresAt
    user {
      id
      email
      role
      twoFactorEnabled
      frozen
      frozenReason
    }
  }
`);

const RefreshCookie = graphql(`
  mutation RefreshCookie {
    refreshToken {
      ...SessionFields
    }
  }
`);

const Logout = graphql(`
  mutation Logout {
    logout
  }
`);

export type SessionUser = {
  id: string;
  email: string;
  role: "USER" | "ADMIN";
  twoFactorEnabled: boolean;
  frozen: boolean;
  frozenReason?: string | null;
};

export type Session = { accessToken: string; expiresAt: number; user: SessionUser };

type Payload = { accessToken: string; expiresAt: string; user: SessionUser };

/** null: signed out; undefined: not known yet (restoring from the cookie). */
export const session = new Store<Session | null | undefined>(undefined);

/** Refresh this long before the access token expires. */
const REFRESH_MARGIN_MS = 60_000;

let timer: ReturnType<typeof setTimeout> | undefined;
let inFlight: Promise<Session | null> | null = null;

export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** A plain POST outside urql (the refresh must not wait for the auth exchange). */
export async function post<D, V>(
  document: TypedDocumentNode<D, V>,
  variables: V,
  headers: Record<string, string> = {},
): Promise<D> {
  const response = await fetch("/graphql", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", accept: "application/json", ...headers },
    body: JSON.stringify({ query: stringifyDocument(document), variables }),
  });
  const body = (await response.json()) as {
    data?: D;
    errors?: { message: string; extensions?: Record<string, unknown> }[];
  };
  const error = body.errors?.[0];
  if (error || !body.data) {
    const ext = error?.extensions ?? {};
    throw new ApiError(error?.message ?? `HTTP ${response.status}`, ext.code as string, ext);
  }
  return body.data;
}

export function setSession(payload: Payload | null): Session | null {
  clearTimeout(timer);
  if (payload === null) {
    session.set(null);
    return null;
  }
  const next: Session = {
    accessToken: payload.accessToken,
    expiresAt: Date.parse(payload.expiresAt),
    user: payload.user,
  };
  session.set(next);
  const wait = Math.max(next.expiresAt - Date.now() - REFRESH_MARGIN_MS, 1_000);
  timer = setTimeout(() => void refresh(), wait);
  return next;
}

async function refreshNow(): Promise<Session | null> {
  try {
    const data = await post(RefreshCookie, {}, { "X-CSRF-Protection": "1" });
    return setSession(data.refreshToken as Payload);
  } catch (error) {
    if (error instanceof ApiError && error.code !== undefined && error.code !== "INTERNAL_SERVER_ERROR") {
      // The cookie is missing, spent, expired or revoked: signed out.
      return setSession(null);
    }
    // The server is unreachable: keep what we have and try again shortly.
    clearTimeout(timer);
    timer = setTimeout(() => void refresh(), 5_000);
    if (session.get() === undefined) session.set(null);
    return session.get() ?? null;
  }
}

/** New tokens from the refresh cookie; concurrent callers share one refresh. */
export function refresh(): Promise<Session | null> {
  if (inFlight) return inFlight;
  const before = session.get()?.accessToken;
  const run = async () => {
    const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
    if (!locks) return refreshNow();
    return locks.request("cryptovault-refresh", async () => {
      // Another tab may have refreshed meanwhile: the cookie is then new already,
      // and one more refresh with it is still a first use.
      const current = session.get();
      if (current && current.accessToken !== before && current.expiresAt - Date.now() > REFRESH_MARGIN_MS) {
        return current;
      }
      return refreshNow();
    });
  };
  inFlight = run().finally(() => {
    inFlight = null;
  });
  return inFlight;
}

/** The access token to send now, refreshed first when it is about to expire. */
export async function freshToken(): Promise<string | null> {
  const current = session.get();
  if (current === undefined) return (await restored)?.accessToken ?? null;
  if (current === null) return null;
  if (current.expiresAt - Date.now() < REFRESH_MARGIN_MS / 2) {
    return (await refresh())?.accessToken ?? null;
  }
  return current.accessToken;
}

export function expiresSoon(): boolean {
  const current = session.get();
  return !!current && current.expiresAt - Date.now() < REFRESH_MARGIN_MS / 2;
}

export async function signOut(): Promise<void> {
  const current = session.get();
  try {
    await post(Logout, {}, current ? { authorization: `Bearer ${current.accessToken}` } : { "X-CSRF-Protection": "1" });
  } catch {
    // Signed out locally either way; the server ends the session when it can.
  }
  setSession(null);
}

export function updateUser(user: Partial<SessionUser>): void {
  const current = session.get();
  if (current) session.set({ ...current, user: { ...current.user, ...user } });
}

/** On start-up: a session from the refresh cookie, if there is one. */
export const restored: Promise<Session | null> = refresh();
