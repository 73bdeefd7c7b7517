import type { CombinedError } from "urql";
import { ApiError } from "./auth";

export type FieldErrors = Record<string, string>;

export type Problem = {
  /** A message for the form as a whole (or the first error). */
  message: string;
  code?: string;
  /** Messages by input field, from `extensions.field`. */
  fields: FieldErrors;
  extensions: Record<string, unknown>;
};

const WHY: Record<string, string> = {
  RATE_LIMITED: "Too many requests",
  ACCOUNT_LOCKED: "Too many failed attempts",
};

/** What went wrong, by field where the server named one. */
export function problem(error: CombinedError | ApiError | unknown): Problem | null {
  if (!error) return null;
  if (error instanceof ApiError) {
    const field = error.extensions.field as string | undefined;
    return {
      message: withRetry(error.message, error.code, error.extensions),
      code: error.code,
      fields: field ? { [field]: error.message } : {},
      extensions: error.extensions,
    };
  }
  const combined = error as CombinedError;
  if (combined.networkError && !combined.graphQLErrors?.length) {
    return { message: "The server cannot be reached. Check the connection and try again.", fields: {}, extensions: {} };
  }
  const fields: FieldErrors = {};
  for (const e of combined.graphQLErrors ?? []) {
    const field = e.extensions?.field;
    if (typeof field === "string") fields[field] = e.message;
  }
  const first = combined.graphQLErrors?.[0];
  const extensions = (first?.extensions ?? {}) as Record<string, unknown>;
  const code = extensions.code as string | undefined;
  return { message: withRetry(first?.message ?? combined.message, code, extensions), code, fields, extensions };
}

function withRetry(message: string, code: string | undefined, ext: Record<string, unknown>): string {
  const retry = ext.retryAfter;
  if (code && WHY[code] && typeof retry === "number") return `${message} (try again in ${Math.ceil(retry)} s)`;
  return message;
}
