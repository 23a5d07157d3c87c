/**
 * The one error type of the xenbus handshake. Whatever goes wrong while two domains negotiate a
 * vif (a peer's bad key, a wait that ran out, a xenstore refusal) arrives as a HandshakeError
 * naming the xenstore path and the value involved, so one log line is enough to diagnose it.
 */
import { ProtocolError } from "../../protocol/errors.ts";
import { PlatformError } from "../../platform/types.ts";

export type HandshakeErrorCode =
  | "TIMEOUT" // a wait ran past its bound
  | "ABORTED" // the caller's AbortSignal fired
  | "NO_RX_COPY" // the peer does not offer / request rx-copy (flip mode is not supported)
  | "BAD_KEY" // a key is missing or does not parse
  | "BAD_STATE" // a `state` node holds something that is not a XenbusState
  | "PEER_CLOSED" // the peer closed (or vanished) while we waited for it to connect
  | "GONE" // our own device directory was removed (the toolstack detached the vif)
  | "NO_DEVICE" // the device directory never appeared: no such vif (the message lists those that exist)
  | "XENSTORE"; // a xenstore operation failed; `cause` is the PlatformError (e.g. EAGAIN after the retries)

export class HandshakeError extends Error {
  override readonly name = "HandshakeError";
  constructor(
    readonly code: HandshakeErrorCode,
    /** The xenstore path involved (a key, a state node or a directory). */
    readonly path: string,
    /** The value read there; null when the node did not exist or no value applies. */
    readonly value: string | null,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${code}: ${path}${value === null ? "" : `=${JSON.stringify(value)}`}: ${detail}`, options);
  }

  /** A parse helper's ProtocolError (BAD_KEY / BAD_STATE) as a HandshakeError, kept as the cause. */
  static fromProtocol(e: ProtocolError, path: string, value: string | null): HandshakeError {
    const code = e.code === "BAD_STATE" ? "BAD_STATE" : "BAD_KEY";
    return new HandshakeError(code, path, value, e.message, { cause: e });
  }
}

/**
 * Anything thrown inside a handshake step, as a HandshakeError: ours pass through, a xenstore
 * PlatformError becomes XENSTORE (the original is the cause), anything else is rethrown as is
 * (a bug, not a handshake condition).
 */
export function asHandshakeError(e: unknown, path: string): unknown {
  if (e instanceof HandshakeError) return e;
  if (e instanceof PlatformError) return new HandshakeError("XENSTORE", path, null, e.message, { cause: e });
  if (e instanceof ProtocolError) return HandshakeError.fromProtocol(e, path, String(e.value));
  return e;
}
