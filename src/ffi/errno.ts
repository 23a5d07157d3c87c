/**
 * errno numbers and names, and the PlatformError they become. Pure (no bun:ffi), so the
 * xenstore codec can use it for the names xenstored sends in ERROR replies (`EACCES\0`).
 * The table is the platform's (node:os, node:util), not ours.
 */
import { constants } from "node:os";
import { getSystemErrorName } from "node:util";
import { PlatformError, type PlatformErrorCode } from "./platform-error.ts";

/**
 * Linux errnos the drivers can return that libuv's table (os.constants.errno and
 * getSystemErrorName) does not have, or not both ways: the C cross-check holds them to <errno.h>.
 */
const LINUX_ONLY: Readonly<Record<string, number>> = { EBADFD: 77, ESHUTDOWN: 108 };
const LINUX_ONLY_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(LINUX_ONLY).map(([k, v]) => [v, k]));

/**
 * name → errno number: the platform's own table (os.constants.errno). The ffi layer runs only
 * on Linux (real Xen), where these are the kernel's numbers; C's <errno.h> is cross-checked
 * against them in test/xen-xenstore-wire.test.ts.
 */
export const ERRNO: Readonly<Record<string, number>> = { ...LINUX_ONLY, ...constants.errno };

/** The name of an errno number (util.getSystemErrorName); `E<n>` for one the system does not know. */
export function errnoName(errno: number): string {
  if (!Number.isInteger(errno) || errno <= 0) return `E${errno}`;
  const name = getSystemErrorName(-errno);
  return /^E[A-Z0-9]+$/.test(name) ? name : (LINUX_ONLY_NAMES[errno] ?? `E${errno}`);
}

const SAME: ReadonlySet<string> = new Set<PlatformErrorCode>([
  "EPERM",
  "EACCES",
  "ENOENT",
  "EBUSY",
  "EINVAL",
  "ENOSPC",
  "EAGAIN",
  "EEXIST",
  "E2BIG",
  "ETIMEDOUT",
]);

/**
 * PlatformErrorCode is a closed set; an errno outside it maps to the nearest meaning. The
 * exact errno name always stays on the error (ErrnoError.errnoName, and the message).
 */
const NEAREST: Readonly<Record<string, PlatformErrorCode>> = {
  ESRCH: "ENOENT",
  ENXIO: "ENOENT",
  ENODEV: "ENOENT", // the device (or its driver) is absent
  ENODATA: "ENOENT",
  ENOMEM: "ENOSPC",
  ENOBUFS: "ENOSPC",
  ENFILE: "ENOSPC",
  EMFILE: "ENOSPC",
  EDQUOT: "ENOSPC",
  EINTR: "EAGAIN",
  EINPROGRESS: "EAGAIN",
  EALREADY: "EAGAIN",
  EROFS: "EPERM",
  ETIME: "ETIMEDOUT",
  EMSGSIZE: "E2BIG",
  ENAMETOOLONG: "E2BIG",
  EFBIG: "E2BIG",
  EOVERFLOW: "E2BIG",
  ENOTEMPTY: "EBUSY",
  EISCONN: "EEXIST",
  EADDRINUSE: "EBUSY",
  EPIPE: "ECLOSED",
  ECONNRESET: "ECLOSED",
  ECONNREFUSED: "ECLOSED",
  ENOTCONN: "ECLOSED",
  ESHUTDOWN: "ECLOSED",
  EBADF: "ECLOSED",
  EBADFD: "ECLOSED",
  ECANCELED: "ECLOSED",
};

/** The PlatformErrorCode for an errno name (EINVAL for anything unknown: EIO, EFAULT, ENOTTY, ...). */
export function platformCode(name: string): PlatformErrorCode {
  if (SAME.has(name)) return name as PlatformErrorCode;
  return NEAREST[name] ?? "EINVAL";
}

/**
 * A system call, ioctl or xenstore request that failed with an errno. `code` is the
 * PlatformErrorCode (see platformCode); `errnoName`/`errno` say exactly what the kernel or
 * xenstored answered (errno is -1 when xenstored sent a name this table does not know).
 */
export class ErrnoError extends PlatformError {
  readonly errno: number;
  readonly errnoName: string;
  constructor(op: string, errnoOrName: number | string, detail: string) {
    const name = typeof errnoOrName === "number" ? errnoName(errnoOrName) : errnoOrName;
    const code = platformCode(name);
    super(code, op, name === code ? detail : `${detail} (${name})`);
    this.errnoName = name;
    this.errno = typeof errnoOrName === "number" ? errnoOrName : (ERRNO[name] ?? -1);
  }
}
