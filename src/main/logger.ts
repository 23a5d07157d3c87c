/** Logging: pino. The default logs connection events and errors, never frames. */
import pino, { type Logger } from "pino";

let fallback: Logger | null = null;

/** The logger passed in, or the package default (level from BUN_XEN_NET_LOG, default "info"). */
export function loggerFor(given: Logger | undefined, bindings: Record<string, unknown>): Logger {
  if (given !== undefined) return given.child(bindings);
  fallback ??= pino({ name: "bun-xen-net", level: process.env.BUN_XEN_NET_LOG ?? "info" });
  return fallback.child(bindings);
}

export type { Logger };
