import { type FormEvent, useState } from "react";
import { useMutation } from "urql";
import { session, signOut, updateUser } from "../api/auth";
import { problem } from "../api/errors";
import { useFreshQuery, useNow } from "../api/hooks";
import { Field, FormError } from "../components/Field";
import { QrCode } from "../components/QrCode";
import { graphql } from "../gql";
import type { ApiKeyScope } from "../gql/graphql";
import { ago, dateTime } from "../lib/format";
import { navigate } from "../lib/router";
import { useStore } from "../lib/store";

const SessionsQuery = graphql(`
  query Sessions {
    sessions(first: 50) {
      edges {
        node {
          id
          createdAt
          lastUsedAt
          expiresAt
          ip
          userAgent
          current
        }
      }
    }
  }
`);

const RevokeSession = graphql(`
  mutation RevokeSession($id: ID!) {
    revokeSession(id: $id)
  }
`);

const RevokeOthers = graphql(`
  mutation RevokeOtherSessions {
    revokeOtherSessions
  }
`);

const EnableTwoFactor = graphql(`
  mutation EnableTwoFactor {
    enableTwoFactor {
      secret
      otpauthUri
      recoveryCodes
    }
  }
`);

const ConfirmTwoFactor = graphql(`
  mutation ConfirmTwoFactor($code: String!) {
    confirmTwoFactor(code: $code) {
      id
      twoFactorEnabled
    }
  }
`);

const DisableTwoFactor = graphql(`
  mutation DisableTwoFactor($code: String!) {
    disableTwoFactor(code: $code) {
      id
      twoFactorEnabled
    }
  }
`);

const ApiKeysQuery = graphql(`
  query ApiKeys {
    apiKeys(first: 50) {
      edges {
        node {
          id
          name
          prefix
          scopes
          createdAt
          lastUsedAt
        }
      }
    }
  }
`);

const CreateApiKey = graphql(`
  mutation CreateApiKey($name: String!, $scopes: [ApiKeyScope!]!) {
    createApiKey(name: $name, scopes: $scopes) {
      key
      apiKey {
        id
        prefix
      }
    }
  }
`);

const RevokeApiKey = graphql(`
  mutation RevokeApiKey($id: ID!) {
    revokeApiKey(id: $id) {
      id
      revokedAt
    }
  }
`);

const SCOPES: { value: ApiKeyScope; label: string }[] = [
  { value: "MARKET_READ", label: "market:read — prices and candles" },
  { value: "PORTFOLIO_READ", label: "portfolio:read — balances, orders, portfolio" },
  { value: "PORTFOLIO_WRITE", label: "portfolio:write — watchlist and alerts" },
  { value: "TRADE", label: "trade — place and cancel orders" },
  { value: "SCHEMA_READ", label: "schema:read — introspection (GraphiQL, codegen)" },
];

