import { useMutation, useQuery } from "urql";
import { session } from "../api/auth";
import { useAssets, usePrices, useSpark } from "../api/market";
import { Sparkline } from "../components/Sparkline";
import { graphql } from "../gql";
import { compactNumber, money, percent, trend } from "../lib/format";
import { Link, navigate } from "../lib/router";
import { useStore } from "../lib/store";

export const WatchlistQuery = graphql(`
  query Watchlist {
    watchlist {
      symbols
    }
  }
`);

export const AddToWatchlist = graphql(`
  mutation AddToWatchlist($symbol: String!) {
    addToWatchlist(symbol: $symbol) {
      symbols
    }
  }
`);

export const RemoveFromWatchlist = graphql(`
  mutation RemoveFromWatchlist($symbol: String!) {
    removeFromWatchlist(symbol: $symbol) {
      symbols
    }
  }
`);

/** The star of a watched asset (signed-in users). */
export function useWatchlist() {
  const signedIn = !!useStore(session);
  const [{ data }, reload] = useQuery({ query: WatchlistQuery, pause: !signedIn, requestPolicy: "cache-and-network" });
  const [, add] = useMutation(AddToWatchlist);
  const [, remove] = useMutation(RemoveFromWatchlist);
  const symbols = data?.watchlist.symbols ?? [];
  const toggle = async (symbol: string) => {
    await (symbols.includes(symbol) ? remove({ symbol }) : add({ symbol }));
    reload({ requestPolicy: "network-only" });
  };
  return { signedIn, symbols, toggle };
}

function Row({ symbol, name, watched, onStar, canStar }: { symbol: string; name: string; watched: boolean; onStar: () => void; canStar: boolean }) {
  const tick = usePrices()[symbol];
  const spark = useSpark(symbol);
  return (
    <tr className="clickable" onClick={() => navigate(`/markets/${symbol}`)} data-testid={`market-${symbol}`}>
      <td>
        {canStar ? (
          <button
            className={`star ${watched ? "on" : ""}`}
            aria-label={watched ? `Remove ${symbol} from watchlist` : `Add ${symbol} to watchlist`}
            onClick={(e) => {
              e.stopPropagation();
              onStar();
            }}
          >
            {watched ? "★" : "☆"}
          </button>
        ) : null}
      </td>
      <td>
        <Link to={`/markets/${symbol}`} className="asset-name" onClick={(e) => e.stopPropagation()}>
          <strong>{symbol}</strong> <span className="muted">{name}</span>
        </Link>
      </td>
      <td className={`num price flash-${tick?.direction ?? ""}`} data-testid={`price-${symbol}`}>
        {money(tick?.price)}
      </td>
      <td className={`num ${trend(tick?.changePercent24h)}`}>{percent(tick?.changePercent24h)}</td>
      <td className="num muted hide-narrow">{money(tick?.high24h)}</td>
      <td className="num muted hide-narrow">{money(tick?.low24h)}</td>
      <td className="num muted hide-narrow">{compactNumber(tick?.volume24h)}</td>
      <td className="spark-cell">
        <Sparkline points={spark} />
      </td>
    </tr>
  );
}

export function Markets() {
  const assets = useAssets();
  const { signedIn, symbols, toggle } = useWatchlist();
  const ordered = signedIn
    ? [...assets].sort((a, b) => Number(symbols.includes(b.symbol)) - Number(symbols.includes(a.symbol)))
    : assets;
  return (
    <section>
      <header className="page-head">
        <h1>Markets</h1>
        <p className="muted">Live prices in USD with their 24 h change and recent trend. Select an asset for its chart and to trade.</p>
      </header>
      <div className="card flush">
        <table className="table markets">
          <thead>
            <tr>
              <th aria-label="Watchlist" />
              <th>Asset</th>
              <th className="num">Price</th>
              <th className="num">24 h</th>
              <th className="num hide-narrow">24 h high</th>
              <th className="num hide-narrow">24 h low</th>
              <th className="num hide-narrow">Volume</th>
              <th>Trend</th>
            </tr>
          </thead>
          <tbody>
            {assets.length === 0 ? (
              <tr>
                <td colSpan={8} className="empty">Loading markets…</td>
              </tr>
            ) : (
              ordered.map((a) => (
                <Row key={a.symbol} symbol={a.symbol} name={a.name} watched={symbols.includes(a.symbol)} onStar={() => void toggle(a.symbol)} canStar={signedIn} />
              ))
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}
