/**
 * The simulated xenstore's nodes as bytes, for the two places they are shared between threads:
 * the snapshot of the whole tree and the log of changed nodes (xenstore-replica.ts). Each node
 * is length-prefixed UTF-8: path, value, perms, then its generation and children. Its size is
 * known before it is written (`nodeBytes`), which is also what the store's capacity counts.
 */
import { permsFromString, permsToString } from "./xenstore-perms.ts";
import type { XsNode } from "./xenstore-overlay.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function utf8Length(s: string): number {
  // ASCII, the common case, costs a scan; anything else is measured exactly.
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s, "utf8");
  return s.length;
}

/** Bytes `node` takes at `path` (a removal: just the path). */
export function nodeBytes(path: string, node: XsNode | null): number {
  let n = 4 + utf8Length(path);
  if (node === null) return n;
  n += 4 + utf8Length(node.value) + 4 + utf8Length(permsToString(node.perms)) + 4 + 4;
  for (const c of node.children) n += 4 + utf8Length(c);
  return n;
}

/** Writes into a DataView over a byte array, advancing a position. */
export class NodeWriter {
  pos = 0;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly dv: DataView,
  ) {}

  private str(s: string): void {
    const r = enc.encodeInto(s, this.bytes.subarray(this.pos + 4));
    this.dv.setUint32(this.pos, r.written, true);
    this.pos += 4 + r.written;
  }

  /** A node (null: removed) at `path`; exactly nodeBytes(path, node) bytes. */
  node(path: string, node: XsNode | null): void {
    this.str(path);
    if (node === null) return;
    this.str(node.value);
    this.str(permsToString(node.perms));
    this.dv.setInt32(this.pos, node.gen, true);
    this.dv.setUint32(this.pos + 4, node.children.length, true);
    this.pos += 8;
    for (const c of node.children) this.str(c);
  }
}

export class NodeReader {
  pos = 0;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly dv: DataView,
  ) {}

  private str(): string {
    const len = this.dv.getUint32(this.pos, true);
    const s = dec.decode(this.bytes.subarray(this.pos + 4, this.pos + 4 + len));
    this.pos += 4 + len;
    return s;
  }

  path(): string {
    return this.str();
  }

  /** The node after a path (for a record that is not a removal). */
  node(): XsNode {
    const value = this.str();
    const perms = permsFromString(this.str());
    const gen = this.dv.getInt32(this.pos, true);
    const count = this.dv.getUint32(this.pos + 4, true);
    this.pos += 8;
    const children: string[] = [];
    for (let i = 0; i < count; i++) children.push(this.str());
    return { value, perms, gen, children };
  }
}
