/**
 * Market data shared by every page: the asset catalogue, the latest price of each
 * asset (one `prices` subscription for all of them) and a sparkline per asset (the
 * last 30 one-minute closes, extended by live ticks).
 */
import { useEffect } from "react";
import { graphql } from "../gql";
import type { PriceFieldsFragment } from "../gql/graphql";
import { Store, useStore } from "../lib/store";
import { client } from "./client";
import { useFreshQuery, useLive } from "./hooks";

export const PriceFields = graphql(`
  fragment PriceFields on Price {
    symbol
    price
    bid
    ask
    change24h
    changePercent24h
    high24h
    low24h
    volume24h
    timestamp
  }
`);

const AssetsQuery = graphql(`
  query Assets {
    assets {
      symbol
      name
      precision
      quantityIncrement
      priceIncrement
      minSize
      minNotional
      price {
        ...PriceFields
      }
    }
  }
`);

const PricesLive = graphql(`
  subscription PricesLive {
    prices {
      ...PriceFields
    }
  }
`);

const SparkQuery = graphql(`
  query Spark($symbol: String!) {
    candles(symbol: $symbol, interval: ONE_MINUTE, first: 30) {
      edges {
        node {
          openTime
          close
        }
      }
    }
  }
`);

export type Price = PriceFieldsFragment;
export type Asset = {
  symbol: string;
  name: string;
  precision: number;
  quantityIncrement: string;
  priceIncrement: string;
  minSize: string;
  minNotional: string;
};
export type Tick = Price & { direction: "up" | "down" | "" };
type SparkPoint = { minute: number; value: number };

export const assets = new Store<Asset[]>([]);
export const prices = new Store<Record<string, Tick>>({});
export const sparks = new Store<Record<string, SparkPoint[]>>({});
/** The ticks seen since the page opened: the sparkline until there are enough
 * one-minute candles (a freshly started server has none). */
const ticks = new Store<Record<string, SparkPoint[]>>({});
const MIN_MINUTES = 10;

function applyPrice(price: Price): void {
  prices.update((all) => {
    const before = all[price.symbol];
    const direction =
      before && Number(price.price) !== Number(before.price)
        ? Number(price.price) > Number(before.price)
          ? "up"
          : "down"
        : (before?.direction ?? "");
    return { ...all, [price.symbol]: { ...price, direction } };
  });
  ticks.update((all) => ({
    ...all,
    [price.symbol]: [...(all[price.symbol] ?? []), { minute: 0, value: Number(price.price) }].slice(-60),
  }));
  const minute = Math.floor(Date.parse(price.timestamp) / 60_000);
  sparks.update((all) => {
    const points = all[price.symbol];
    if (!points) return all;
    const last = points[points.length - 1];
    const next =
      last && last.minute === minute
        ? [...points.slice(0, -1), { minute, value: Number(price.price) }]
        : [...points, { minute, value: Number(price.price) }].slice(-30);
    return { ...all, [price.symbol]: next };
  });
}

async function loadSpark(symbol: string): Promise<void> {
  const result = await client.query(SparkQuery, { symbol }, { requestPolicy: "network-only" }).toPromise();
  const edges = result.data?.candles.edges ?? [];
  const points = edges
    .map((e) => ({ minute: Math.floor(Date.parse(e.node.openTime) / 60_000), value: Number(e.node.close) }))
    .reverse();
  sparks.update((all) => ({ ...all, [symbol]: points }));
}

/** Mounted once, at the top of the app. */
export function MarketFeed(): null {
  const [{ data }] = useFreshQuery(AssetsQuery, {});
  useEffect(() => {
    if (!data) return;
    assets.set(data.assets.map(({ price: _price, ...asset }) => asset));
    for (const asset of data.assets) if (asset.price) applyPrice(asset.price);
    for (const asset of data.assets) void loadSpark(asset.symbol);
  }, [data]);
  useLive(PricesLive, {}, (event) => applyPrice(event.prices));
  return null;
}

export function useAssets(): Asset[] {
  return useStore(assets);
}

export function useAsset(symbol: string): Asset | undefined {
  return useStore(assets).find((a) => a.symbol === symbol);
}

export function usePrices(): Record<string, Tick> {
  return useStore(prices);
}

export function usePrice(symbol: string): Tick | undefined {
  return useStore(prices)[symbol];
}

export function useSpark(symbol: string): SparkPoint[] {
  const minutes = useStore(sparks)[symbol] ?? [];
  const recent = useStore(ticks)[symbol] ?? [];
  return minutes.length >= MIN_MINUTES ? minutes : recent;
}
