/**
 * The error every hypervisor operation fails with, on both platforms. It lives here, at the
 * bottom beside the ffi that raises it most, so that ffi/ needs nothing from the layers above
 * it; platform/types.ts re-exports it as part of the platform interface.
 */

export type PlatformErrorCode =
  | "EPERM" // not allowed (access flags, privilege)
  | "EACCES" // xenstore permission denied
  | "ENOENT" // no such grant, port, node or domain
  | "EBUSY" // still in use (ending a grant the peer maps)
  | "EINVAL" // malformed argument
  | "ENOSPC" // table full (grants, ports, pages)
  | "EAGAIN" // xenstore transaction conflict: retry
  | "EEXIST"
  | "E2BIG" // value or path too long
  | "ETIMEDOUT"
  | "ECLOSED"; // the handle was closed

/** A hypervisor operation refused: names the operation and what it was given. */
export class PlatformError extends Error {
  override readonly name = "PlatformError";
  constructor(
    readonly code: PlatformErrorCode,
    /** e.g. `gnttab.map`, `evtchn.notify`, `xenstore.write`. */
    readonly op: string,
    /** What went wrong, without the op and code the message starts with. */
    readonly detail: string,
  ) {
    super(`${op}: ${code}: ${detail}`);
  }
}
