/**
 * The xenstore wire protocol (Xen's io/xs_wire.h), as spoken on xenstored's unix socket and
 * through /dev/xen/xenbus: a 16-byte header {type, req_id, tx_id, len} (u32 each,
 * little-endian) and up to XENSTORE_PAYLOAD_MAX bytes of payload, usually NUL-terminated
 * strings. Pure code: building requests, splitting a byte stream into messages, parsing replies.
 *
 * Payloads, as libxenstore sends them and xenstored answers:
 *   READ, DIRECTORY, GET_PERMS, MKDIR, RM   `path\0`
 *   WRITE                                   `path\0value` (the value is NOT NUL-terminated)
 *   SET_PERMS                               `path\0perm\0perm\0...` (perm: access letter + domid, e.g. n0, r5)
 *   WATCH, UNWATCH                          `path\0token\0`
 *   TRANSACTION_START                       `\0`; the reply is the id in decimal, `17\0`
 *   TRANSACTION_END                         `T\0` commit, `F\0` abort (tx_id in the header)
 *   GET_DOMAIN_PATH                         `<domid>\0`; the reply `/local/domain/<domid>\0`
 * Replies carry the request's type and req_id: READ the value (no NUL), DIRECTORY and
 * GET_PERMS one NUL-terminated string per entry, the others `OK\0`. ERROR carries an errno
 * name (`EACCES\0`). WATCH_EVENT `path\0token\0` arrives unsolicited.
 */
import { ErrnoError } from "../../ffi/errno.ts";
import { PlatformError, type DomId, type Perm, type PermAccess } from "../types.ts";

/** enum xsd_sockmsg_type. */
export const XS = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
} as const;
export type XsType = (typeof XS)[keyof typeof XS];

const TYPE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(XS).map(([k, v]) => [v, k]));

/** The name of a message type (for errors and logs). */
export function xsTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `type ${type}`;
}

export const XS_HEADER_SIZE = 16;
export const XS_HEADER = { type: 0, reqId: 4, txId: 8, len: 12 } as const;
export const XENSTORE_PAYLOAD_MAX = 4096;
export const XENSTORE_ABS_PATH_MAX = 3072;
export const XENSTORE_REL_PATH_MAX = 2048;

export interface XsHeader {
  type: number;
  reqId: number;
  txId: number;
  len: number;
}

