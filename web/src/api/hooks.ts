import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { useEffect, useRef, useState } from "react";
import { type CombinedError, type OperationContext, useQuery } from "urql";
import { useStore } from "../lib/store";
import { client, link } from "./client";

const NETWORK: Partial<OperationContext> = { requestPolicy: "network-only" };

/**
 * A subscription that follows the connection: it is started again after the socket
 * was restarted or lost (a fatal close ends graphql-ws subscriptions).
 */
export function useLive<D, V extends Record<string, unknown>>(
  document: TypedDocumentNode<D, V>,
  variables: V,
  onData: (data: D) => void,
  options: { pause?: boolean; onError?: (error: CombinedError) => void } = {},
): void {
  const { epoch } = useStore(link);
  const handler = useRef(onData);
  handler.current = onData;
  const onError = useRef(options.onError);
  onError.current = options.onError;
  const key = JSON.stringify(variables);
  useEffect(() => {
    if (options.pause) return;
    const { unsubscribe } = client
      .subscription(document, JSON.parse(key) as V)
      .subscribe((result) => {
        if (result.data) handler.current(result.data);
        if (result.error) onError.current?.(result.error);
      });
    return unsubscribe;
  }, [document, key, epoch, options.pause]);
}

/** A query that loads again after a reconnection (events may have been missed). */
export function useFreshQuery<D, V extends Record<string, unknown>>(
  document: TypedDocumentNode<D, V>,
  variables: V,
  pause = false,
) {
  const { epoch } = useStore(link);
  const [result, reexecute] = useQuery({ query: document, variables, pause, requestPolicy: "cache-and-network" });
  const first = useRef(epoch);
  useEffect(() => {
    if (epoch !== first.current) reexecute(NETWORK);
  }, [epoch, reexecute]);
  return [result, () => reexecute(NETWORK)] as const;
}

/** Re-render every `ms` (relative times such as "3 s ago"). */
export function useNow(ms: number): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const id = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(id);
  }, [ms]);
  return now;
}
