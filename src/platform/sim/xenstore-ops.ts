/**
 * The xenstore operations, as one domain performs them, on an Overlay. Every check (path,
 * size, permission) happens before the first change, so a refused operation leaves nothing
 * behind even inside a transaction. Semantics follow C xenstored's do_read/do_write/... .
 */
import { PlatformError, type DomId, type Perm } from "../types.ts";
import type { Overlay, XsNode } from "./xenstore-overlay.ts";
import { baseName, byteLength, checkPath, childOf, parentOf, XS_PAYLOAD_MAX } from "./xenstore-path.ts";
import { accessFor, checkPerms, isPrivileged, type Access } from "./xenstore-perms.ts";

type Need = "read" | "write" | "owner";

function denied(op: string, domid: DomId, need: Need, path: string): PlatformError {
  const what = need === "owner" ? "change the permissions of" : need;
  return new PlatformError("EACCES", op, `domain ${domid} may not ${what} ${path}`);
}

function allows(a: Access, need: Need): boolean {
  return need === "read" ? a.read : need === "write" ? a.write : a.write && a.owner;
}

function nearestExisting(ov: Overlay, path: string): { path: string; node: XsNode } {
  let p = path;
  for (;;) {
    p = parentOf(p);
    const n = ov.get(p);
    if (n !== undefined) return { path: p, node: n };
    // The root always exists; reaching it missing means the tree was damaged.
    if (p === "/") throw new PlatformError("EINVAL", "xenstore", "the root node is missing");
  }
}

/**
 * The node if `domid` may `need` it; undefined if it does not exist and the nearest existing
 * ancestor would allow it (otherwise EACCES, so a refusal does not reveal whether a node
 * exists: xenstored's errno_from_parents).
 */
function lookup(ov: Overlay, op: string, domid: DomId, path: string, need: Need): XsNode | undefined {
  const node = ov.get(path);
  if (node !== undefined) {
    if (!allows(accessFor(domid, node.perms), need)) throw denied(op, domid, need, path);
    return node;
  }
  if (path !== "/") {
    const anc = nearestExisting(ov, path);
    const a = accessFor(domid, anc.node.perms);
    if (!(need === "read" ? a.read : a.write)) throw denied(op, domid, need, path);
  }
  return undefined;
}

function noEntry(op: string, domid: DomId, path: string): PlatformError {
  return new PlatformError("ENOENT", op, `domain ${domid}: no node ${path}`);
}

/**
 * Create `path` and its missing parents. Each new node inherits its parent's perms; one
 * created by an unprivileged domain is owned by that domain (xenstored's construct_node).
 */
function create(ov: Overlay, domid: DomId, path: string, value: string): XsNode {
  const missing: string[] = [];
  let p = path;
  let parent: XsNode | undefined;
  for (;;) {
    missing.push(p);
    p = parentOf(p);
    parent = ov.get(p);
    if (parent !== undefined) break;
  }
  let node: Omit<XsNode, "gen"> = parent;
  for (let i = missing.length - 1; i >= 0; i--) {
    const child = missing[i] as string;
    ov.put(p, { ...node, children: [...node.children, baseName(child)] });
    const perms: Perm[] = node.perms.map((e) => ({ ...e }));
    const owner = perms[0];
    if (owner !== undefined && !isPrivileged(domid)) perms[0] = { domid, access: owner.access };
    node = { value: i === 0 ? value : "", perms, children: [] };
    ov.put(child, node);
    p = child;
  }
  return ov.get(path) as XsNode;
}

function readersOf(ov: Overlay, path: string, node: XsNode): (readonly Perm[])[] {
  const parent = path === "/" ? undefined : ov.get(parentOf(path));
  return parent === undefined ? [node.perms] : [node.perms, parent.perms];
}

export function xsRead(ov: Overlay, domid: DomId, path: string): string | null {
  const op = "xenstore.read";
  return lookup(ov, op, domid, checkPath(op, domid, path), "read")?.value ?? null;
}

export function xsDirectory(ov: Overlay, domid: DomId, path: string): string[] {
  const op = "xenstore.directory";
  const node = lookup(ov, op, domid, checkPath(op, domid, path), "read");
  if (node === undefined) throw noEntry(op, domid, path);
  return [...node.children];
}

export function xsGetPerms(ov: Overlay, domid: DomId, path: string): Perm[] {
  const op = "xenstore.getPerms";
  const node = lookup(ov, op, domid, checkPath(op, domid, path), "read");
  if (node === undefined) throw noEntry(op, domid, path);
  return node.perms.map((p) => ({ ...p }));
}

export function xsWrite(ov: Overlay, domid: DomId, path: string, value: string): void {
  const op = "xenstore.write";
  checkPath(op, domid, path);
  if (typeof value !== "string") throw new PlatformError("EINVAL", op, `domain ${domid}: value for ${path} is not a string`);
  // On the wire a write is `path\0value` in one payload: that is the real limit.
  const size = byteLength(path) + 1 + byteLength(value);
  if (size > XS_PAYLOAD_MAX) {
    throw new PlatformError("E2BIG", op, `domain ${domid}: ${path}: path + NUL + value is ${size} bytes, more than ${XS_PAYLOAD_MAX}`);
  }
  const existing = lookup(ov, op, domid, path, "write");
  const node = existing === undefined ? create(ov, domid, path, value) : { ...existing, value };
  if (existing !== undefined) ov.put(path, node);
  ov.changes.push({ kind: "write", path, readers: readersOf(ov, path, node) });
}

export function xsMkdir(ov: Overlay, domid: DomId, path: string): void {
  const op = "xenstore.mkdir";
  if (lookup(ov, op, domid, checkPath(op, domid, path), "write") !== undefined) return;
  const node = create(ov, domid, path, "");
  ov.changes.push({ kind: "write", path, readers: readersOf(ov, path, node) });
}

export function xsRm(ov: Overlay, domid: DomId, path: string): void {
  const op = "xenstore.rm";
  checkPath(op, domid, path);
  if (path === "/") throw new PlatformError("EINVAL", op, `domain ${domid}: the root cannot be removed`);
  const node = lookup(ov, op, domid, path, "write");
  if (node === undefined) return;
  const readers = readersOf(ov, path, node);
  const parentPath = parentOf(path);
  const parent = ov.get(parentPath) as XsNode;
  const name = baseName(path);
  ov.put(parentPath, { ...parent, children: parent.children.filter((c) => c !== name) });
  const stack = [path];
  for (let p = stack.pop(); p !== undefined; p = stack.pop()) {
    for (const c of ov.get(p)?.children ?? []) stack.push(childOf(p, c));
    ov.remove(p);
  }
  ov.changes.push({ kind: "rm", path, readers });
}

export function xsSetPerms(ov: Overlay, domid: DomId, path: string, perms: Perm[]): void {
  const op = "xenstore.setPerms";
  checkPath(op, domid, path);
  const next = checkPerms(op, domid, path, perms);
  const node = lookup(ov, op, domid, path, "owner");
  if (node === undefined) throw noEntry(op, domid, path);
  if (!isPrivileged(domid) && next[0]?.domid !== node.perms[0]?.domid) {
    throw new PlatformError("EPERM", op, `domain ${domid} may not give ${path} to domain ${next[0]?.domid}`);
  }
  const updated = { ...node, perms: next };
  ov.put(path, updated);
  // Domains that just lost access hear about it too (xenstored passes the old perms).
  ov.changes.push({ kind: "write", path, readers: [...readersOf(ov, path, updated), node.perms] });
}
