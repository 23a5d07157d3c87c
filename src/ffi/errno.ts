/**
 * Linux errno numbers and names, and the PlatformError they become. Pure (no bun:ffi), so the
 * xenstore codec can use it for the names xenstored sends in ERROR replies (`EACCES\0`).
 *
 * The numbers are the asm-generic ones, which x86_64 and aarch64 share.
 */
import { PlatformError, type PlatformErrorCode } from "../platform/types.ts";

/** errno number → name, for the errors a driver of /dev/xen/* and xenstore can meet. */
export const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  10: "ECHILD",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  25: "ENOTTY",
  27: "EFBIG",
  28: "ENOSPC",
  29: "ESPIPE",
  30: "EROFS",
  32: "EPIPE",
  34: "ERANGE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  61: "ENODATA",
  62: "ETIME",
  75: "EOVERFLOW",
  77: "EBADFD",
  88: "ENOTSOCK",
  90: "EMSGSIZE",
  95: "EOPNOTSUPP",
  98: "EADDRINUSE",
  104: "ECONNRESET",
  105: "ENOBUFS",
  106: "EISCONN",
  107: "ENOTCONN",
  108: "ESHUTDOWN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  114: "EALREADY",
  115: "EINPROGRESS",
  122: "EDQUOT",
  125: "ECANCELED",
};

/** name → errno number (the inverse of ERRNO_NAMES). */
export const ERRNO: Readonly<Record<string, number>> = Object.fromEntries(
  Object.entries(ERRNO_NAMES).map(([n, name]) => [name, Number(n)]),
);

/** The name of an errno number; `E<n>` for one not in the table. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `E${errno}`;
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
