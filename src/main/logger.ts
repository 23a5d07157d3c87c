/**
 * Logging: pino. A device logs connection events (info), what went wrong (warn, error), never
 * a line per frame. Pass your own pino logger as `logger` to get all of it, with your
 * destination and bindings. The package default is quiet, for a library inside someone else's
 * service: warnings and errors only, on stderr (stdout stays the application's), the level
 * from BUN_XEN_NET_LOG ("info" to see connection events, "silent" for none).
 */
import pino, { type Logger } from "pino";

let fallback: Logger | null = null;

/** The default level; BUN_XEN_NET_LOG overrides it. */
const DEFAULT_LEVEL = "warn";

/** The logger passed in (a child with `bindings`), or the package default. */
export function loggerFor(given: Logger | undefined, bindings: Record<string, unknown>): Logger {
  if (given !== undefined) return given.child(bindings);
  fallback ??= pino({ name: "bun-xen-net", level: levelFromEnv() }, pino.destination({ fd: 2, sync: true }));
  return fallback.child(bindings);
}

/** BUN_XEN_NET_LOG when it names a pino level; otherwise the default (a typo must not silence warnings). */
function levelFromEnv(): string {
  const v = process.env.BUN_XEN_NET_LOG;
  return v !== undefined && (v === "silent" || v in pino.levels.values) ? v : DEFAULT_LEVEL;
}

export type { Logger };
