import type { ReactNode } from "react";
import { Provider } from "urql";
import { Activity } from "./api/activity";
import { session, signOut } from "./api/auth";
import { client } from "./api/client";
import { MarketFeed } from "./api/market";
import { ConnectionBanner, LiveDot, Toasts } from "./components/Status";
import { Account } from "./pages/Account";
import { Admin } from "./pages/Admin";
import { Alerts } from "./pages/Alerts";
import { AssetPage } from "./pages/AssetPage";
import { Markets } from "./pages/Markets";
import { Orders } from "./pages/Orders";
import { Portfolio } from "./pages/Portfolio";
import { SignIn } from "./pages/SignIn";
import { Link, navigate, usePath } from "./lib/router";
import { useStore } from "./lib/store";

const NAV = [
  { to: "/", label: "Markets", match: (p: string) => p === "/" || p.startsWith("/markets") },
  { to: "/portfolio", label: "Portfolio", private: true },
  { to: "/orders", label: "Orders", private: true },
  { to: "/alerts", label: "Alerts", private: true },
];

function Header() {
  const path = usePath();
  const current = useStore(session);
  return (
    <header className="topbar">
      <Link to="/" className="brand">
        <span className="logo" aria-hidden="true" />
        CryptoVault
      </Link>
      <nav>
        {NAV.filter((n) => !n.private || current).map((n) => (
          <Link key={n.to} to={n.to} className={(n.match ? n.match(path) : path.startsWith(n.to)) ? "active" : ""}>
            {n.label}
          </Link>
        ))}
        {current?.user.role === "ADMIN" ? (
          <Link to="/admin" className={path.startsWith("/admin") ? "active" : ""}>
            Admin
          </Link>
        ) : null}
        <a href="/graphql">API</a>
      </nav>
      <div className="right">
        <LiveDot />
        {current ? (
          <>
            <Link to="/account" className={`user ${path.startsWith("/account") ? "active" : ""}`} data-testid="account-link">
              {current.user.email}
            </Link>
            <button className="small" onClick={() => void signOut().then(() => navigate("/", true))}>
              Sign out
            </button>
          </>
        ) : current === null ? (
          <>
            <Link to="/signin" className="button small">
              Sign in
            </Link>
            <Link to="/signup" className="button small primary">
              Create account
            </Link>
          </>
        ) : null}
      </div>
    </header>
  );
}

function Private({ children, path }: { children: ReactNode; path: string }) {
  const current = useStore(session);
  if (current === undefined) return <p className="muted page-head">Loading…</p>;
  if (current === null) {
    return (
      <section className="auth">
        <div className="card center">
          <p>Sign in to see this page.</p>
          <Link className="button primary" to={`/signin?next=${encodeURIComponent(path)}`}>
            Sign in
          </Link>
        </div>
      </section>
    );
  }
  return <>{children}</>;
}

function Page() {
  const path = usePath();
  const asset = /^\/markets\/([A-Za-z0-9]+)$/.exec(path);
  if (path === "/" || path === "/markets") return <Markets />;
  if (asset) return <AssetPage symbol={asset[1].toUpperCase()} key={asset[1]} />;
  if (path === "/signin") return <SignIn mode="signin" key="signin" />;
  if (path === "/signup") return <SignIn mode="signup" key="signup" />;
  const pages: Record<string, () => ReactNode> = {
    "/portfolio": () => <Portfolio />,
    "/orders": () => <Orders />,
    "/alerts": () => <Alerts />,
    "/account": () => <Account />,
    "/admin": () => <Admin />,
  };
  const page = pages[path];
  if (page) return <Private path={path}>{page()}</Private>;
  return (
    <section className="page-head">
      <h1>Not found</h1>
      <p>
        There is no page at <code>{path}</code>. <Link to="/">Back to the markets</Link>
      </p>
    </section>
  );
}

export function App() {
  const current = useStore(session);
  return (
    <Provider value={client}>
      <MarketFeed />
      <Activity signedIn={!!current} key={current?.user.id ?? "anonymous"} />
      <Header />
      <ConnectionBanner />
      <main>
        <Page />
      </main>
      <Toasts />
    </Provider>
  );
}
