/**
 * How every thread keeps its own copy of the simulated xenstore's tree without a commit
 * costing the size of the tree: a commit appends the nodes it changed to a shared ring (the
 * mutation log), and a thread brings its copy up to date by replaying what it has not seen,
 * under the store lock. A snapshot of the whole tree is written every half ring of mutations,
 * so a thread that joins late or fell behind loads the snapshot and replays from there: the
 * ring always holds everything after the latest snapshot. A commit costs the nodes it changed;
 * the snapshot's cost is spread over half a ring of them.
 */
import { PlatformError, type DomId } from "../types.ts";
import { NodeReader, NodeWriter, nodeBytes } from "./xenstore-codec.ts";
import type { XsNode } from "./xenstore-overlay.ts";

/** Control words this module owns, at `base` in the store's control block. */
const TREE_BYTES = 0; // what the tree takes, as nodeBytes counts it
const SNAP_LEN = 1; // bytes of the snapshot
const SNAP_SEQ = 2; // mutation records before the snapshot
const SNAP_HEAD = 3; // ring position of the first record after it
const MUT_SEQ = 4; // records appended (u32, free-running)
const MUT_HEAD = 5; // ring position (u32, free-running)
export const REPLICA_WORDS = 6;

/** Record header: total length (4-aligned), sequence number, kind (1 set, 0 remove). */
const REC_HEADER = 12;

export class TreeReplica {
  tree = new Map<string, XsNode>();
  /** Records of the ring this copy has applied, and where the next one starts. */
  private seq = -1;
  private pos = 0;
  private readonly ringMask: number;
  private readonly snapDv: DataView;
  private scratch = new Uint8Array(4096);

  constructor(
    private readonly words: Int32Array,
    private readonly base: number,
    /** The snapshot buffer; its size is the store's capacity (plus a header). */
    private readonly snapshot: Uint8Array,
    private readonly ring: Uint8Array,
    /** Most bytes the tree may take. */
    private readonly limit: number,
  ) {
    this.ringMask = ring.length - 1;
    this.snapDv = new DataView(snapshot.buffer, snapshot.byteOffset, snapshot.byteLength);
  }

  private w(i: number): number {
    return Atomics.load(this.words, this.base + i) >>> 0;
  }
  private set(i: number, v: number): void {
    Atomics.store(this.words, this.base + i, v | 0);
  }

  /** A new store: `tree` is its first snapshot. */
  initialise(tree: Map<string, XsNode>): void {
    let bytes = 0;
    for (const [p, n] of tree) bytes += nodeBytes(p, n);
    this.set(TREE_BYTES, bytes);
    this.tree = tree;
    this.writeSnapshot();
  }

  /** Under the lock: this thread's copy, up to date. */
  refresh(op: string): void {
    const seq = this.w(MUT_SEQ);
    if (seq === this.seq) return;
    const head = this.w(MUT_HEAD);
    // Behind what the ring still holds (or never loaded): start from the snapshot.
    if (this.seq < 0 || ((head - this.pos) >>> 0) > this.ring.length) this.loadSnapshot(op);
    while (this.seq !== seq) this.replayOne(op);
  }

  /**
   * Under the lock, after refresh: make `writes` (path → node, or null for removed), each
   * node stamped with `gen`. ENOSPC, changing nothing, when the tree would outgrow the store.
   */
  apply(op: string, domid: DomId, writes: ReadonlyMap<string, XsNode | null>, gen: number): void {
    let bytes = this.w(TREE_BYTES);
    for (const [p, n] of writes) {
      const old = this.tree.get(p);
      if (old !== undefined) bytes -= nodeBytes(p, old);
      if (n !== null) bytes += nodeBytes(p, n);
    }
    if (bytes > this.limit) {
      throw new PlatformError("ENOSPC", op, `domain ${domid}: the xenstore tree would take ${bytes} bytes; the store holds ${this.limit}`);
    }
    for (const [p, n] of writes) {
      const node = n === null ? null : { ...n, gen };
      if (node === null) this.tree.delete(p);
      else this.tree.set(p, node);
      this.append(p, node);
    }
    this.set(TREE_BYTES, bytes);
    this.seq = this.w(MUT_SEQ);
    this.pos = this.w(MUT_HEAD);
    // Half a ring since the last snapshot: take one, so the ring keeps all that follows it.
    if (((this.pos - this.w(SNAP_HEAD)) >>> 0) > this.ring.length / 2) this.writeSnapshot();
  }

