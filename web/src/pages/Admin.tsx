import { type FormEvent, useEffect, useState } from "react";
import { useMutation, useQuery } from "urql";
import { problem } from "../api/errors";
import { useFreshQuery } from "../api/hooks";
import { FormError } from "../components/Field";
import { graphql } from "../gql";
import { dateTime } from "../lib/format";

const StatsQuery = graphql(`
  query AdminStats {
    stats {
      users
      activeUsers24h
      signups24h
      failedLogins24h
      rateLimitRejections24h
      websocketConnections
      activeSubscriptions
    }
    reconciliation {
      ok
      discrepancies
      checkedBalances
      checkedOrders
      trialBalance {
        asset
        total
      }
    }
  }
`);

const UsersQuery = graphql(`
  query AdminUsers($search: String, $after: String) {
    users(first: 25, search: $search, after: $after) {
      totalCount
      edges {
        node {
          id
          email
          role
          frozen
          frozenReason
          twoFactorEnabled
          createdAt
          lastLoginAt
        }
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
`);

const AuditQuery = graphql(`
  query AdminAudit($action: String, $userId: ID, $after: String) {
    auditLog(first: 30, action: $action, userId: $userId, after: $after) {
      edges {
        node {
          id
          at
          action
          actorId
          userId
          target
          ip
          details
        }
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
`);

const Freeze = graphql(`
  mutation FreezeUser($id: ID!, $reason: String!) {
    freezeUser(id: $id, reason: $reason) {
      id
      frozen
      frozenReason
    }
  }
`);

const Unfreeze = graphql(`
  mutation UnfreezeUser($id: ID!) {
    unfreezeUser(id: $id) {
      id
      frozen
      frozenReason
    }
  }
`);

const RevokeUserSessions = graphql(`
  mutation RevokeUserSessions($id: ID!) {
    revokeUserSessions(id: $id)
  }
`);

const STAT_LABELS: [string, string][] = [
  ["users", "Accounts"],
  ["activeUsers24h", "Active (24 h)"],
  ["signups24h", "Sign-ups (24 h)"],
  ["failedLogins24h", "Failed sign-ins (24 h)"],
  ["rateLimitRejections24h", "Rate-limited (24 h)"],
  ["websocketConnections", "Open sockets"],
  ["activeSubscriptions", "Subscriptions"],
];

function Overview() {
  const [{ data, error }, reload] = useFreshQuery(StatsQuery, {});
  if (error) return <FormError message={problem(error)?.message} />;
  if (!data) return <p className="muted">Loading…</p>;
  const stats = data.stats as unknown as Record<string, number>;
  const rec = data.reconciliation;
  return (
    <>
      <div className="kpis">
        {STAT_LABELS.map(([key, label]) => (
          <div className="kpi card" key={key}>
            <span className="label">{label}</span>
            <span className="big">{stats[key]}</span>
          </div>
        ))}
      </div>
      <h2>Reconciliation</h2>
      <div className={`card ${rec.ok ? "ok-card" : "bad-card"}`} data-testid="reconciliation">
        <div className="row spread">
          <p>
            <strong>{rec.ok ? "The books balance." : `${rec.discrepancies.length} discrepancies.`}</strong>{" "}
            <span className="muted">
              {rec.checkedBalances} balances and {rec.checkedOrders} orders checked.
            </span>
          </p>
          <button className="small" onClick={() => reload()}>
            Check again
          </button>
        </div>
        {rec.discrepancies.length ? (
          <ul className="mono">
            {rec.discrepancies.map((d) => (
              <li key={d}>{d}</li>
            ))}
          </ul>
        ) : null}
        <p className="muted small">
          Trial balance: {rec.trialBalance.map((t) => `${t.asset} ${t.total}`).join(" · ") || "no entries"}
        </p>
      </div>
    </>
  );
}