export interface XsMessage extends XsHeader {
  payload: Uint8Array;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

function u32(op: string, field: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new PlatformError("EINVAL", op, `${field} ${v} is not a u32`);
  return v;
}

export function encodeHeader(v: DataView, off: number, h: XsHeader): void {
  const op = "xenstore.encode";
  v.setUint32(off + XS_HEADER.type, u32(op, "type", h.type), true);
  v.setUint32(off + XS_HEADER.reqId, u32(op, "req_id", h.reqId), true);
  v.setUint32(off + XS_HEADER.txId, u32(op, "tx_id", h.txId), true);
  v.setUint32(off + XS_HEADER.len, u32(op, "len", h.len), true);
}

export function decodeHeader(v: DataView, off: number): XsHeader {
  return {
    type: v.getUint32(off + XS_HEADER.type, true),
    reqId: v.getUint32(off + XS_HEADER.reqId, true),
    txId: v.getUint32(off + XS_HEADER.txId, true),
    len: v.getUint32(off + XS_HEADER.len, true),
  };
}

/** One whole message: header + payload. E2BIG when the payload exceeds XENSTORE_PAYLOAD_MAX. */
export function encodeMessage(type: number, reqId: number, txId: number, payload: Uint8Array, op = "xenstore.encode"): Uint8Array {
  if (payload.byteLength > XENSTORE_PAYLOAD_MAX) {
    throw new PlatformError("E2BIG", op, `${xsTypeName(type)} payload of ${payload.byteLength} bytes exceeds ${XENSTORE_PAYLOAD_MAX}`);
  }
  const out = new Uint8Array(XS_HEADER_SIZE + payload.byteLength);
  encodeHeader(new DataView(out.buffer), 0, { type, reqId, txId, len: payload.byteLength });
  out.set(payload, XS_HEADER_SIZE);
  return out;
}

// ---------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------

function noNul(op: string, what: string, s: unknown): string {
  if (typeof s !== "string") throw new PlatformError("EINVAL", op, `${what} must be a string, got ${typeof s}`);
  if (s.includes("\0")) throw new PlatformError("EINVAL", op, `${what} contains NUL: ${JSON.stringify(s)}`);
  return s;
}

/** Concatenate strings as UTF-8, each followed by NUL unless `lastUnterminated` and last. */
function strings(parts: readonly string[], lastUnterminated = false): Uint8Array {
  const enc = parts.map((p) => utf8.encode(p));
  let n = 0;
  for (const e of enc) n += e.byteLength + 1;
  if (lastUnterminated && enc.length > 0) n--;
  const out = new Uint8Array(n);
  let at = 0;
  for (const e of enc) {
    out.set(e, at);
    at += e.byteLength + 1; // the NUL is the zero already there
  }
  return out;
}

/** `access letter` + domid, as xenstored writes a permission: n0, r5, w7, b3. */
export function formatPerm(op: string, p: Perm): string {
  const { domid, access } = p;
  if (!Number.isInteger(domid) || domid < 0 || domid > 0xffff) throw new PlatformError("EINVAL", op, `permission domid ${String(domid)}`);
  if (access !== "n" && access !== "r" && access !== "w" && access !== "b") {
    throw new PlatformError("EINVAL", op, `permission access ${String(access)} (n, r, w or b)`);
  }
  return `${access}${domid}`;
}

export function parsePerm(op: string, s: string): Perm {
  const m = /^([nrwb])(\d{1,5})$/.exec(s);
  const domid = m === null ? NaN : Number(m[2]);
  if (m === null || domid > 0xffff) throw new PlatformError("EINVAL", op, `malformed permission ${JSON.stringify(s)}`);
  return { access: m[1] as PermAccess, domid };
}

/** A request, by operation. */
export type XsRequest =
  | { type: typeof XS.READ | typeof XS.DIRECTORY | typeof XS.GET_PERMS | typeof XS.MKDIR | typeof XS.RM; path: string }
  | { type: typeof XS.WRITE; path: string; value: string }
  | { type: typeof XS.SET_PERMS; path: string; perms: readonly Perm[] }
  | { type: typeof XS.WATCH | typeof XS.UNWATCH; path: string; token: string }
  | { type: typeof XS.TRANSACTION_START }
  | { type: typeof XS.TRANSACTION_END; commit: boolean }
  | { type: typeof XS.GET_DOMAIN_PATH; domid: DomId };

/** The payload of a request (E2BIG beyond XENSTORE_PAYLOAD_MAX, EINVAL for a NUL inside a string). */
export function requestPayload(r: XsRequest, op = `xenstore.${xsTypeName(r.type).toLowerCase()}`): Uint8Array {
  let p: Uint8Array;
  switch (r.type) {
    case XS.READ:
    case XS.DIRECTORY:
    case XS.GET_PERMS:
    case XS.MKDIR:
    case XS.RM:
      p = strings([noNul(op, "path", r.path)]);
      break;
    case XS.WRITE:
      p = strings([noNul(op, "path", r.path), noNul(op, "value", r.value)], true);
      break;
    case XS.SET_PERMS:
      if (!Array.isArray(r.perms) || r.perms.length === 0) {
        throw new PlatformError("EINVAL", op, `${r.path}: need a non-empty permission list (the first entry names the owner)`);
      }
      p = strings([noNul(op, "path", r.path), ...r.perms.map((x) => formatPerm(op, x))]);
      break;
    case XS.WATCH:
    case XS.UNWATCH:
      p = strings([noNul(op, "path", r.path), noNul(op, "token", r.token)]);
      break;
    case XS.TRANSACTION_START:
      p = strings([""]);
      break;
    case XS.TRANSACTION_END:
      p = strings([r.commit ? "T" : "F"]);
      break;
    case XS.GET_DOMAIN_PATH:
      if (!Number.isInteger(r.domid) || r.domid < 0 || r.domid > 0xffff) throw new PlatformError("EINVAL", op, `domid ${r.domid}`);
      p = strings([String(r.domid)]);
      break;
  }
  if (p.byteLength > XENSTORE_PAYLOAD_MAX) {
    const what = "path" in r ? `${r.path.slice(0, 64)}${r.path.length > 64 ? "..." : ""}: ` : "";
    throw new PlatformError("E2BIG", op, `${what}request of ${p.byteLength} bytes exceeds the ${XENSTORE_PAYLOAD_MAX}-byte payload limit`);
  }
  return p;
}

/** A whole request message. */
export function encodeRequest(r: XsRequest, reqId: number, txId = 0, op?: string): Uint8Array {
  return encodeMessage(r.type, reqId, txId, requestPayload(r, op), op);
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

/** A reply holding one string: a READ value (no NUL) or `OK\0`, `17\0` (one trailing NUL dropped). */
export function parseString(payload: Uint8Array): string {
  const n = payload.byteLength > 0 && payload[payload.byteLength - 1] === 0 ? payload.byteLength - 1 : payload.byteLength;
  return fromUtf8.decode(payload.subarray(0, n));
}

/** NUL-terminated strings (DIRECTORY, GET_PERMS, WATCH_EVENT). An empty payload is no strings. */
export function parseStrings(payload: Uint8Array): string[] {
  if (payload.byteLength === 0) return [];
  const s = fromUtf8.decode(payload);
  const parts = s.split("\0");
  // A well-formed payload ends in NUL, which leaves one empty string after the split.
  if (parts[parts.length - 1] === "") parts.pop();
  return parts;
}

export function parsePerms(op: string, payload: Uint8Array): Perm[] {
  const p = parseStrings(payload).map((s) => parsePerm(op, s));
  if (p.length === 0) throw new PlatformError("EINVAL", op, "empty permission list in reply");
  return p;
}

/** WATCH_EVENT `path\0token\0`. */
export function parseWatchEvent(payload: Uint8Array): { path: string; token: string } {
  const parts = parseStrings(payload);
  const [path, token] = parts;
  if (parts.length !== 2 || path === undefined || token === undefined || payload[payload.byteLength - 1] !== 0) {
    throw new PlatformError("EINVAL", "xenstore.watch_event", `malformed watch event payload ${JSON.stringify(fromUtf8.decode(payload))}`);
  }
  return { path, token };
}

/** The errno name an ERROR reply carries (`EACCES\0` → "EACCES"). */
export function parseErrorName(payload: Uint8Array): string {
  const name = parseString(payload);
  return /^E[A-Z0-9]{1,15}$/.test(name) ? name : "EINVAL";
}

/** An ERROR reply as a PlatformError (an ErrnoError) for `op` on `detail` (usually the path). */
export function errorFromReply(op: string, detail: string, payload: Uint8Array): ErrnoError {
  const raw = parseString(payload);
  const name = parseErrorName(payload);
  return new ErrnoError(op, name, name === raw ? detail : `${detail}: xenstored answered ${JSON.stringify(raw)}`);
}

/** TRANSACTION_START's reply: the id as a decimal string. */
export function parseTransactionId(op: string, payload: Uint8Array): number {
  const s = parseString(payload);
  const id = /^\d{1,10}$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(id) || id <= 0 || id > 0xffff_ffff) throw new PlatformError("EINVAL", op, `bad transaction id ${JSON.stringify(s)}`);
  return id;
}

// ---------------------------------------------------------------------------------------
// Stream decoding
// ---------------------------------------------------------------------------------------

/**
 * Splits a byte stream into messages: chunks may hold part of a message or several. A header
 * announcing more than XENSTORE_PAYLOAD_MAX bytes breaks the stream (there is no way to find
 * the next message boundary): push() throws E2BIG then and on every later call.
 */
export class XsDecoder {
  private rest: Uint8Array = new Uint8Array(0);
  private broken: PlatformError | null = null;

