/**
 * The xenstore wire codec (src/platform/xen/xs-wire.ts) and XenStoreClient
 * (src/platform/xen/xenstore-client.ts), without Xen:
 *
 *  - codec: byte-exact requests of every type, the 4096-byte payload limit, reply parsing
 *    (strings, perms, watch events, ERROR → errno name), and the stream decoder fed the same
 *    bytes split at every position, byte by byte, and merged.
 *  - numbers: the message types, header layout, limits and xsd_errors[] come from Xen's
 *    xs_wire.h through test/c/uapi-check.c (compiled with gcc; skipped with a warning when
 *    gcc or the header is missing, a failure under CI=true).
 *  - client: against FakeXenstored below, an in-process xenstored that speaks the wire
 *    protocol strictly (it refuses a malformed payload with EINVAL, as xenstored does):
 *    a node tree, watches that fire on registration and on changes, optimistic transactions
 *    (EAGAIN on conflict), EACCES under /forbidden, and knobs to split, merge, reorder,
 *    delay or withhold its replies.
 *  - transports: the fd transport over a socketpair and the unix-socket transport over a
 *    Bun.listen socket, each with the fake on the other end; their errors without Xen.
 *  - device helpers' errors: /dev/xen/evtchn absent → ENOENT naming the path; EACCES
 *    from a real open() made as an unprivileged user.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { rejects } from "./helpers/errors.ts";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ERRNO, ErrnoError, errnoName, platformCode } from "../src/ffi/errno.ts";
import * as libc from "../src/ffi/libc.ts";
import { PlatformError, type Perm, type PlatformErrorCode } from "../src/platform/types.ts";
import { XenStoreClient, type XenStoreClientOptions, type XsTransport } from "../src/platform/xen/xenstore-client.ts";
import { connectXenstoredSocket, fdTransport, openXenbusDevice } from "../src/platform/xen/xenstore-transport.ts";
import { DEFAULT_XEN_DEVICES, createXenPlatform, openXenPlatform } from "../src/platform/xen/platform.ts";
import {
  XENSTORE_ABS_PATH_MAX,
  XENSTORE_PAYLOAD_MAX,
  XENSTORE_REL_PATH_MAX,
  XS,
  XS_HEADER,
  XS_HEADER_SIZE,
  XsDecoder,
  decodeHeader,
  encodeMessage,
  encodeRequest,
  errorFromReply,
  parseErrorName,
  parsePerms,
  parseString,
  parseStrings,
  parseTransactionId,
  parseWatchEvent,
  requestPayload,
  type XsMessage,
} from "../src/platform/xen/xs-wire.ts";

const te = new TextEncoder();
const td = new TextDecoder();

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += (b < 16 ? "0" : "") + b.toString(16);
  return s;
}

/** Hex of a header: four u32 little-endian. */
function hdr(type: number, reqId: number, txId: number, len: number): string {
  const dv = new DataView(new ArrayBuffer(16));
  [type, reqId, txId, len].forEach((v, i) => dv.setUint32(i * 4, v, true));
  return hex(new Uint8Array(dv.buffer));
}

/** Hex of a payload written with \0 escapes. */
function pl(s: string): string {
  return hex(te.encode(s));
}

function throwsSync(f: () => unknown): PlatformError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(PlatformError);
    return e as PlatformError;
  }
  throw new Error("did not throw");
}

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