function Users({ onAudit, onChanged }: { onAudit: (userId: string) => void; onChanged: () => void }) {
  const [search, setSearch] = useState("");
  const [query, setQuery] = useState("");
  const [{ data }, reload] = useFreshQuery(UsersQuery, { search: query || null, after: null });
  const [, freeze] = useMutation(Freeze);
  const [, unfreeze] = useMutation(Unfreeze);
  const [, revoke] = useMutation(RevokeUserSessions);
  const [freezing, setFreezing] = useState<{ id: string; reason: string } | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const users = data?.users.edges.map((e) => e.node) ?? [];
  const submitFreeze = async (event: FormEvent) => {
    event.preventDefault();
    if (!freezing) return;
    const r = await freeze({ id: freezing.id, reason: freezing.reason.trim() || "no reason given" });
    setMessage(r.error ? (problem(r.error)?.message ?? "Failed") : null);
    setFreezing(null);
    reload();
    onChanged();
  };
  return (
    <div className="card flush">
      <form
        className="inline pad"
        onSubmit={(e) => {
          e.preventDefault();
          setQuery(search.trim());
        }}
      >
        <input value={search} onChange={(e) => setSearch(e.target.value)} placeholder="Search by email" aria-label="Search users" />
        <button type="submit">Search</button>
        <span className="muted">{data?.users.totalCount ?? 0} accounts</span>
      </form>
      <FormError message={message} />
      <table className="table" data-testid="users">
        <thead>
          <tr>
            <th>Email</th>
            <th>Role</th>
            <th>Status</th>
            <th>Created</th>
            <th>Last sign-in</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {users.map((u) => (
            <tr key={u.id}>
              <td>
                {u.email}
                <div className="muted mono small">{u.id}</div>
              </td>
              <td>{u.role.toLowerCase()}</td>
              <td>
                {u.frozen ? <span className="badge canceled" title={u.frozenReason ?? ""}>frozen</span> : <span className="badge open">active</span>}
                {u.twoFactorEnabled ? <span className="badge">2FA</span> : null}
              </td>
              <td className="muted">{dateTime(u.createdAt)}</td>
              <td className="muted">{dateTime(u.lastLoginAt)}</td>
              <td className="num actions">
                {freezing?.id === u.id ? (
                  <form className="inline" onSubmit={submitFreeze}>
                    <input autoFocus value={freezing.reason} placeholder="Reason" onChange={(e) => setFreezing({ id: u.id, reason: e.target.value })} />
                    <button className="small danger" type="submit">
                      Freeze
                    </button>
                    <button className="small" type="button" onClick={() => setFreezing(null)}>
                      Cancel
                    </button>
                  </form>
                ) : (
                  <>
                    {u.frozen ? (
                      <button className="small" onClick={() => void unfreeze({ id: u.id }).then(() => (reload(), onChanged()))}>
                        Unfreeze
                      </button>
                    ) : (
                      <button className="small danger" onClick={() => setFreezing({ id: u.id, reason: "" })}>
                        Freeze
                      </button>
                    )}
                    <button
                      className="small"
                      onClick={() =>
                        void revoke({ id: u.id }).then((r) => {
                          setMessage(r.error ? (problem(r.error)?.message ?? null) : `${r.data?.revokeUserSessions ?? 0} sessions signed out`);
                          onChanged();
                        })
                      }
                    >
                      Sign out everywhere
                    </button>
                    <button className="small" onClick={() => onAudit(u.id)}>
                      Audit
                    </button>
                  </>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Audit({ initialUser, version }: { initialUser: string; version: number }) {
  const [action, setAction] = useState("");
  const [user, setUser] = useState(initialUser);
  const [filter, setFilter] = useState({ action: "", userId: initialUser });
  const [after, setAfter] = useState<string | null>(null);
  const [{ data, fetching }, reexecute] = useQuery({
    query: AuditQuery,
    variables: { action: filter.action || null, userId: filter.userId || null, after },
    requestPolicy: "network-only",
  });
  useEffect(() => {
    if (version) reexecute({ requestPolicy: "network-only" });
  }, [version, reexecute]);
  const entries = data?.auditLog.edges.map((e) => e.node) ?? [];
  return (
    <div className="card flush" data-testid="audit-log">
      <form
        className="inline pad"
        onSubmit={(e) => {
          e.preventDefault();
          setAfter(null);
          setFilter({ action: action.trim(), userId: user.trim() });
        }}
      >
        <input value={action} onChange={(e) => setAction(e.target.value)} placeholder="Action, e.g. auth.login.failed" aria-label="Action" />
        <input value={user} onChange={(e) => setUser(e.target.value)} placeholder="User id" aria-label="User id" />
        <button type="submit">Filter</button>
      </form>
      <table className="table">
        <thead>
          <tr>
            <th>At</th>
            <th>Action</th>
            <th>User</th>
            <th>Target</th>
            <th>Address</th>
            <th>Details</th>
          </tr>
        </thead>
        <tbody>
          {entries.length === 0 ? (
            <tr>
              <td colSpan={6} className="empty">
                {fetching ? "Loading…" : "No entries."}
              </td>
            </tr>
          ) : (
            entries.map((a) => (
              <tr key={a.id}>
                <td className="muted">{dateTime(a.at)}</td>
                <td className="mono">{a.action}</td>
                <td className="mono small">{a.userId ?? "—"}</td>
                <td className="mono small">{a.target ?? ""}</td>
                <td className="mono">{a.ip ?? ""}</td>
                <td className="mono small details">{JSON.stringify(a.details)}</td>
              </tr>
            ))
          )}
        </tbody>
      </table>
      <div className="card-foot">
        {after ? (
          <button className="small" onClick={() => setAfter(null)}>
            Newest
          </button>
        ) : null}
        {data?.auditLog.pageInfo.hasNextPage ? (
          <button className="small" onClick={() => setAfter(data.auditLog.pageInfo.endCursor ?? null)}>
            Older
          </button>
        ) : null}
      </div>
    </div>
  );
}

export function Admin() {
  const [auditUser, setAuditUser] = useState("");
  // Bumped by every admin action: the audit log shows it at once.
  const [version, setVersion] = useState(0);
  return (
    <section>
      <header className="page-head">
        <h1>Administration</h1>
        <p className="muted">Figures, the books, accounts and the audit trail. Every action taken here is audited.</p>
      </header>
      <Overview />
      <h2>Accounts</h2>
      <Users onAudit={setAuditUser} onChanged={() => setVersion((v) => v + 1)} />
      <h2>Audit log</h2>
      <Audit initialUser={auditUser} key={auditUser} version={version} />
    </section>
  );
}
