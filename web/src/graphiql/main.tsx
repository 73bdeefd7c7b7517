/**
 * Self-hosted GraphiQL with the Explorer plugin: no CDN, no inline script. Headers
 * typed in the headers editor go with every HTTP request and, for subscriptions,
 * into the WebSocket's `connection_init` payload (the API reads `Authorization` or
 * `X-API-Key` there). Where introspection is refused to anonymous callers
 * (production), the page asks for a sign-in or an API key with `schema:read` first.
 */
import "graphiql/setup-workers/vite";
import "graphiql/style.css";
import "@graphiql/plugin-explorer/style.css";
import "./graphiql.css";
import { explorerPlugin } from "@graphiql/plugin-explorer";
import { createGraphiQLFetcher } from "@graphiql/toolkit";
import { GraphiQL } from "graphiql";
import { type FormEvent, StrictMode, useEffect, useMemo, useState } from "react";
import { createRoot } from "react-dom/client";

type Headers = Record<string, string>;

const HEADERS_KEY = "graphiql:headers";
const PROBE = "query IntrospectionProbe { __schema { queryType { name } } }";

const DEFAULT_QUERY = `# CryptoVault API. Ctrl-Enter runs the operation; the Explorer (left) builds one.
# Signed in? Your credential is in the Headers tab below, and subscriptions send it too.

query Markets {
  prices(symbols: ["BTC", "ETH"]) {
    symbol
    price
    changePercent24h
  }
}

# subscription LivePrices {
#   prices(symbols: ["BTC"]) { symbol price timestamp }
# }
`;

const params = new URLSearchParams(window.location.search);

function storedHeaders(): Headers {
  try {
    const parsed: unknown = JSON.parse(localStorage.getItem(HEADERS_KEY) ?? "{}");
    return parsed && typeof parsed === "object" ? (parsed as Headers) : {};
  } catch {
    return {};
  }
}

type GqlError = { message: string; extensions?: { code?: string; reason?: string } };

async function call(query: string, variables: object, headers: Headers): Promise<{ data?: Record<string, unknown>; errors?: GqlError[] }> {
  const response = await fetch("/graphql", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", accept: "application/json", ...headers },
    body: JSON.stringify({ query, variables }),
  });
  return response.json();
}

/** null: introspection is allowed with these headers; else why not. */
async function refusal(headers: Headers): Promise<string | null> {
  try {
    if (Object.keys(headers).some((h) => ["authorization", "x-api-key"].includes(h.toLowerCase()))) {
      // A kept credential may have expired since: better a sign-in than errors later.
      const who = await call("query CredentialProbe { viewer { id } }", {}, headers);
      if (who.errors?.[0]?.extensions?.code === "UNAUTHENTICATED") {
        return "Your credential was refused (expired or revoked). Sign in again.";
      }
    }
    const body = await call(PROBE, {}, headers);
    const error = body.errors?.[0];
    if (!error) return null;
    const code = error.extensions?.code;
    if (code === "UNAUTHENTICATED") return "Your credential was refused (expired or revoked). Sign in again.";
    if (code === "FORBIDDEN") return "Exploring the schema here needs a signed-in user, or an API key with the schema:read scope.";
    return null; // anything else is for GraphiQL to show
  } catch {
    return "The API cannot be reached.";
  }
}

