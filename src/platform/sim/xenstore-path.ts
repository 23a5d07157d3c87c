/**
 * Xenstore node names, checked the way C xenstored checks them (tools/xenstored/core.c), so a
 * driver that would be refused by real Xen is refused here too.
 */
import { PlatformError, type DomId } from "../types.ts";

/** XENSTORE_PAYLOAD_MAX: a whole request body (a write is `path\0value`) fits in this. */
export const XS_PAYLOAD_MAX = 4096;
/** XENSTORE_REL_PATH_MAX: xenstored's default limit on a path below /local/domain/<id>/. */
export const XS_REL_PATH_MAX = 2048;

// xenstored accepts exactly these characters ("-/_@" and alphanumerics); notably no '.'.
const VALID_CHARS = /^[A-Za-z0-9\-/_@]*$/;
const DOMAIN_PREFIX = /^\/local\/domain\/\d{1,5}\//;

const utf8 = new TextEncoder();

export function byteLength(s: string): number {
  // Values are rarely non-ASCII; skip the encoder when every char is one byte.
  return /^[\x00-\x7f]*$/.test(s) ? s.length : utf8.encode(s).length;
}

/**
 * Throws EINVAL (E2BIG for length) unless `path` is an absolute node name, or, when
 * `allowSpecial`, a special watch name such as `@introduceDomain`.
 */
export function checkPath(op: string, domid: DomId, path: unknown, allowSpecial = false): string {
  const bad = (why: string) =>
    new PlatformError("EINVAL", op, `domain ${domid}: invalid path ${JSON.stringify(path)}: ${why}`);
  if (typeof path !== "string") throw bad("not a string");
  const special = allowSpecial && path.startsWith("@");
  if (!special && !path.startsWith("/")) throw bad("must be absolute");
  if (path.length > 1 && path.endsWith("/")) throw bad("trailing '/'");
  if (path.includes("//")) throw bad("empty component");
  if (!VALID_CHARS.test(path)) throw bad("only A-Z a-z 0-9 - / _ @ are allowed");
  const rel = path.length - (DOMAIN_PREFIX.exec(path)?.[0].length ?? 0);
  if (rel > XS_REL_PATH_MAX) {
    throw new PlatformError("E2BIG", op, `domain ${domid}: path of ${path.length} chars is too long (${XS_REL_PATH_MAX} max below /local/domain/<id>/): ${path.slice(0, 64)}...`);
  }
  return path;
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

export function childOf(parent: string, name: string): string {
  return parent === "/" ? `/${name}` : `${parent}/${name}`;
}

/** True when `path` is `root` or lies below it. */
export function isAtOrBelow(path: string, root: string): boolean {
  return root === "/" ? path.startsWith("/") : path === root || path.startsWith(`${root}/`);
}
