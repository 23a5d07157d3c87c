/**
 * Xenstore permissions as C xenstored applies them (perm_for_conn): domain 0 and the node's
 * owner (the first entry) get everything; another domain gets its own entry if it has one,
 * else the first entry's access, which is the default for everyone.
 */
import { PlatformError, type DomId, type Perm, type PermAccess } from "../types.ts";

export interface Access {
  read: boolean;
  write: boolean;
  owner: boolean;
}

const FULL: Access = { read: true, write: true, owner: true };
const BY_LETTER: Record<PermAccess, Access> = {
  n: { read: false, write: false, owner: false },
  r: { read: true, write: false, owner: false },
  w: { read: false, write: true, owner: false },
  b: { read: true, write: true, owner: false },
};

/** Domain 0 is the toolstack's domain and bypasses every check, as in xenstored. */
export function isPrivileged(domid: DomId): boolean {
  return domid === 0;
}

export function accessFor(domid: DomId, perms: readonly Perm[]): Access {
  const first = perms[0];
  if (isPrivileged(domid) || first === undefined || first.domid === domid) return FULL;
  for (let i = 1; i < perms.length; i++) {
    const p = perms[i];
    if (p !== undefined && p.domid === domid) return BY_LETTER[p.access];
  }
  return BY_LETTER[first.access];
}

/** `n0,r5`: compact form for the shared tree and the change log (xenstored's own letters). */
export function permsToString(perms: readonly Perm[]): string {
  return perms.map((p) => `${p.access}${p.domid}`).join(",");
}

export function permsFromString(s: string): Perm[] {
  return s.split(",").map((e) => ({ access: e[0] as PermAccess, domid: Number(e.slice(1)) }));
}

const MAX_DOMID = 0xffff;

/** Validate a caller's perms list (setPerms) and copy it, so later mutation by the caller is harmless. */
export function checkPerms(op: string, domid: DomId, path: string, perms: unknown): Perm[] {
  const bad = (why: string) => new PlatformError("EINVAL", op, `domain ${domid}: invalid perms for ${path}: ${why}`);
  if (!Array.isArray(perms) || perms.length === 0) throw bad("need a non-empty list (the first entry names the owner)");
  return perms.map((p: unknown, i) => {
    const e = p as Partial<Perm> | null;
    if (typeof e !== "object" || e === null) throw bad(`entry ${i} is not {domid, access}`);
    const { domid: d, access: a } = e;
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0 || d > MAX_DOMID) throw bad(`entry ${i}: domid ${String(d)}`);
    if (a !== "n" && a !== "r" && a !== "w" && a !== "b") throw bad(`entry ${i}: access ${String(a)} (n, r, w or b)`);
    return { domid: d, access: a };
  });
}