function SignIn({ why, onCredential }: { why: string; onCredential: (headers: Headers) => void }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [otp, setOtp] = useState("");
  const [needsOtp, setNeedsOtp] = useState(false);
  const [apiKey, setApiKey] = useState("");
  const [error, setError] = useState<string | null>(null);

  const useToken = async (token: string) => onCredential({ Authorization: `Bearer ${token}` });

  const signIn = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    const body = await call(
      "mutation GraphiQLLogin($input: LoginInput!) { login(input: $input) { accessToken } }",
      { input: { email, password, otp: needsOtp ? otp : null } },
      {},
    );
    const e = body.errors?.[0];
    if (e?.extensions?.code === "TWO_FACTOR_REQUIRED") return setNeedsOtp(true);
    if (e) return setError(e.message);
    await useToken((body.data?.login as { accessToken: string }).accessToken);
  };

  const useSession = async () => {
    setError(null);
    // The app's refresh cookie; the same lock as the app, so the two never spend it twice.
    const refresh = () =>
      call("mutation GraphiQLRefresh { refreshToken { accessToken } }", {}, { "X-CSRF-Protection": "1" });
    const body = navigator.locks ? await navigator.locks.request("cryptovault-refresh", refresh) : await refresh();
    if (body.errors?.length) return setError("No signed-in session in this browser: sign in below.");
    await useToken((body.data?.refreshToken as { accessToken: string }).accessToken);
  };

  return (
    <div className="cv-signin" data-testid="graphiql-signin">
      <form onSubmit={signIn}>
        <h1>CryptoVault API explorer</h1>
        <p>{why}</p>
        <button type="button" className="secondary" onClick={() => void useSession()}>
          Use my CryptoVault session
        </button>
        <hr />
        <label>
          Email
          <input type="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} />
        </label>
        <label>
          Password
          <input type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} />
        </label>
        {needsOtp ? (
          <label>
            Two-factor code
            <input inputMode="numeric" autoComplete="one-time-code" value={otp} onChange={(e) => setOtp(e.target.value)} />
          </label>
        ) : null}
        <button type="submit">Sign in</button>
        <hr />
        <label>
          Or an API key (schema:read)
          <input value={apiKey} onChange={(e) => setApiKey(e.target.value)} placeholder="cvk_…" />
        </label>
        <button type="button" className="secondary" disabled={!apiKey.trim()} onClick={() => onCredential({ "X-API-Key": apiKey.trim() })}>
          Use this key
        </button>
        {error ? <p className="error">{error}</p> : null}
        <p>
          <a href="/">Back to the app</a>
        </p>
      </form>
    </div>
  );
}

function Explorer({ headers, onSignIn }: { headers: Headers | null; onSignIn: () => void }) {
  const fetcher = useMemo(() => {
    const url = new URL("/graphql", window.location.href);
    const ws = new URL(url);
    ws.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return createGraphiQLFetcher({ url: url.toString(), subscriptionUrl: ws.toString() });
  }, []);
  const plugins = useMemo(() => [explorerPlugin()], []);
  const onEditQuery = (query: string) => {
    const next = new URLSearchParams(window.location.search);
    next.set("q", query);
    history.replaceState(null, "", `?${next.toString()}`);
  };
  return (
    <GraphiQL
      fetcher={fetcher}
      plugins={plugins}
      defaultQuery={DEFAULT_QUERY}
      initialQuery={params.get("q") ?? undefined}
      initialVariables={params.get("variables") ?? undefined}
      initialHeaders={headers ? JSON.stringify(headers, null, 2) : undefined}
      onEditQuery={onEditQuery}
      defaultEditorToolsVisibility
      isHeadersEditorEnabled
      shouldPersistHeaders
      inputValueDeprecation
    >
      <GraphiQL.Logo>
        <span className="cv-logo">
          <a href="/">CryptoVault</a> API ·{" "}
          <button type="button" className="graphiql-un-styled" onClick={onSignIn}>
            sign in
          </button>
        </span>
      </GraphiQL.Logo>
    </GraphiQL>
  );
}

function Page() {
  const [state, setState] = useState<{ phase: "probing" } | { phase: "signin"; why: string } | { phase: "ready"; headers: Headers | null }>({
    phase: "probing",
  });
  useEffect(() => {
    void refusal(storedHeaders()).then((why) => setState(why ? { phase: "signin", why } : { phase: "ready", headers: null }));
  }, []);
  const onCredential = (headers: Headers) => {
    localStorage.setItem(HEADERS_KEY, JSON.stringify(headers, null, 2));
    setState({ phase: "ready", headers });
  };
  if (state.phase === "probing") return <p className="cv-loading">Loading GraphiQL…</p>;
  if (state.phase === "signin") return <SignIn why={state.why} onCredential={onCredential} />;
  return <Explorer headers={state.headers} onSignIn={() => setState({ phase: "signin", why: "Sign in, or use an API key." })} />;
}

createRoot(document.getElementById("graphiql")!).render(
  <StrictMode>
    <Page />
  </StrictMode>,
);