function Sessions() {
  const [{ data }, reload] = useFreshQuery(SessionsQuery, {});
  const [, revoke] = useMutation(RevokeSession);
  const [, revokeOthers] = useMutation(RevokeOthers);
  const now = useNow(10_000);
  const sessions = data?.sessions.edges.map((e) => e.node) ?? [];
  return (
    <div className="card flush" data-testid="sessions">
      <table className="table">
        <thead>
          <tr>
            <th>Device</th>
            <th>Address</th>
            <th>Signed in</th>
            <th>Last active</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {sessions.map((s) => (
            <tr key={s.id}>
              <td className="ua" title={s.userAgent ?? ""}>
                {s.current ? <span className="badge open">this device</span> : null} {s.userAgent ?? "unknown"}
              </td>
              <td className="mono">{s.ip ?? "—"}</td>
              <td className="muted">{dateTime(s.createdAt)}</td>
              <td className="muted">{ago(s.lastUsedAt, now)}</td>
              <td className="num">
                {s.current ? (
                  <button className="small" onClick={() => void signOut().then(() => navigate("/", true))}>
                    Sign out
                  </button>
                ) : (
                  <button className="small danger" onClick={() => void revoke({ id: s.id }).then(() => reload())}>
                    Sign out
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {sessions.length > 1 ? (
        <div className="card-foot">
          <button className="danger" onClick={() => void revokeOthers({}).then(() => reload())}>
            Sign out every other session
          </button>
        </div>
      ) : null}
    </div>
  );
}

function TwoFactor() {
  const user = useStore(session)?.user;
  const [setup, setSetup] = useState<{ secret: string; otpauthUri: string; recoveryCodes: string[] } | null>(null);
  const [code, setCode] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [, enable] = useMutation(EnableTwoFactor);
  const [, confirm] = useMutation(ConfirmTwoFactor);
  const [, disable] = useMutation(DisableTwoFactor);
  if (!user) return null;
  const start = async () => {
    setError(null);
    const r = await enable({});
    if (r.error) setError(problem(r.error)?.message ?? "Failed");
    else if (r.data) setSetup(r.data.enableTwoFactor);
  };
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    const r = user.twoFactorEnabled ? await disable({ code: code.trim() }) : await confirm({ code: code.trim() });
    if (r.error) {
      setError(problem(r.error)?.message ?? "Failed");
      return;
    }
    const enabled = r.data && "confirmTwoFactor" in r.data ? r.data.confirmTwoFactor.twoFactorEnabled : false;
    updateUser({ twoFactorEnabled: enabled });
    setSetup(null);
    setCode("");
  };
  return (
    <div className="card form" data-testid="two-factor">
      <p>
        Two-factor authentication is <strong>{user.twoFactorEnabled ? "on" : "off"}</strong>.{" "}
        {user.twoFactorEnabled ? "Sign-ins need a code from your authenticator app." : "Add a code from an authenticator app to every sign-in."}
      </p>
      {setup ? (
        <div className="setup">
          <p>Scan this code with your authenticator app (or type the key, or open the link on your phone), then enter the code it shows.</p>
          <QrCode text={setup.otpauthUri} label="QR code of the two-factor key for an authenticator app" />
          <code className="secret" data-testid="totp-secret">
            {setup.secret}
          </code>
          <p>
            <a href={setup.otpauthUri}>Open in authenticator app</a>
          </p>
          <p>Recovery codes: each signs you in once without the app. Store them now: they are not shown again.</p>
          <ul className="codes">
            {setup.recoveryCodes.map((c) => (
              <li key={c} className="mono">
                {c}
              </li>
            ))}
          </ul>
        </div>
      ) : null}
      {user.twoFactorEnabled || setup ? (
        <form className="inline" onSubmit={submit}>
          <Field label={user.twoFactorEnabled ? "Code or recovery code to turn it off" : "Code from the app"} id="code">
            <input value={code} onChange={(e) => setCode(e.target.value)} inputMode="numeric" autoComplete="one-time-code" />
          </Field>
          <button type="submit" className={user.twoFactorEnabled ? "danger" : "primary"}>
            {user.twoFactorEnabled ? "Turn off" : "Turn on"}
          </button>
        </form>
      ) : (
        <button className="primary" onClick={() => void start()}>
          Set up two-factor authentication
        </button>
      )}
      <FormError message={error} />
    </div>
  );
}

function ApiKeys() {
  const [{ data }, reload] = useFreshQuery(ApiKeysQuery, {});
  const [, create] = useMutation(CreateApiKey);
  const [, revoke] = useMutation(RevokeApiKey);
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<ApiKeyScope[]>(["MARKET_READ", "PORTFOLIO_READ"]);
  const [created, setCreated] = useState<string | null>(null);
  const [error, setError] = useState<ReturnType<typeof problem>>(null);
  const now = useNow(30_000);
  const keys = data?.apiKeys.edges.map((e) => e.node) ?? [];
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setCreated(null);
    const r = await create({ name: name.trim(), scopes });
    if (r.error) {
      setError(problem(r.error));
      return;
    }
    setCreated(r.data?.createApiKey.key ?? null);
    setName("");
    reload();
  };
  return (
    <div className="two-col">
      <form className="card form" onSubmit={submit} data-testid="api-key-form">
        <h3>New API key</h3>
        <Field label="Name" id="name" error={error?.fields.name}>
          <input value={name} onChange={(e) => setName(e.target.value)} placeholder="my trading bot" />
        </Field>
        <fieldset className="scopes">
          <legend>Scopes</legend>
          {SCOPES.map((s) => (
            <label key={s.value} className="check">
              <input
                type="checkbox"
                checked={scopes.includes(s.value)}
                onChange={(e) => setScopes(e.target.checked ? [...scopes, s.value] : scopes.filter((x) => x !== s.value))}
              />
              {s.label}
            </label>
          ))}
        </fieldset>
        <FormError message={error && !error.fields.name ? error.message : null} />
        {created ? (
          <div className="form-ok">
            Copy the key now, it is shown only once:
            <code className="secret" data-testid="new-api-key">
              {created}
            </code>
            Send it as the <code>X-API-Key</code> header.
          </div>
        ) : null}
        <button className="primary" type="submit" disabled={!name.trim() || scopes.length === 0}>
          Create key
        </button>
      </form>
      <div className="card flush" data-testid="api-keys">
        <table className="table">
          <thead>
            <tr>
              <th>Name</th>
              <th>Scopes</th>
              <th>Last used</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {keys.length === 0 ? (
              <tr>
                <td colSpan={4} className="empty">
                  No API keys.
                </td>
              </tr>
            ) : (
              keys.map((k) => (
                <tr key={k.id}>
                  <td>
                    {k.name} <div className="muted mono">{k.prefix}…</div>
                  </td>
                  <td>
                    {k.scopes.map((s) => (
                      <span key={s} className="badge">
                        {s.toLowerCase().replace("_", ":")}
                      </span>
                    ))}
                  </td>
                  <td className="muted">{ago(k.lastUsedAt, now)}</td>
                  <td className="num">
                    <button className="small danger" onClick={() => void revoke({ id: k.id }).then(() => reload())}>
                      Revoke
                    </button>
                  </td>
                </tr>
              ))
            )}
          </tbody>
        </table>
      </div>
    </div>
  );
}

export function Account() {
  const user = useStore(session)?.user;
  if (!user) return null;
  return (
    <section>
      <header className="page-head row spread">
        <div>
          <h1>Account</h1>
          <p className="muted">
            {user.email} · {user.role.toLowerCase()}
            {user.frozen ? ` · frozen: ${user.frozenReason ?? "no reason given"}` : ""}
          </p>
        </div>
        <button onClick={() => void signOut().then(() => navigate("/", true))} data-testid="sign-out">
          Sign out
        </button>
      </header>
      <h2>Two-factor authentication</h2>
      <TwoFactor />
      <h2>Sessions</h2>
      <Sessions />
      <h2>API keys</h2>
      <ApiKeys />
    </section>
  );
}
