/**
 * Nodes, and the copy-on-write layer every operation runs on.
 *
 * A plain operation runs on an Overlay over the shared tree and is applied under the same lock
 * hold. A transaction keeps one Overlay for its whole life: it records the generation of every
 * node it touched (first access) so the commit can tell whether someone else changed any of
 * them since, which is how C xenstored detects conflicts.
 */
import type { Perm } from "../types.ts";

export interface XsNode {
  readonly value: string;
  readonly perms: readonly Perm[];
  /** Global generation of the commit that last changed this node (value, perms or children). */
  readonly gen: number;
  /** Children's names, in creation order (the order xenstored lists them). */
  readonly children: readonly string[];
}

/** Generation recorded for a node that did not exist when first accessed. */
export const ABSENT = -1;
/** Placeholder in an overlay; the commit stamps its own generation. */
export const UNCOMMITTED = -2;

export type ChangeKind = "write" | "rm";

/**
 * One entry for the change log. `readers` lists perms any of which lets a domain see the event
 * (xenstored: the node's, its parent's, and for setPerms the old ones); null lets everyone see it.
 */
export interface Change {
  readonly kind: ChangeKind;
  readonly path: string;
  readonly readers: readonly (readonly Perm[])[] | null;
}

export type NodeLookup = (path: string) => XsNode | undefined;

export class Overlay {
  /** Path → new node, or null for removed. Insertion order is the order of the operations. */
  readonly writes = new Map<string, XsNode | null>();
  /** Path → generation when first read from the base (ABSENT if missing). */
  readonly accessed = new Map<string, number>();
  readonly changes: Change[] = [];

  constructor(private readonly base: NodeLookup) {}

  get(path: string): XsNode | undefined {
    const w = this.writes.get(path);
    if (w !== undefined) return w ?? undefined;
    const n = this.base(path);
    if (!this.accessed.has(path)) this.accessed.set(path, n?.gen ?? ABSENT);
    return n;
  }

  put(path: string, node: Omit<XsNode, "gen">): void {
    this.writes.set(path, { ...node, gen: UNCOMMITTED });
  }

  remove(path: string): void {
    this.writes.set(path, null);
  }

  /** Take over the writes and changes of an operation that ran on top of this overlay. */
  absorb(op: Overlay): void {
    for (const [p, n] of op.writes) this.writes.set(p, n);
    this.changes.push(...op.changes);
  }
}
