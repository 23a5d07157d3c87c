/**
 * The options of Netfront.connect and Netback.serve, checked before anything is set up: a bad
 * value is a NetError BAD_ARGUMENT naming the option and the value, thrown before a grant is
 * taken or a xenstore node written, never a RangeError from deep inside or a timeout later.
 */
import { availableParallelism } from "node:os";
import type { Logger } from "pino";
import type { Platform } from "../platform/types.ts";
import { NetError } from "./errors.ts";

export const DEFAULT_TIMEOUT_MS = 10_000;
/** setTimeout's limit; a longer delay would fire at once. */
const MAX_TIMEOUT_MS = 0x7fff_ffff;
/** A worker that spins longer than this is a busy loop, not a wait. */
export const MAX_SPIN_MICROS = 10_000;
/** Highest domain id; DOMID_FIRST_RESERVED (0x7ff0) and above are not domains. */
export const DOMID_MAX = 0x7fef;
/** Device ids are xenstore directory names written by the toolstack as C ints. */
const DEVID_MAX = 0x7fff_ffff;
const MAX_QUEUE_BYTES = 1 << 30;

/** What both ends take. */
export interface CheckedOptions {
  platform: Platform | undefined;
  devid: number;
  logger: Logger | undefined;
  timeoutMs: number;
  queueBytes: number | undefined;
  spinMicros: number;
  reconnect: boolean;
  /** Use split event channels when the peer allows them (false: one channel for both rings). */
  splitEventChannels: boolean;
  /** Offer scatter-gather (feature-sg): receive packets of several slots. */
  scatterGather: boolean;
  /** Offer GSO (feature-gso-tcpv4/v6) and send GSO packets to a peer that offers it. */
  gso: boolean;
  /** Aborts the connect (or serve) while it is in progress; no effect once it resolved. */
  signal: AbortSignal | undefined;
}

export function bad(name: string, v: unknown, want: string): NetError {
  return new NetError("BAD_ARGUMENT", `option ${name} must be ${want}, got ${show(v)}`);
}

function show(v: unknown): string {
  try {
    if (typeof v === "string") return JSON.stringify(v);
    if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean" || v === null || v === undefined) return String(v);
    return typeof v === "function" ? "a function" : "an object";
  } catch {
    return "a value that cannot be shown";
  }
}

function integer(o: Record<string, unknown>, name: string, min: number, max: number, dflt?: number): number {
  const v = o[name];
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw bad(name, v, `an integer in ${min}..${max}`);
  return v;
}

function number(o: Record<string, unknown>, name: string, min: number, max: number, dflt: number): number {
  const v = o[name];
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !(v >= min && v <= max)) throw bad(name, v, `a number in ${min}..${max}`);
  return v;
}

function boolean(o: Record<string, unknown>, name: string, dflt: boolean): boolean {
  const v = o[name];
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") throw bad(name, v, "true or false");
  return v;
}

function logger(v: unknown): Logger | undefined {
  if (v === undefined) return undefined;
  const l = v as Record<string, unknown> | null;
  const methods = ["child", "error", "warn", "info", "debug"];
  if (l === null || typeof l !== "object" || methods.some((m) => typeof l[m] !== "function")) {
    throw bad("logger", v, `a pino Logger (an object with ${methods.join(", ")})`);
  }
  return v as Logger;
}

function platform(v: unknown): Platform | undefined {
  if (v === undefined) return undefined;
  const p = v as Record<string, unknown> | null;
  if (
    p === null ||
    typeof p !== "object" ||
    (p.kind !== "sim" && p.kind !== "xen") ||
    typeof p.domid !== "number" ||
    typeof p.openEventChannels !== "function" ||
    typeof p.gnttab !== "object" ||
    typeof p.xenstore !== "object"
  ) {
    throw bad("platform", v, "a Platform (SimHypervisor.platform(domid), or createXenPlatform())");
  }
  return v as Platform;
}

function signal(v: unknown): AbortSignal | undefined {
  if (v === undefined) return undefined;
  if (!(v instanceof AbortSignal)) throw bad("signal", v, "an AbortSignal");
  return v;
}

function record(v: unknown, what: string): Record<string, unknown> {
  if (v === undefined) return {};
  if (v === null || typeof v !== "object") throw new NetError("BAD_ARGUMENT", `${what} takes an options object, got ${show(v)}`);
  return v as Record<string, unknown>;
}

function common(o: Record<string, unknown>, reconnectDefault: boolean): CheckedOptions {
  const queueBytes = o.queueBytes === undefined ? undefined : integer(o, "queueBytes", 1, MAX_QUEUE_BYTES);
  return {
    platform: platform(o.platform),
    devid: integer(o, "devid", 0, DEVID_MAX, 0),
    logger: logger(o.logger),
    timeoutMs: number(o, "timeoutMs", 1, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS),
    queueBytes,
    spinMicros: number(o, "spinMicros", 0, MAX_SPIN_MICROS, 0),
    reconnect: boolean(o, "reconnect", reconnectDefault),
    splitEventChannels: boolean(o, "splitEventChannels", true),
    scatterGather: boolean(o, "scatterGather", true),
    gso: boolean(o, "gso", true),
    signal: signal(o.signal),
  };
}

/** Most queues a device may use (the protocol allows more; Linux asks for 8 at most). */
export const MAX_QUEUES = 16;
/** Queues a back end offers by default: one per CPU, at most 8, as Linux netback does. */
export const DEFAULT_QUEUES = Math.max(1, Math.min(8, availableParallelism()));

export interface CheckedFrontOptions extends CheckedOptions {
  /** This domain's id on the default simulated hypervisor. */
  domid: number;
  awaitBackend: boolean;
  queues: number | undefined;
  dataPages: number;
}

/**
 * Pages a Netfront shares for frame data, per direction, over all its queues, by default: with
 * its two ring pages, 242 grants a vif, so four vifs fit in a domain's default gntalloc limit
 * of 1024 grants (Linux's xen-gntalloc `limit` parameter).
 */
export const DEFAULT_DATA_PAGES = 120;

export function checkFrontOptions(v: unknown): CheckedFrontOptions {
  const o = record(v, "Netfront.connect");
  return {
    ...common(o, true),
    domid: integer(o, "domid", 0, DOMID_MAX, 1),
    awaitBackend: boolean(o, "awaitBackend", true),
    queues: o.queues === undefined ? undefined : integer(o, "queues", 1, MAX_QUEUES),
    dataPages: integer(o, "dataPages", 16, 256 * MAX_QUEUES, DEFAULT_DATA_PAGES),
  };
}

export interface CheckedBackOptions extends CheckedOptions {
  frontendDomid: number;
  maxQueues: number | undefined;
}

export function checkBackOptions(v: unknown): CheckedBackOptions {
  if (v === undefined) throw new NetError("BAD_ARGUMENT", "Netback.serve needs options, at least { frontendDomid }");
  const o = record(v, "Netback.serve");
  return {
    ...common(o, false),
    frontendDomid: integer(o, "frontendDomid", 0, DOMID_MAX),
    maxQueues: o.maxQueues === undefined ? undefined : integer(o, "maxQueues", 1, MAX_QUEUES),
  };
}