  private append(path: string, node: XsNode | null): void {
    const len = (REC_HEADER + nodeBytes(path, node) + 3) & ~3;
    if (len > this.ring.length / 2) throw new PlatformError("E2BIG", "xenstore.write", `a node of ${len} bytes does not fit the store's mutation log`);
    if (this.scratch.length < len) this.scratch = new Uint8Array(2 ** Math.ceil(Math.log2(len)));
    const dv = new DataView(this.scratch.buffer, 0, len);
    const seq = this.w(MUT_SEQ);
    dv.setUint32(0, len, true);
    dv.setUint32(4, seq, true);
    dv.setUint32(8, node === null ? 0 : 1, true);
    const wr = new NodeWriter(this.scratch.subarray(REC_HEADER, len), new DataView(this.scratch.buffer, REC_HEADER, len - REC_HEADER));
    wr.node(path, node);
    const head = this.w(MUT_HEAD);
    this.copyIn(head, this.scratch.subarray(0, len));
    this.set(MUT_HEAD, head + len);
    this.set(MUT_SEQ, seq + 1);
  }

  private replayOne(op: string): void {
    const hdr = this.copyOut(this.pos, REC_HEADER);
    const hv = new DataView(hdr.buffer, hdr.byteOffset, REC_HEADER);
    const len = hv.getUint32(0, true);
    if (hv.getUint32(4, true) !== this.seq || len < REC_HEADER || len > this.ring.length / 2) {
      throw new PlatformError("EINVAL", op, `the shared xenstore's mutation log is inconsistent at record ${this.seq}`);
    }
    const removed = hv.getUint32(8, true) === 0;
    const body = this.copyOut(this.pos + REC_HEADER, len - REC_HEADER);
    const rd = new NodeReader(body, new DataView(body.buffer, body.byteOffset, body.byteLength));
    const path = rd.path();
    if (removed) this.tree.delete(path);
    else this.tree.set(path, rd.node());
    this.pos = (this.pos + len) >>> 0;
    this.seq = (this.seq + 1) >>> 0;
  }

  private writeSnapshot(): void {
    const wr = new NodeWriter(this.snapshot.subarray(8), new DataView(this.snapshot.buffer, this.snapshot.byteOffset + 8, this.snapshot.byteLength - 8));
    for (const [p, n] of this.tree) wr.node(p, n);
    this.snapDv.setUint32(0, this.tree.size, true);
    this.set(SNAP_LEN, wr.pos);
    this.set(SNAP_SEQ, this.w(MUT_SEQ));
    this.set(SNAP_HEAD, this.w(MUT_HEAD));
    this.seq = this.w(MUT_SEQ);
    this.pos = this.w(MUT_HEAD);
  }

  private loadSnapshot(op: string): void {
    try {
      const count = this.snapDv.getUint32(0, true);
      const rd = new NodeReader(this.snapshot.subarray(8), new DataView(this.snapshot.buffer, this.snapshot.byteOffset + 8, this.snapshot.byteLength - 8));
      const tree = new Map<string, XsNode>();
      for (let i = 0; i < count; i++) {
        const p = rd.path();
        tree.set(p, rd.node());
      }
      this.tree = tree;
    } catch (e) {
      throw new PlatformError("EINVAL", op, `the shared xenstore snapshot does not decode: ${String(e)}`);
    }
    this.seq = this.w(SNAP_SEQ);
    this.pos = this.w(SNAP_HEAD);
  }

  private copyIn(pos: number, bytes: Uint8Array): void {
    const off = pos & this.ringMask;
    const first = Math.min(bytes.length, this.ring.length - off);
    this.ring.set(bytes.subarray(0, first), off);
    if (first < bytes.length) this.ring.set(bytes.subarray(first), 0);
  }

  /** `len` bytes at `pos`: a view when they do not wrap, else a copy. */
  private copyOut(pos: number, len: number): Uint8Array {
    const off = pos & this.ringMask;
    if (off + len <= this.ring.length) return this.ring.subarray(off, off + len);
    const out = new Uint8Array(len);
    const first = this.ring.length - off;
    out.set(this.ring.subarray(off));
    out.set(this.ring.subarray(0, len - first), first);
    return out;
  }
}