/** A tiny deterministic PRNG (xorshift32) for the chunking fuzz. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

// ---------------------------------------------------------------------------------------
// FakeXenstored: an in-process xenstored speaking the wire protocol
// ---------------------------------------------------------------------------------------

type Chunking = "whole" | "bytes" | "merged" | "random";

interface FakeNode {
  value: string;
  perms: Perm[];
}

interface FakeTx {
  readonly id: number;
  readonly conn: FakeConn;
  readonly startGen: number;
  readonly tree: Map<string, FakeNode>;
  readonly changed: Set<string>;
  readonly removed: Set<string>;
}

class FakeConn {
  readonly decoder = new XsDecoder();
  readonly watches = new Map<string, string>(); // token → path
  closed = false;
  private outbox: Uint8Array[] = [];
  private scheduled = false;

  constructor(
    readonly server: FakeXenstored,
    private readonly send: (bytes: Uint8Array) => void,
    private readonly onClosed: () => void,
  ) {}

  /** Bytes from the client. */
  receive(chunk: Uint8Array): void {
    if (this.closed) return;
    for (const m of this.decoder.push(chunk)) this.server.handle(this, m);
  }

  /** Queue a message for the client; delivered later, as the fake's chunking says. */
  post(bytes: Uint8Array): void {
    if (this.closed) return;
    this.outbox.push(bytes);
    if (!this.scheduled) {
      this.scheduled = true;
      setTimeout(() => this.flush(), this.server.replyDelayMs);
    }
  }

  private flush(): void {
    this.scheduled = false;
    if (this.closed) return;
    let msgs = this.outbox.splice(0);
    if (this.server.reverseReplies) msgs = msgs.reverse();
    const all = concat(msgs);
    switch (this.server.chunking) {
      case "whole":
        for (const m of msgs) this.send(m);
        break;
      case "merged":
        this.send(all);
        break;
      case "bytes":
        for (let i = 0; i < all.length; i++) this.send(all.slice(i, i + 1));
        break;
      case "random": {
        const r = this.server.random;
        for (let i = 0; i < all.length; ) {
          const n = 1 + r(40);
          this.send(all.slice(i, i + n));
          i += n;
        }
        break;
      }
    }
  }

  /** The server ends the connection. */
  hangUp(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.drop(this);
    this.onClosed();
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

function parentOf(p: string): string {
  const i = p.lastIndexOf("/");
  return i <= 0 ? "/" : p.slice(0, i);
}

function isAtOrBelow(p: string, root: string): boolean {
  return root === "/" ? p.startsWith("/") : p === root || p.startsWith(`${root}/`);
}

class XsFail extends Error {
  constructor(readonly errno: string) {
    super(errno);
  }
}

class FakeXenstored {
  tree = new Map<string, FakeNode>([["/", { value: "", perms: [{ domid: 0, access: "n" }] }]]);
  gen = 0;
  readonly conns = new Set<FakeConn>();
  readonly txs = new Map<number, FakeTx>();
  private nextTx = 41;
  /** Every request received, decoded (for assertions on headers and payloads). */
  readonly log: XsMessage[] = [];
  // Knobs.
  chunking: Chunking = "whole";
  reverseReplies = false;
  replyDelayMs = 0;
  /** Requests of these types get no reply (a stuck xenstored). */
  readonly withhold = new Set<number>();
  /** Replies withheld, to release later. */
  readonly withheld: { conn: FakeConn; bytes: Uint8Array }[] = [];
  /** Send a WATCH's first event before its reply. */
  eventBeforeReply = false;
  random = rng(0x5eed);

  connect(send: (bytes: Uint8Array) => void, onClosed: () => void = () => {}): FakeConn {
    const c = new FakeConn(this, send, onClosed);
    this.conns.add(c);
    return c;
  }

  drop(c: FakeConn): void {
    this.conns.delete(c);
    for (const [id, t] of this.txs) if (t.conn === c) this.txs.delete(id);
  }

  /** A change made by someone else (another domain): bumps the generation, fires watches. */
  writeOutside(path: string, value: string): void {
    this.setNode(this.tree, path, value);
    this.gen++;
    this.fire(path, false);
  }

  releaseWithheld(): void {
    for (const w of this.withheld.splice(0)) w.conn.post(w.bytes);
  }

  handle(conn: FakeConn, m: XsMessage): void {
    this.log.push(m);
    let reply: Uint8Array;
    let after: (() => void) | null = null;
    try {
      const r = this.execute(conn, m);
      reply = encodeMessage(m.type, m.reqId, m.txId, r.payload);
      after = r.after ?? null;
    } catch (e) {
      if (!(e instanceof XsFail)) throw e;
      reply = encodeMessage(XS.ERROR, m.reqId, m.txId, te.encode(`${e.errno}\0`));
    }
    if (this.withhold.has(m.type)) {
      this.withheld.push({ conn, bytes: reply });
      return;
    }
    if (this.eventBeforeReply && after !== null) {
      after();
      after = null;
    }
    conn.post(reply);
    after?.();
  }

  // --- payload parsing, strict ---

  private strings(p: Uint8Array, n: number): string[] {
    const s = td.decode(p);
    if (!s.endsWith("\0")) throw new XsFail("EINVAL");
    const parts = s.slice(0, -1).split("\0");
    if (parts.length !== n) throw new XsFail("EINVAL");
    return parts;
  }

  private path(p: string): string {
    // A relative path is relative to the connection's domain home (all connections are dom0 here).
    if (/^[A-Za-z0-9_@-]/.test(p)) p = `/local/domain/0/${p}`;
    if (!p.startsWith("/") || (p.length > 1 && p.endsWith("/")) || p.includes("//")) throw new XsFail("EINVAL");
    if (isAtOrBelow(p, "/forbidden")) throw new XsFail("EACCES");
    return p;
  }

  private setNode(tree: Map<string, FakeNode>, path: string, value: string): void {
    const missing: string[] = [];
    for (let p = parentOf(path); !tree.has(p); p = parentOf(p)) missing.push(p);
    for (const p of missing.reverse()) tree.set(p, { value: "", perms: [{ domid: 0, access: "n" }] });
    const old = tree.get(path);
    tree.set(path, { value, perms: old?.perms ?? [{ domid: 0, access: "n" }] });
  }

  private execute(conn: FakeConn, m: XsMessage): { payload: Uint8Array; after?: () => void } {
    const ok = te.encode("OK\0");
    let tx: FakeTx | undefined;
    if (m.txId !== 0 && m.type !== XS.TRANSACTION_START) {
      tx = this.txs.get(m.txId);
      if (tx === undefined || tx.conn !== conn) throw new XsFail("ENOENT");
    }
    const tree = tx?.tree ?? this.tree;
    // A change outside a transaction fires now; inside one, at commit.
    const changed = (path: string, removed = false) => {
      if (tx !== undefined) {
        tx.changed.add(path);
        if (removed) tx.removed.add(path);
        return undefined;
      }
      this.gen++;
      return () => this.fire(path, removed);
    };
    switch (m.type) {
      case XS.READ: {
        const [p] = this.strings(m.payload, 1);
        const n = tree.get(this.path(p ?? ""));
        if (n === undefined) throw new XsFail("ENOENT");
        return { payload: te.encode(n.value) }; // no NUL: xenstored sends the bytes
      }
      case XS.WRITE: {
        const s = td.decode(m.payload);
        const nul = s.indexOf("\0");
        if (nul < 0) throw new XsFail("EINVAL");
        const path = this.path(s.slice(0, nul));
        this.setNode(tree, path, s.slice(nul + 1));
        const a = changed(path);
        return a === undefined ? { payload: ok } : { payload: ok, after: a };
      }
      case XS.MKDIR: {
        const [p] = this.strings(m.payload, 1);
        const path = this.path(p ?? "");
        if (tree.has(path)) return { payload: ok };
        this.setNode(tree, path, "");
        const a = changed(path);
        return a === undefined ? { payload: ok } : { payload: ok, after: a };
      }
      case XS.DIRECTORY: {
        const [p] = this.strings(m.payload, 1);
        const path = this.path(p ?? "");
        if (!tree.has(path)) throw new XsFail("ENOENT");
        const names = [...tree.keys()].filter((k) => k !== "/" && parentOf(k) === path).map((k) => k.slice(k.lastIndexOf("/") + 1));
        return { payload: te.encode(names.map((n) => `${n}\0`).join("")) };
      }
      case XS.RM: {
        const [p] = this.strings(m.payload, 1);
        const path = this.path(p ?? "");
        if (!tree.has(path)) throw new XsFail("ENOENT");
        for (const k of [...tree.keys()]) if (isAtOrBelow(k, path)) tree.delete(k);
        const a = changed(path, true);
        return a === undefined ? { payload: ok } : { payload: ok, after: a };
      }
      case XS.GET_PERMS: {
        const [p] = this.strings(m.payload, 1);
        const n = tree.get(this.path(p ?? ""));
        if (n === undefined) throw new XsFail("ENOENT");
        return { payload: te.encode(n.perms.map((x) => `${x.access}${x.domid}\0`).join("")) };
      }
      case XS.SET_PERMS: {
        const s = td.decode(m.payload);
        if (!s.endsWith("\0")) throw new XsFail("EINVAL");
        const [p, ...perms] = s.slice(0, -1).split("\0");
        const path = this.path(p ?? "");
        const n = tree.get(path);
        if (n === undefined) throw new XsFail("ENOENT");
        if (perms.length === 0 || !perms.every((x) => /^[nrwb]\d+$/.test(x))) throw new XsFail("EINVAL");
        n.perms = perms.map((x) => ({ access: x[0] as Perm["access"], domid: Number(x.slice(1)) }));
        const a = changed(path);
        return a === undefined ? { payload: ok } : { payload: ok, after: a };
      }
      case XS.WATCH: {
        const [p, token] = this.strings(m.payload, 2);
        const path = p ?? "";
        if (!path.startsWith("@")) this.path(path);
        if (conn.watches.has(token ?? "")) throw new XsFail("EEXIST");
        conn.watches.set(token ?? "", path);
        // Fires once on registration.
        return { payload: ok, after: () => conn.post(this.event(path, token ?? "")) };
      }
      case XS.UNWATCH: {
        const [, token] = this.strings(m.payload, 2);
        if (!conn.watches.delete(token ?? "")) throw new XsFail("ENOENT");
        return { payload: ok };
      }
      case XS.TRANSACTION_START: {
        if (hex(m.payload) !== "00") throw new XsFail("EINVAL");
        const id = this.nextTx++;
        this.txs.set(id, { id, conn, startGen: this.gen, tree: structuredClone(this.tree), changed: new Set(), removed: new Set() });
        return { payload: te.encode(`${id}\0`) };
      }
      case XS.TRANSACTION_END: {
        const [arg] = this.strings(m.payload, 1);
        if (arg !== "T" && arg !== "F") throw new XsFail("EINVAL");
        const t = tx; // looked up from the header's tx_id above
        if (t === undefined) throw new XsFail("ENOENT");
        this.txs.delete(t.id);
        if (arg === "F") return { payload: ok };
        if (this.gen !== t.startGen) throw new XsFail("EAGAIN");
        this.tree = t.tree;
        this.gen++;
        return { payload: ok, after: () => t.changed.forEach((p) => this.fire(p, t.removed.has(p))) };
      }
      case XS.GET_DOMAIN_PATH: {
        const [d] = this.strings(m.payload, 1);
        if (!/^\d+$/.test(d ?? "")) throw new XsFail("EINVAL");
        return { payload: te.encode(`/local/domain/${d}\0`) };
      }
      default:
        throw new XsFail("ENOSYS");
    }
  }

  private event(path: string, token: string): Uint8Array {
    return encodeMessage(XS.WATCH_EVENT, 0, 0, te.encode(`${path}\0${token}\0`));
  }

  /** Watches at or above `path` see it; on removal, watches below it see their own path go. */
  private fire(path: string, removed: boolean): void {
    for (const c of this.conns) {
      for (const [token, wpath] of c.watches) {
        if (isAtOrBelow(path, wpath)) c.post(this.event(path, token));
        else if (removed && isAtOrBelow(wpath, path)) c.post(this.event(wpath, token));
      }
    }
  }
}

/** An in-process transport to the fake: bytes cross asynchronously, as on a socket. */
function fakeTransport(fake: FakeXenstored): XsTransport & { conn: FakeConn; sent: Uint8Array[] } {
  let data: ((c: Uint8Array) => void) | null = null;
  const closers: ((reason?: unknown) => void)[] = [];
  let closed = false;
  const sent: Uint8Array[] = [];
  const conn = fake.connect(
    (bytes) => {
      if (!closed) data?.(bytes);
    },
    () => {
      closed = true;
      for (const c of closers.splice(0)) c("xenstored hung up");
    },
  );
  return {
    conn,
    sent,
    write(bytes) {
      if (closed) throw new PlatformError("ECLOSED", "fake.send", "closed");
      const copy = bytes.slice();
      sent.push(copy);
      queueMicrotask(() => conn.receive(copy));
    },
    onData: (cb) => {
      data = cb;
    },
    onClose: (cb) => {
      closers.push(cb);
    },
    close() {
      closed = true;
      conn.closed = true;
      fake.drop(conn);
    },
  };
}

const clients: XenStoreClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

function setup(opts: XenStoreClientOptions = {}) {
  const fake = new FakeXenstored();
  const connect = (o: XenStoreClientOptions = opts) => {
    const t = fakeTransport(fake);
    const c = new XenStoreClient(t, o);
    clients.push(c);
    return { client: c, transport: t };
  };
  const first = connect();
  return { fake, connect, xs: first.client, transport: first.transport };
}

function recorder() {
  const events: [string, string][] = [];
  return { events, cb: (p: string, t: string) => void events.push([p, t]) };
}

// ---------------------------------------------------------------------------------------
// The codec
// ---------------------------------------------------------------------------------------

describe("xs-wire: requests, byte-exact", () => {
  test("every request type: header {type, req_id, tx_id, len} then the payload libxenstore sends", () => {
    const cases: [Uint8Array, string][] = [
      [encodeRequest({ type: XS.READ, path: "/a/b" }, 7), hdr(2, 7, 0, 5) + pl("/a/b\0")],
      [encodeRequest({ type: XS.WRITE, path: "/a", value: "hello" }, 8, 3), hdr(11, 8, 3, 8) + pl("/a\0hello")],
      [encodeRequest({ type: XS.WRITE, path: "/a", value: "" }, 9), hdr(11, 9, 0, 3) + pl("/a\0")],
      [encodeRequest({ type: XS.DIRECTORY, path: "/" }, 1), hdr(1, 1, 0, 2) + pl("/\0")],
      [encodeRequest({ type: XS.MKDIR, path: "/d" }, 2), hdr(12, 2, 0, 3) + pl("/d\0")],
      [encodeRequest({ type: XS.RM, path: "/d" }, 0xffffffff, 0xfffffffe), hdr(13, 0xffffffff, 0xfffffffe, 3) + pl("/d\0")],
      [encodeRequest({ type: XS.GET_PERMS, path: "/p" }, 4), hdr(3, 4, 0, 3) + pl("/p\0")],
      [
        encodeRequest({ type: XS.SET_PERMS, path: "/p", perms: [{ domid: 0, access: "n" }, { domid: 5, access: "r" }, { domid: 65535, access: "b" }] }, 5),
        hdr(14, 5, 0, 16) + pl("/p\0n0\0r5\0b65535\0"),
      ],
      [encodeRequest({ type: XS.WATCH, path: "/w", token: "tok" }, 6), hdr(4, 6, 0, 7) + pl("/w\0tok\0")],
      [encodeRequest({ type: XS.WATCH, path: "@releaseDomain", token: "" }, 6), hdr(4, 6, 0, 16) + pl("@releaseDomain\0\0")],
      [encodeRequest({ type: XS.UNWATCH, path: "/w", token: "tok" }, 10), hdr(5, 10, 0, 7) + pl("/w\0tok\0")],
      [encodeRequest({ type: XS.TRANSACTION_START }, 11), hdr(6, 11, 0, 1) + "00"],
      [encodeRequest({ type: XS.TRANSACTION_END, commit: true }, 12, 17), hdr(7, 12, 17, 2) + pl("T\0")],
      [encodeRequest({ type: XS.TRANSACTION_END, commit: false }, 13, 17), hdr(7, 13, 17, 2) + pl("F\0")],
      [encodeRequest({ type: XS.GET_DOMAIN_PATH, domid: 5 }, 14), hdr(10, 14, 0, 2) + pl("5\0")],
      // UTF-8: the length counts bytes.
      [encodeRequest({ type: XS.WRITE, path: "/u", value: "é€" }, 15), hdr(11, 15, 0, 8) + pl("/u\0é€")],
    ];
    for (const [got, want] of cases) expect(hex(got)).toBe(want);
  });

  test("the payload limit is 4096 bytes: exactly 4096 goes, 4097 is E2BIG naming the op and path", () => {
    const path = "/big";
    const fits = "x".repeat(XENSTORE_PAYLOAD_MAX - path.length - 1);
    expect(requestPayload({ type: XS.WRITE, path, value: fits }).byteLength).toBe(4096);
    const e = throwsSync(() => requestPayload({ type: XS.WRITE, path, value: `${fits}x` }, "xenstore.write"));
    expect(e.code).toBe("E2BIG");
    expect(e.message).toBe("xenstore.write: E2BIG: /big: request of 4097 bytes exceeds the 4096-byte payload limit");
    // Multi-byte characters count as bytes.
    expect(throwsSync(() => requestPayload({ type: XS.WRITE, path, value: "é".repeat(2046) })).code).toBe("E2BIG");
    expect(throwsSync(() => encodeMessage(XS.READ, 1, 0, new Uint8Array(4097))).code).toBe("E2BIG");
  });

  test("strings that would break the framing are EINVAL", () => {
    expect(throwsSync(() => requestPayload({ type: XS.READ, path: "/a\0b" })).message).toContain("path contains NUL");
    expect(throwsSync(() => requestPayload({ type: XS.WRITE, path: "/a", value: "x\0y" })).message).toContain("value contains NUL");
    expect(throwsSync(() => requestPayload({ type: XS.WATCH, path: "/a", token: "t\0" })).message).toContain("token contains NUL");
    expect(throwsSync(() => requestPayload({ type: XS.SET_PERMS, path: "/a", perms: [] })).code).toBe("EINVAL");
    expect(throwsSync(() => requestPayload({ type: XS.SET_PERMS, path: "/a", perms: [{ domid: 65536, access: "r" }] })).code).toBe("EINVAL");
    expect(throwsSync(() => requestPayload({ type: XS.SET_PERMS, path: "/a", perms: [{ domid: 1, access: "x" as "r" }] })).code).toBe("EINVAL");
    expect(throwsSync(() => requestPayload({ type: XS.GET_DOMAIN_PATH, domid: -1 })).code).toBe("EINVAL");
    expect(throwsSync(() => encodeMessage(XS.READ, 2 ** 32, 0, new Uint8Array(0))).message).toContain("req_id 4294967296 is not a u32");
  });
});

describe("xs-wire: replies", () => {
  test("strings, directory lists, perms, transaction ids", () => {
    expect(parseString(te.encode("value without NUL"))).toBe("value without NUL");
    expect(parseString(te.encode("OK\0"))).toBe("OK");
    expect(parseString(new Uint8Array(0))).toBe("");
    expect(parseString(te.encode("é\0"))).toBe("é");
    expect(parseStrings(te.encode("a\0bb\0c\0"))).toEqual(["a", "bb", "c"]);
    expect(parseStrings(new Uint8Array(0))).toEqual([]);
    expect(parsePerms("op", te.encode("n0\0r5\0w7\0b65535\0"))).toEqual([
      { access: "n", domid: 0 },
      { access: "r", domid: 5 },
      { access: "w", domid: 7 },
      { access: "b", domid: 65535 },
    ]);
    expect(throwsSync(() => parsePerms("op", te.encode("x0\0"))).message).toContain('malformed permission "x0"');
    expect(throwsSync(() => parsePerms("op", te.encode("r70000\0"))).code).toBe("EINVAL");
    expect(throwsSync(() => parsePerms("op", new Uint8Array(0))).code).toBe("EINVAL");
    expect(parseTransactionId("op", te.encode("17\0"))).toBe(17);
    expect(parseTransactionId("op", te.encode("4294967295\0"))).toBe(0xffffffff);
    for (const bad of ["0\0", "-1\0", "x\0", "\0", "4294967296\0"]) {
      expect(throwsSync(() => parseTransactionId("op", te.encode(bad))).code).toBe("EINVAL");
    }
  });

  test("WATCH_EVENT is path\\0token\\0; anything else is EINVAL", () => {
    expect(parseWatchEvent(te.encode("/a/b\0tok\0"))).toEqual({ path: "/a/b", token: "tok" });
    expect(parseWatchEvent(te.encode("/a\0\0"))).toEqual({ path: "/a", token: "" });
    for (const bad of ["/a\0tok", "/a\0", "/a\0t\0x\0", ""]) {
      expect(throwsSync(() => parseWatchEvent(te.encode(bad))).code).toBe("EINVAL");
    }
  });

  test("ERROR carries an errno name: a PlatformError with that code, the op and the path", () => {
    const e = errorFromReply("xenstore.read", "/forbidden/x", te.encode("EACCES\0"));
    expect(e).toBeInstanceOf(PlatformError);
    expect(e).toBeInstanceOf(ErrnoError);
    expect([e.code, e.errnoName, e.errno, e.op]).toEqual(["EACCES", "EACCES", 13, "xenstore.read"]);
    expect(e.message).toBe("xenstore.read: EACCES: /forbidden/x");
    for (const [name, code] of [["ENOENT", "ENOENT"], ["EAGAIN", "EAGAIN"], ["E2BIG", "E2BIG"], ["EEXIST", "EEXIST"], ["EPERM", "EPERM"], ["ENOSPC", "ENOSPC"], ["EBUSY", "EBUSY"], ["EINVAL", "EINVAL"], ["ENOMEM", "ENOSPC"], ["EISCONN", "EEXIST"], ["EIO", "EINVAL"], ["ENOSYS", "EINVAL"], ["EROFS", "EPERM"], ["ENOTEMPTY", "EBUSY"], ["EISDIR", "EINVAL"]] as const) {
      const x = errorFromReply("op", "/p", te.encode(`${name}\0`));
      expect([x.code, x.errnoName]).toEqual([code, name]);
      if (name !== code) expect(x.message).toBe(`op: ${code}: /p (${name})`);
    }
    // Names a future xenstored might send: kept, mapped to EINVAL. Garbage is EINVAL.
    const q = errorFromReply("op", "/p", te.encode("EQUOTA\0"));
    expect([q.code, q.errnoName, q.errno]).toEqual(["EINVAL", "EQUOTA", -1]);
    expect(parseErrorName(te.encode("garbage\0"))).toBe("EINVAL");
    expect(errorFromReply("op", "/p", te.encode("not an errno")).message).toBe('op: EINVAL: /p: xenstored answered "not an errno"');
  });
});

describe("xs-wire: stream decoder", () => {
  const stream = concat([
    encodeMessage(XS.READ, 1, 0, te.encode("v1")),
    encodeMessage(XS.WATCH_EVENT, 0, 0, te.encode("/a\0t\0")),
    encodeMessage(XS.WRITE, 2, 9, te.encode("OK\0")),
    encodeMessage(XS.DIRECTORY, 3, 0, new Uint8Array(0)),
    encodeMessage(XS.READ, 4, 0, new Uint8Array(4096).fill(0x61)),
    encodeMessage(XS.ERROR, 5, 0, te.encode("ENOENT\0")),
  ]);
  const summary = (ms: XsMessage[]) => ms.map((m) => `${m.type}/${m.reqId}/${m.txId}/${m.len}/${hex(m.payload.subarray(0, 8))}/${m.payload.reduce((a, b) => (a + b) | 0, 0)}`);
  const whole = summary(new XsDecoder().push(stream));

  test("one chunk with six messages (one of 4096 bytes, one empty)", () => {
    expect(whole).toEqual(["2/1/0/2/7631/167", "15/0/0/5/2f61007400/260", "11/2/9/3/4f4b00/154", "1/3/0/0//0", "2/4/0/4096/6161616161616161/397312", "16/5/0/7/454e4f454e5400/457"]);
  });

  test("split at every position, and at many pairs of positions in the first 300 bytes", () => {
    const bad: string[] = [];
    const check = (what: string, parts: Uint8Array[]) => {
      const d = new XsDecoder();
      const got = summary(parts.flatMap((p) => d.push(p)));
      if (JSON.stringify(got) !== JSON.stringify(whole) || d.buffered !== 0) bad.push(what);
    };
    let splits = 0;
    for (let i = 0; i <= stream.length; i++, splits++) check(`split ${i}`, [stream.slice(0, i), stream.slice(i)]);
    for (let i = 0; i < 300; i++) {
      for (let j = i; j < 300; j += 13, splits++) check(`split ${i},${j}`, [stream.slice(0, i), stream.slice(i, j), stream.slice(j)]);
    }
    expect(bad).toEqual([]);
    expect(splits).toBeGreaterThan(stream.length + 3000);
  });

  test("byte by byte, and random chunk sizes", () => {
    const d = new XsDecoder();
    const got: XsMessage[] = [];
    for (let i = 0; i < stream.length; i++) got.push(...d.push(stream.slice(i, i + 1)));
    expect(summary(got)).toEqual(whole);
    const r = rng(7);
    for (let round = 0; round < 50; round++) {
      const d2 = new XsDecoder();
      const got2: XsMessage[] = [];
      for (let i = 0; i < stream.length; ) {
        const n = r(300);
        got2.push(...d2.push(stream.slice(i, i + n)));
        i += n;
      }
      expect(summary(got2)).toEqual(whole);
    }
  });

  test("payloads are copies: reusing the chunk's buffer does not change a decoded message", () => {
    const chunk = encodeMessage(XS.READ, 1, 0, te.encode("abc"));
    const [m] = new XsDecoder().push(chunk);
    chunk.fill(0);
    expect(td.decode(m?.payload)).toBe("abc");
  });

  test("a header announcing more than 4096 bytes breaks the stream: E2BIG, now and after", () => {
    const d = new XsDecoder();
    const bad = new Uint8Array(16);
    new DataView(bad.buffer).setUint32(XS_HEADER.len, 4097, true);
    expect(d.push(encodeMessage(XS.READ, 1, 0, te.encode("ok"))).length).toBe(1);
    const e = throwsSync(() => d.push(bad.subarray(0, 16)));
    expect(e.code).toBe("E2BIG");
    expect(e.message).toContain("announces 4097 bytes of payload, more than 4096");
    expect(throwsSync(() => d.push(encodeMessage(XS.READ, 2, 0, new Uint8Array(0)))).code).toBe("E2BIG");
    expect(decodeHeader(new DataView(bad.buffer), 0)).toEqual({ type: 0, reqId: 0, txId: 0, len: 4097 });
  });
});

// ---------------------------------------------------------------------------------------
// Numbers from xs_wire.h (and errno.h), through the C program
// ---------------------------------------------------------------------------------------

const C_SOURCE = join(import.meta.dir, "c", "uapi-check.c");
const NEEDED: readonly [string, string][] = [
  ["/usr/include/xen/io/xs_wire.h", "libxen-dev"],
  ["/usr/include/xen/grant_table.h", "libxen-dev"],
  ["/usr/include/xen/evtchn.h", "linux-libc-dev"],
  ["/usr/include/xen/gntalloc.h", "linux-libc-dev"],
  ["/usr/include/xen/gntdev.h", "linux-libc-dev"],
];
const GCC = Bun.which("gcc");
const missing = [GCC === null ? "gcc (not on PATH)" : "", ...NEEDED.map(([h, p]) => (existsSync(h) ? "" : `${h} (apt-get install ${p})`))].filter((m) => m !== "");
const IN_CI = process.env.CI === "true";
if (missing.length > 0 && !IN_CI) {
  console.warn(`xen-xenstore-wire: xs_wire.h cross-check SKIPPED, missing ${missing.join(" and ")}`);
}

if (missing.length > 0 && IN_CI) {
  describe("xs_wire.h cross-check", () => {
    test("prerequisites", () => {
      throw new Error(`CI=true but the xs_wire.h cross-check cannot run: missing ${missing.join(" and ")}`);
    });
  });
} else {
  const suite = missing.length === 0 ? describe : describe.skip;
  suite("xs_wire.h cross-check", () => {
    let dir = "";
    let bin = "";
    const run = async (input: string): Promise<string[]> => {
      const proc = Bun.spawn([bin, "xs"], { stdin: te.encode(input), stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      if (code !== 0) throw new Error(`uapi-check xs exited with ${code}: ${err}`);
      return out.split("\n").filter((l) => l !== "");
    };
    if (missing.length === 0 && GCC !== null) {
      const gcc = GCC;
      beforeAll(() => {
        dir = mkdtempSync(join(tmpdir(), "uapi-xs-"));
        bin = join(dir, "uapi-check");
        const cc = Bun.spawnSync([gcc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-o", bin, C_SOURCE]);
        if (cc.exitCode !== 0) throw new Error(`gcc failed on ${C_SOURCE}:\n${cc.stderr.toString()}`);
      });
      afterAll(() => {
        if (dir !== "") rmSync(dir, { recursive: true, force: true });
      });
    }

    test("message types, header layout, limits, xsd_errors[] and errno numbers", async () => {
      const c: Record<string, number> = {};
      for (const l of await run("")) {
        const [k, v] = l.split(" ");
        if (k !== undefined && v !== undefined) c[k] = Number(v);
      }
      const ours: Record<string, number> = {};
      for (const [k, v] of Object.entries(XS)) ours[`xs.XS_${k}`] = v;
      // The ones we do not use, and markers, are still checked to be where xs_wire.h says.
      Object.assign(ours, { "xs.XS_TYPE_COUNT": 23, "xs.XS_INVALID": 0xffff, "xs.XS_WATCH_PATH": 0, "xs.XS_WATCH_TOKEN": 1 });
      ours["xs.XENSTORE_PAYLOAD_MAX"] = XENSTORE_PAYLOAD_MAX;
      ours["xs.XENSTORE_ABS_PATH_MAX"] = XENSTORE_ABS_PATH_MAX;
      ours["xs.XENSTORE_REL_PATH_MAX"] = XENSTORE_REL_PATH_MAX;
      ours["size.xsd_sockmsg"] = XS_HEADER_SIZE;
      ours["off.xsd_sockmsg.type"] = XS_HEADER.type;
      ours["off.xsd_sockmsg.req_id"] = XS_HEADER.reqId;
      ours["off.xsd_sockmsg.tx_id"] = XS_HEADER.txId;
      ours["off.xsd_sockmsg.len"] = XS_HEADER.len;
      const xsd = Object.keys(c).filter((k) => k.startsWith("xsd_error."));
      expect(xsd.length).toBeGreaterThanOrEqual(16);
      // Every error name xenstored can send is one we know, with the same number.
      for (const k of xsd) ours[k] = ERRNO[k.slice("xsd_error.".length)] ?? -1;
      for (const k of Object.keys(c).filter((k) => k.startsWith("errno."))) ours[k] = ERRNO[k.slice("errno.".length)] ?? -1;
      // The names the C checker lists (every one the ffi and xenstore code meet) are all known.
      expect(Object.keys(c).filter((k) => k.startsWith("errno.")).length).toBeGreaterThanOrEqual(40);
      expect(c).toEqual(ours);
    });

    test("headers encode to struct xsd_sockmsg's bytes (extremes included)", async () => {
      const hs: [number, number, number, number][] = [[2, 1, 0, 5], [0xffffffff, 0xffffffff, 0xffffffff, 4096], [XS.WATCH_EVENT, 0, 0, 0], [0x01020304, 0x05060708, 0x090a0b0c, 0x0d0e0f10]];
      const out = await run(hs.map((h) => h.join(" ")).join("\n") + "\n");
      const bytes = out.filter((l) => l.startsWith("bytes ")).map((l) => l.slice(6));
      expect(bytes).toEqual(hs.map(([t, r, x, n]) => hdr(t, r, x, n)));
      // ...which is what encodeMessage writes in front of a payload.
      expect(hex(encodeMessage(0x01020304, 0x05060708, 0x090a0b0c, new Uint8Array(0)))).toBe(hdr(0x01020304, 0x05060708, 0x090a0b0c, 0));
    });
  });
}

// ---------------------------------------------------------------------------------------
// The client against the fake xenstored
// ---------------------------------------------------------------------------------------

describe("XenStoreClient: operations", () => {
  test("write creates parents; read, directory, mkdir; read of a missing node is null", async () => {
    const { xs } = setup();
    await xs.write("/local/domain/1/device/vif/0/mac", "00:16:3e:00:00:01");
    await xs.write("/local/domain/1/device/vif/0/mtu", "1500");
    expect(await xs.read("/local/domain/1/device/vif/0/mac")).toBe("00:16:3e:00:00:01");
    expect(await xs.read("/local/domain/1/device/vif/0")).toBe("");
    expect(await xs.read("/local/domain/1/nope")).toBeNull();
    expect((await xs.directory("/local/domain/1/device/vif/0")).sort()).toEqual(["mac", "mtu"]);
    await xs.mkdir("/empty");
    expect(await xs.directory("/empty")).toEqual([]);
    await rejects(xs.directory("/missing"), "ENOENT", "xenstore.directory", "/missing");
    await xs.write("/v", "");
    expect(await xs.read("/v")).toBe("");
    await xs.write("/u", "é€ and spaces\nnewline");
    expect(await xs.read("/u")).toBe("é€ and spaces\nnewline");
    expect(await xs.getDomainPath(7)).toBe("/local/domain/7");
  });

  test("rm removes a subtree; removing a missing node is not an error", async () => {
    const { xs, fake } = setup();
    await xs.write("/a/b/c", "1");
    await xs.write("/a/d", "2");
    await xs.rm("/a/b");
    expect(await xs.directory("/a")).toEqual(["d"]);
    expect(await xs.read("/a/b/c")).toBeNull();
    await xs.rm("/a/b");
    await xs.rm("/never/was");
    // The fake answered ENOENT to both: the client hid it.
    expect(fake.log.filter((m) => m.type === XS.RM).length).toBe(3);
  });

  test("permissions: set as n0,r5 strings, read back", async () => {
    const { xs, fake } = setup();
    await xs.write("/p", "x");
    expect(await xs.getPerms("/p")).toEqual([{ domid: 0, access: "n" }]);
    const perms: Perm[] = [{ domid: 3, access: "n" }, { domid: 5, access: "r" }, { domid: 0, access: "b" }];
    await xs.setPerms("/p", perms);
    expect(await xs.getPerms("/p")).toEqual(perms);
    expect(td.decode(fake.log.at(-2)?.payload)).toBe("/p\0n3\0r5\0b0\0");
    await rejects(xs.setPerms("/p", []), "EINVAL", "non-empty permission list");
    await rejects(xs.getPerms("/missing"), "ENOENT", "xenstore.getPerms", "/missing");
  });

  test("errors name the errno, the op and the path: EACCES under /forbidden, EINVAL for a path xenstored refuses", async () => {
    const { xs } = setup();
    const e = await rejects(xs.read("/forbidden/key"), "EACCES");
    expect(e.message).toBe("xenstore.read: EACCES: /forbidden/key");
    expect((e as ErrnoError).errnoName).toBe("EACCES");
    await rejects(xs.write("/forbidden/key", "v"), "EACCES", "xenstore.write", "/forbidden/key");
    await rejects(xs.rm("/forbidden"), "EACCES", "xenstore.rm", "/forbidden");
    await rejects(xs.directory("/forbidden"), "EACCES", "xenstore.directory");
    await rejects(xs.setPerms("/forbidden", [{ domid: 0, access: "n" }]), "EACCES", "xenstore.setPerms");
    await rejects(xs.watch("/forbidden", "t", () => {}), "EACCES", "xenstore.watch", "/forbidden");
    await rejects(xs.read("/trailing/"), "EINVAL", "xenstore.read", "/trailing/");
    await xs.write("relative/key", "r"); // xenstored resolves it below the domain's home
    expect(await xs.read("/local/domain/0/relative/key")).toBe("r");
    await rejects(xs.write("/big", "x".repeat(5000)), "E2BIG", "xenstore.write", "/big");
    await rejects(xs.read("/a\0b"), "EINVAL", "NUL");
    // Still fine afterwards.
    await xs.write("/ok", "1");
    expect(await xs.read("/ok")).toBe("1");
  });

  test("many requests in flight, replies split into bytes, merged, randomly chunked and reversed: each matched by req_id", async () => {
    for (const chunking of ["whole", "bytes", "merged", "random"] as const) {
      for (const reverse of [false, true]) {
        const { xs, fake } = setup();
        fake.chunking = chunking;
        fake.reverseReplies = reverse;
        const n = 200;
        await Promise.all(Array.from({ length: n }, (_, i) => xs.write(`/k/${i}`, `value-${i}-${"z".repeat(i % 50)}`)));
        const got = await Promise.all(Array.from({ length: n + 10 }, (_, i) => xs.read(`/k/${i}`)));
        expect(got).toEqual(Array.from({ length: n + 10 }, (_, i) => (i < n ? `value-${i}-${"z".repeat(i % 50)}` : null)));
        expect(xs.inFlight).toBe(0);
        expect(xs.droppedReplies).toBe(0);
        // All req_ids distinct.
        const ids = fake.log.map((m) => m.reqId);
        expect(new Set(ids).size).toBe(ids.length);
      }
    }
  });
});

describe("XenStoreClient: watches", () => {
  test("fires once on registration, then on every change at or below the path, with the changed path and the caller's token", async () => {
    const { xs, fake, connect } = setup();
    const other = connect().client;
    const r = recorder();
    const w = await xs.watch("/be/state", "my-token", r.cb);
    expect(w.path).toBe("/be/state");
    expect(w.token).toBe("my-token");
    await until(() => r.events.length === 1, "the registration event");
    expect(r.events).toEqual([["/be/state", "my-token"]]);
    await other.write("/be/state", "2");
    await other.write("/be/state/sub", "x");
    await other.write("/be/other", "y"); // not below: no event
    fake.writeOutside("/be/state", "4");
    await until(() => r.events.length === 4, "three change events");
    await tick(10);
    expect(r.events).toEqual([
      ["/be/state", "my-token"],
      ["/be/state", "my-token"],
      ["/be/state/sub", "my-token"],
      ["/be/state", "my-token"],
    ]);
    // On the wire the token is ours and unique; the caller never sees it.
    const wire = fake.log.find((m) => m.type === XS.WATCH);
    expect(td.decode(wire?.payload)).toMatch(/^\/be\/state\0\d+:my-token\0$/);
  });

  test("the same token on two paths, and two watches on one path, dispatch separately", async () => {
    const { xs, fake } = setup();
    const a = recorder();
    const b = recorder();
    const c = recorder();
    await xs.watch("/a", "t", a.cb);
    await xs.watch("/b", "t", b.cb);
    await xs.watch("/a", "t", c.cb);
    await until(() => a.events.length + b.events.length + c.events.length === 3, "registration events");
    fake.writeOutside("/b/x", "1");
    await until(() => b.events.length === 2, "the /b event");
    await tick(10);
    expect([a.events.length, b.events.length, c.events.length]).toEqual([1, 2, 1]);
    expect(b.events[1]).toEqual(["/b/x", "t"]);
  });

  test("an event that arrives before the WATCH reply still reaches the callback", async () => {
    const { xs, fake } = setup();
    fake.eventBeforeReply = true;
    const r = recorder();
    await xs.watch("/early", "e", r.cb);
    await until(() => r.events.length === 1, "the early event");
    expect(r.events).toEqual([["/early", "e"]]);
  });

  test("unwatch: no more events, UNWATCH sent with the wire token; late events are dropped and counted", async () => {
    const { xs, fake } = setup();
    const r = recorder();
    const w = await xs.watch("/u", "tok", r.cb);
    await until(() => r.events.length === 1, "registration");
    const wireToken = td.decode(fake.log.find((m) => m.type === XS.WATCH)?.payload).split("\0")[1] ?? "";
    w.unwatch();
    w.unwatch(); // idempotent
    fake.writeOutside("/u", "1"); // may race the UNWATCH: the event must not be delivered
    await until(() => fake.log.some((m) => m.type === XS.UNWATCH), "the UNWATCH request");
    await tick(10);
    expect(r.events.length).toBe(1);
    expect(td.decode(fake.log.find((m) => m.type === XS.UNWATCH)?.payload)).toBe(`/u\0${wireToken}\0`);
    expect(fake.log.filter((m) => m.type === XS.UNWATCH).length).toBe(1);
    expect(xs.droppedEvents).toBe(1);
    // Bogus events (unknown token, malformed) are dropped too.
    fake.conns.forEach((c) => c.post(encodeMessage(XS.WATCH_EVENT, 0, 0, te.encode("/x\0nobody\0"))));
    fake.conns.forEach((c) => c.post(encodeMessage(XS.WATCH_EVENT, 0, 0, te.encode("garbage"))));
    await until(() => xs.droppedEvents === 3, "bogus events counted");
  });

  test("a callback that throws goes to onWatchError; other watches still fire", async () => {
    const errors: unknown[] = [];
    const { xs, fake } = setup({ onWatchError: (e) => errors.push(e) });
    const r = recorder();
    await xs.watch("/t", "bad", () => {
      throw new Error("callback bug");
    });
    await xs.watch("/t", "good", r.cb);
    fake.writeOutside("/t", "1");
    await until(() => r.events.length === 2 && errors.length === 2, "events and errors");
    expect(String(errors[0])).toContain("callback bug");
  });

  test("a refused WATCH leaves no registration behind", async () => {
    const { xs, fake } = setup();
    await rejects(xs.watch("/forbidden/x", "t", () => {}), "EACCES");
    // An event with that wire token would now be dropped.
    fake.conns.forEach((c) => c.post(encodeMessage(XS.WATCH_EVENT, 0, 0, te.encode("/forbidden/x\x001:t\0"))));
    await until(() => xs.droppedEvents === 1, "the event dropped");
  });
});

describe("XenStoreClient: transactions", () => {
  test("start gives the decimal id; ops carry it as tx_id; commit publishes, abort discards", async () => {
    const { xs, fake, connect } = setup();
    const other = connect().client;
    const tx = await xs.transactionStart();
    expect(tx.id).toBe(41);
    await xs.write("/fe/ring-ref", "8", tx);
    await xs.write("/fe/state", "4", tx);
    expect(await xs.read("/fe/ring-ref", tx)).toBe("8");
    expect(await other.read("/fe/ring-ref")).toBeNull(); // not yet visible
    await xs.transactionEnd(tx, true);
    expect(await other.read("/fe/ring-ref")).toBe("8");
    const writes = fake.log.filter((m) => m.type === XS.WRITE);
    expect(writes.map((m) => m.txId)).toEqual([41, 41]);
    expect(td.decode(fake.log.find((m) => m.type === XS.TRANSACTION_END)?.payload)).toBe("T\0");
    expect(fake.log.find((m) => m.type === XS.TRANSACTION_END)?.txId).toBe(41);

    const t2 = await xs.transactionStart();
    await xs.write("/fe/state", "6", t2);
    await xs.transactionEnd(t2, false);
    expect(await xs.read("/fe/state")).toBe("4");
    // An ended transaction is gone, locally (no request) and for xenstored.
    await rejects(xs.write("/x", "1", t2), "ENOENT", "no open transaction");
    await rejects(xs.transactionEnd(t2, true), "ENOENT");
  });

  test("a conflicting commit is EAGAIN", async () => {
    const { xs, fake } = setup();
    const tx = await xs.transactionStart();
    await xs.write("/c", "mine", tx);
    fake.writeOutside("/elsewhere", "theirs");
    await rejects(xs.transactionEnd(tx, true), "EAGAIN", "xenstore.transactionEnd", `transaction ${tx.id} (commit)`);
    expect(await xs.read("/c")).toBeNull();
  });

  test("transaction(fn) retries on EAGAIN and returns fn's result; watches fire on commit", async () => {
    const { xs, fake } = setup();
    const r = recorder();
    await xs.watch("/h", "w", r.cb);
    let attempts = 0;
    const result = await xs.transaction(async (tx) => {
      attempts++;
      const n = Number((await xs.read("/h/count", tx)) ?? "0");
      await xs.write("/h/count", String(n + 1), tx);
      if (attempts <= 3) fake.writeOutside("/noise", String(attempts)); // conflict
      return `attempt ${attempts}`;
    });
    expect(result).toBe("attempt 4");
    expect(attempts).toBe(4);
    expect(await xs.read("/h/count")).toBe("1");
    await until(() => r.events.some((e) => e[0] === "/h/count"), "the commit's event");
    expect(fake.txs.size).toBe(0);
  });

  test("transaction(fn) gives up after maxRetries with EAGAIN; a throwing fn aborts and rethrows", async () => {
    const { xs, fake } = setup();
    let attempts = 0;
    await rejects(
      xs.transaction(async (tx) => {
        attempts++;
        await xs.write("/x", "1", tx);
        fake.writeOutside("/noise", "n");
      }, 2),
      "EAGAIN",
    );
    expect(attempts).toBe(3);
    await expect(
      xs.transaction(async (tx) => {
        await xs.write("/y", "1", tx);
        throw new Error("fn failed");
      }),
    ).rejects.toThrow("fn failed");
    expect(await xs.read("/y")).toBeNull();
    const ends = fake.log.filter((m) => m.type === XS.TRANSACTION_END);
    expect(td.decode(ends.at(-1)?.payload)).toBe("F\0");
    expect(fake.txs.size).toBe(0);
    await rejects(xs.transaction(async () => 1, -1), "EINVAL");
  });
});

describe("XenStoreClient: timeouts, close, broken streams", () => {
  test("a request with no reply times out (ETIMEDOUT, op and path); the late reply is dropped; the client goes on", async () => {
    const { xs, fake } = setup({ timeoutMs: 40 });
    fake.withhold.add(XS.READ);
    const t0 = performance.now();
    const e = await rejects(xs.read("/slow"), "ETIMEDOUT", "xenstore.read", "/slow", "40 ms");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(35);
    expect(e.message).toBe("xenstore.read: ETIMEDOUT: /slow: no reply from xenstored within 40 ms");
    expect(xs.inFlight).toBe(0);
    fake.withhold.clear();
    fake.releaseWithheld();
    await until(() => xs.droppedReplies === 1, "the late reply dropped");
    await xs.write("/fast", "1");
    expect(await xs.read("/fast")).toBe("1");
  });

  test("replies slower than the timeout fail; faster ones succeed", async () => {
    const { xs, fake } = setup({ timeoutMs: 60 });
    fake.replyDelayMs = 10;
    await xs.write("/a", "1");
    fake.replyDelayMs = 150;
    await rejects(xs.read("/a"), "ETIMEDOUT");
  });

  test("close() rejects every pending request with ECLOSED, drops watches, refuses new requests", async () => {
    const { xs, fake } = setup();
    const r = recorder();
    await xs.watch("/w", "t", r.cb);
    await until(() => r.events.length === 1, "registration");
    fake.withhold.add(XS.READ);
    const pending = [xs.read("/a"), xs.read("/b"), xs.read("/c")];
    await tick(5);
    expect(xs.inFlight).toBe(3);
    xs.close();
    for (const p of pending) await rejects(p, "ECLOSED", "xenstore.read");
    expect(xs.closed).toBe(true);
    expect(xs.inFlight).toBe(0);
    await rejects(xs.read("/a"), "ECLOSED");
    await rejects(xs.write("/a", "1"), "ECLOSED");
    await rejects(xs.watch("/a", "t", () => {}), "ECLOSED");
    await rejects(xs.transactionStart(), "ECLOSED");
    fake.writeOutside("/w", "x");
    await tick(10);
    expect(r.events.length).toBe(1);
    xs.close(); // idempotent
  });

  test("xenstored hanging up rejects pending requests with ECLOSED", async () => {
    const { xs, fake, transport } = setup();
    fake.withhold.add(XS.DIRECTORY);
    const p = xs.directory("/");
    await tick(5);
    transport.conn.hangUp();
    await rejects(p, "ECLOSED", "xenstore.directory", "closed");
    expect(xs.closed).toBe(true);
  });

  test("a reply of the wrong type is EINVAL; an oversized header breaks the connection (pending requests fail ECLOSED, naming the cause)", async () => {
    const { xs, fake, transport } = setup();
    const server = transport.conn;
    fake.withhold.add(XS.READ);
    const q = xs.read("/b");
    await until(() => transport.sent.length === 1, "the READ sent");
    const reqId = decodeHeader(new DataView((transport.sent[0] as Uint8Array).buffer), 0).reqId;
    server.post(encodeMessage(XS.WRITE, reqId, 0, te.encode("OK\0")));
    await rejects(q, "EINVAL", "xenstore.read", "/b", "WRITE reply to a READ request");
    fake.releaseWithheld(); // the real reply, now for nobody
    await until(() => xs.droppedReplies === 1, "the real reply dropped");
    const pending = xs.read("/c");
    const bad = new Uint8Array(16);
    new DataView(bad.buffer).setUint32(XS_HEADER.len, 100_000, true);
    server.post(bad);
    await rejects(pending, "ECLOSED", "announces 100000 bytes");
    expect(xs.closed).toBe(true);
  });

  test("bad options", () => {
    expect(() => new XenStoreClient(fakeTransport(new FakeXenstored()), { timeoutMs: 0 })).toThrow(PlatformError);
  });
});

// ---------------------------------------------------------------------------------------
// Real transports, each with the fake on the other end
// ---------------------------------------------------------------------------------------

/** The fake xenstored behind a unix socket in a fresh directory. */
function serveOnUnixSocket() {
  const dir = mkdtempSync(join(tmpdir(), "xs-sock-"));
  const path = join(dir, "socket");
  const fake = new FakeXenstored();
  const conns = new Map<unknown, FakeConn>();
  const listener = Bun.listen<undefined>({
    unix: path,
    socket: {
      open(s) {
        conns.set(s, fake.connect((bytes) => void s.write(bytes), () => s.end()));
      },
      data(s, chunk) {
        conns.get(s)?.receive(new Uint8Array(chunk));
      },
      close(s) {
        const c = conns.get(s);
        if (c !== undefined) fake.drop(c);
      },
    },
  });
  const stop = () => {
    listener.stop(true);
    rmSync(dir, { recursive: true, force: true });
  };
  return { fake, path, stop };
}

describe("transports", () => {
  test("fdTransport over a socketpair (as /dev/xen/xenbus is used): the client works end to end", async () => {
    const fake = new FakeXenstored();
    fake.chunking = "random";
    const [a, b] = libc.socketpair();
    const serverSide = fdTransport(b, "server end");
    const conn = fake.connect((bytes) => serverSide.write(bytes));
    serverSide.onData((c) => conn.receive(c));
    const xs = new XenStoreClient(fdTransport(a, "client end"));
    clients.push(xs);
    const r = recorder();
    await xs.watch("/fd", "t", r.cb);
    await Promise.all(Array.from({ length: 100 }, (_, i) => xs.write(`/fd/${i}`, "v".repeat(i * 30))));
    expect(await xs.read("/fd/99")).toBe("v".repeat(2970));
    await xs.transaction(async (tx) => xs.write("/fd/tx", "1", tx));
    await until(() => r.events.length === 102, "watch events through the socketpair");
    // The server end closing is seen as a hang-up.
    const p = (fake.withhold.add(XS.READ), xs.read("/fd/0"));
    await tick(5);
    serverSide.close();
    await rejects(p, "ECLOSED");
  });

  test("connectXenstoredSocket over a unix socket served by the fake", async () => {
    const { fake, path, stop } = serveOnUnixSocket();
    try {
      const xs = new XenStoreClient(await connectXenstoredSocket(path));
      clients.push(xs);
      await xs.write("/sock/a", "1");
      const r = recorder();
      await xs.watch("/sock", "t", r.cb);
      await xs.write("/sock/b", "x".repeat(4000));
      expect(await xs.read("/sock/b")).toBe("x".repeat(4000));
      expect((await xs.directory("/sock")).sort()).toEqual(["a", "b"]);
      await until(() => r.events.length === 2, "events over the socket");
      // xenstored going away: pending requests fail with ECLOSED.
      fake.withhold.add(XS.READ);
      const p = xs.read("/sock/a");
      await tick(5);
      for (const c of [...fake.conns]) c.hangUp();
      await rejects(p, "ECLOSED");
    } finally {
      stop();
    }
  });

  test("createXenPlatform: xenstore over the socket (connecting in the background), its domid read from the relative key", async () => {
    const { fake, path, stop } = serveOnUnixSocket();
    try {
      fake.writeOutside("/local/domain/0/domid", "0");
      const p = await createXenPlatform({ xenstoreSocket: path });
      expect([p.kind, p.domid]).toEqual(["xen", 0]);
      expect(p.descriptor.params).toEqual({ devices: DEFAULT_XEN_DEVICES, xenstoreSocket: path, xenstoreTimeoutMs: 10_000 });
      await p.xenstore.write("/local/domain/0/data/x", "1");
      expect(await p.xenstore.read("data/x")).toBe("1");
      p.close();
      // A view made from the descriptor connects on first use (the deferred socket transport).
      const q = openXenPlatform(p.descriptor);
      expect(await q.xenstore.read("/local/domain/0/data/x")).toBe("1");
      q.close();
      fake.tree.delete("/local/domain/0/domid");
      await rejects(createXenPlatform({ xenstoreSocket: path }), "ENOENT", "pass opts.domid");
      const r = await createXenPlatform({ xenstoreSocket: path, domid: 4 });
      expect(r.domid).toBe(4);
      r.close();
    } finally {
      stop();
    }
  });

  test("without xenstored: the socket and /dev/xen/xenbus are ENOENT naming the path", async () => {
    await rejects(connectXenstoredSocket("/nonexistent/xenstored/socket"), "ENOENT", "xenstore.connect", "/nonexistent/xenstored/socket");
    if (!existsSync("/dev/xen/xenbus")) {
      const e = throwsSync(() => openXenbusDevice());
      expect([e.code, e.op]).toEqual(["ENOENT", "xenstore.open"]);
      expect(e.message).toBe("xenstore.open: ENOENT: /dev/xen/xenbus");
    }
  });
});

// ---------------------------------------------------------------------------------------
// Device helpers: the errors a machine without Xen, or without permission, gives
// ---------------------------------------------------------------------------------------

describe("device helpers: error paths", () => {
  test("opening /dev/xen/evtchn, gntalloc, gntdev here: ENOENT naming the path", () => {
    for (const dev of ["/dev/xen/evtchn", "/dev/xen/gntalloc", "/dev/xen/gntdev"]) {
      if (existsSync(dev)) continue; // on a Xen host this test has nothing to show
      const e = throwsSync(() => libc.open(dev, libc.O_RDWR | libc.O_CLOEXEC, "evtchn.open"));
      expect(e).toBeInstanceOf(ErrnoError);
      expect([e.code, (e as ErrnoError).errno]).toEqual(["ENOENT", 2]);
      expect(e.message).toBe(`evtchn.open: ENOENT: ${dev}`);
    }
  });

  test("EACCES from a real open(), made as an unprivileged user (root bypasses permissions)", async () => {
    const setpriv = Bun.which("setpriv");
    const isRoot = process.getuid?.() === 0;
    if (setpriv === null || !isRoot) {
      console.warn("xen-xenstore-wire: EACCES subprocess test skipped (needs root and setpriv); the errno mapping is tested below");
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), "eacces-")); // mode 0700, owned by root
    writeFileSync(join(dir, "device"), "");
    // The unprivileged child may not be able to read this checkout (a 0700 temporary clone, say):
    // it gets libc.ts bundled into a directory of its own that it can read.
    const bundle = mkdtempSync(join(tmpdir(), "eacces-libc-"));
    chmodSync(bundle, 0o755);
    const built = await Bun.build({ entrypoints: [join(import.meta.dir, "..", "src", "ffi", "libc.ts")], outdir: bundle, target: "bun" });
    expect(built.success).toBe(true);
    const libcPath = built.outputs[0]!.path;
    chmodSync(libcPath, 0o644);
    const code = `const l = await import(${JSON.stringify(libcPath)}); try { l.open(${JSON.stringify(join(dir, "device"))}, l.O_RDWR, "gntdev.open"); console.log("opened"); } catch (e) { console.log(JSON.stringify({ code: e.code, errno: e.errno, name: e.errnoName, message: e.message })); }`;
    try {
      const proc = Bun.spawn([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e", code], { stdout: "pipe", stderr: "pipe" });
      const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      expect(err).toBe("");
      expect(JSON.parse(out)).toEqual({ code: "EACCES", errno: 13, name: "EACCES", message: `gntdev.open: EACCES: ${join(dir, "device")}` });
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(bundle, { recursive: true, force: true });
    }
  });

  test("errno mapping: numbers to names, names to PlatformError codes, exact name kept", () => {
    expect(errnoName(13)).toBe("EACCES");
    expect(errnoName(19)).toBe("ENODEV");
    expect(errnoName(9999)).toBe("E9999");
    expect(ERRNO.EAGAIN).toBe(11);
    const table: [number, PlatformErrorCode][] = [
      [1, "EPERM"], [2, "ENOENT"], [11, "EAGAIN"], [13, "EACCES"], [16, "EBUSY"], [17, "EEXIST"], [22, "EINVAL"], [28, "ENOSPC"], [7, "E2BIG"], [110, "ETIMEDOUT"],
      [19, "ENOENT"], [6, "ENOENT"], [12, "ENOSPC"], [24, "ENOSPC"], [4, "EAGAIN"], [9, "ECLOSED"], [32, "ECLOSED"], [104, "ECLOSED"], [5, "EINVAL"], [25, "EINVAL"], [14, "EINVAL"], [9999, "EINVAL"],
    ];
    for (const [n, code] of table) {
      const e = new ErrnoError("gntdev.map", n, "refs 8,9 of domain 1");
      expect([n, e.code]).toEqual([n, code]);
      expect(e.errno).toBe(n);
      expect(e.message).toBe(e.errnoName === code ? `gntdev.map: ${code}: refs 8,9 of domain 1` : `gntdev.map: ${code}: refs 8,9 of domain 1 (${e.errnoName})`);
    }
    expect(platformCode("EACCES")).toBe("EACCES");
    expect(new ErrnoError("op", "EACCES", "x").errno).toBe(13);
  });
});