  constructor(private readonly maxPayload = XENSTORE_PAYLOAD_MAX) {}

  /** Bytes held while waiting for the rest of a message. */
  get buffered(): number {
    return this.rest.byteLength;
  }

  push(chunk: Uint8Array): XsMessage[] {
    if (this.broken !== null) throw this.broken;
    let data = chunk;
    if (this.rest.byteLength > 0) {
      data = new Uint8Array(this.rest.byteLength + chunk.byteLength);
      data.set(this.rest);
      data.set(chunk, this.rest.byteLength);
    }
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const out: XsMessage[] = [];
    let off = 0;
    while (data.byteLength - off >= XS_HEADER_SIZE) {
      const h = decodeHeader(view, off);
      if (h.len > this.maxPayload) {
        this.broken = new PlatformError(
          "E2BIG",
          "xenstore.recv",
          `${xsTypeName(h.type)} (req_id ${h.reqId}) announces ${h.len} bytes of payload, more than ${this.maxPayload}: stream out of sync`,
        );
        this.rest = new Uint8Array(0);
        throw this.broken;
      }
      if (data.byteLength - off - XS_HEADER_SIZE < h.len) break;
      const start = off + XS_HEADER_SIZE;
      out.push({ ...h, payload: data.slice(start, start + h.len) });
      off = start + h.len;
    }
    this.rest = off === data.byteLength ? new Uint8Array(0) : data.slice(off);
    return out;
  }
}
