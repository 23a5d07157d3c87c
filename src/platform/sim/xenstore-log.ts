/**
 * The change log watches are served from: a byte ring in shared memory of variable-length
 * records `{seq u32, kind u32, len u32, payload}`, plus a record count (the sequence word that
 * watchers wait on) and a byte head, both free-running u32. Writers and readers hold the store
 * lock, so a record is never read half-written. A reader that lagged more than the ring holds
 * is told so (overrun) and must assume anything changed.
 */
import type { Perm } from "../types.ts";
import type { Change, ChangeKind } from "./xenstore-overlay.ts";
import { permsFromString, permsToString } from "./xenstore-perms.ts";

export interface LogRecord {
  readonly seq: number;
  readonly kind: ChangeKind;
  readonly path: string;
  readonly readers: readonly (readonly Perm[])[] | null;
}

export interface LogCursor {
  readonly seq: number;
  readonly pos: number;
}

export interface LogBatch {
  readonly records: LogRecord[];
  /** Records were overwritten before this reader got to them. */
  readonly overrun: boolean;
  readonly next: LogCursor;
}

const HEADER = 12;
const KINDS: readonly ChangeKind[] = ["write", "rm"];
const EVERYONE = "*";

export const MIN_LOG_BYTES = 16384;

const enc = new TextEncoder();
const dec = new TextDecoder();

export class ChangeLog {
  private readonly mask: number;

  constructor(
    private readonly words: Int32Array,
    private readonly seqIndex: number,
    private readonly headIndex: number,
    private readonly ring: Uint8Array,
  ) {
    this.mask = ring.length - 1;
  }

  /** Records appended so far (u32); readable without the lock, for waiting on. */
  get seq(): number {
    return Atomics.load(this.words, this.seqIndex) >>> 0;
  }

  /** Where a reader that wants only future records starts. Under the lock. */
  cursor(): LogCursor {
    return { seq: this.seq, pos: Atomics.load(this.words, this.headIndex) >>> 0 };
  }

  /** Under the lock. */
  append(c: Change): void {
    let payload = enc.encode(`${c.path}\0${encodeReaders(c.readers)}`);
    // Paths are short (xenstored's limit); only a huge perms list can make a record this big,
    // and then letting every domain see the event is harmless (spurious events are allowed).
    if (HEADER + payload.length > this.ring.length / 4) payload = enc.encode(`${c.path}\0${EVERYONE}`);
    const seq = this.seq;
    const head = Atomics.load(this.words, this.headIndex) >>> 0;
    const rec = new Uint8Array(HEADER + ((payload.length + 3) & ~3));
    const dv = new DataView(rec.buffer);
    dv.setUint32(0, seq, true);
    dv.setUint32(4, KINDS.indexOf(c.kind), true);
    dv.setUint32(8, payload.length, true);
    rec.set(payload, HEADER);
    this.copyIn(head, rec);
    Atomics.store(this.words, this.headIndex, (head + rec.length) | 0);
    Atomics.store(this.words, this.seqIndex, (seq + 1) | 0);
  }

  /** Records after `from`. Under the lock. */
  readSince(from: LogCursor): LogBatch {
    const seq = this.seq;
    const head = Atomics.load(this.words, this.headIndex) >>> 0;
    const overrun: LogBatch = { records: [], overrun: true, next: { seq, pos: head } };
    if (((head - from.pos) >>> 0) > this.ring.length) return overrun;
    const records: LogRecord[] = [];
    let pos = from.pos;
    for (let s = from.seq; s !== seq; s = (s + 1) >>> 0) {
      const hdr = new DataView(this.copyOut(pos, HEADER).buffer);
      const len = hdr.getUint32(8, true);
      if (hdr.getUint32(0, true) !== s || len > this.ring.length) return overrun;
      const text = dec.decode(this.copyOut(pos + HEADER, len));
      const nul = text.indexOf("\0");
      records.push({
        seq: s,
        kind: KINDS[hdr.getUint32(4, true)] ?? "write",
        path: text.slice(0, nul),
        readers: decodeReaders(text.slice(nul + 1)),
      });
      pos = (pos + HEADER + ((len + 3) & ~3)) >>> 0;
    }
    return { records, overrun: false, next: { seq, pos } };
  }

  private copyIn(pos: number, bytes: Uint8Array): void {
    const off = pos & this.mask;
    const first = Math.min(bytes.length, this.ring.length - off);
    this.ring.set(bytes.subarray(0, first), off);
    if (first < bytes.length) this.ring.set(bytes.subarray(first), 0);
  }

  private copyOut(pos: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    const off = pos & this.mask;
    const first = Math.min(len, this.ring.length - off);
    out.set(this.ring.subarray(off, off + first));
    if (first < len) out.set(this.ring.subarray(0, len - first), first);
    return out;
  }
}

function encodeReaders(r: Change["readers"]): string {
  return r === null ? EVERYONE : r.map(permsToString).join("|");
}

function decodeReaders(s: string): LogRecord["readers"] {
  if (s === EVERYONE) return null;
  return s === "" ? [] : s.split("|").map(permsFromString);
}
