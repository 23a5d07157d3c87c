/** Errors of the public API. Peer and hypervisor errors keep their own types (ProtocolError, PlatformError). */

export type NetErrorCode =
  | "FRAME_TOO_LONG"
  | "FRAME_TOO_SHORT"
  | "BAD_ARGUMENT"
  | "DISCONNECTED" // the device was disconnected, or its peer broke and it shut down
  | "TIMEOUT"
  | "ABORTED" // the caller's AbortSignal ended a write, a wait for room, or a connect
  | "UNSUPPORTED" // the peer lacks something this version needs
  | "IN_USE" // the device is claimed by another Netfront or Netback on this machine
  | "REMOVED"; // the toolstack removed the vif (its xenstore directory is gone): it cannot come back

export class NetError extends Error {
  override readonly name = "NetError";
  constructor(
    readonly code: NetErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${code}: ${message}`, options);
  }
}
