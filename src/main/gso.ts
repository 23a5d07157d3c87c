/**
 * Sending a GSO frame (write's `gso` option): checked, then sent whole when the peer offered
 * GSO of its type, or cut into MSS-sized segments here when it did not (what a peer did not
 * offer is never put on the wire).
 */
import { MAX_PACKET_SIZE, NETRXF, NETTXF } from "../protocol/netif.ts";
import { parseTcpFrame, SegmentError, segmentTcp, setPartialTcpChecksum } from "../protocol/tcp-segment.ts";
import { packGso } from "../workers/frame-meta.ts";
import { NetError } from "./errors.ts";

/** What a write may say: "tcpv4" | "tcpv6", or 1 | 2 as `info.gso.type` carries it (a relay passes it on). */
export interface GsoOption {
  type: "tcpv4" | "tcpv6" | 1 | 2;
  /** The MSS: TCP payload bytes per segment, 1..65535. */
  size: number;
}

export interface CheckedGso {
  type: 1 | 2;
  size: number;
}

/** The `gso` write option, checked: null when absent (undefined or null). */
export function checkGso(v: unknown, method: string): CheckedGso | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "object") throw new NetError("BAD_ARGUMENT", `${method}: option gso must be { type, size }, got ${typeof v}`);
  const g = v as Record<string, unknown>;
  const t = g.type;
  const type = t === "tcpv4" || t === 1 ? 1 : t === "tcpv6" || t === 2 ? 2 : 0;
  if (type === 0) throw new NetError("BAD_ARGUMENT", `${method}: option gso.type must be "tcpv4", "tcpv6", 1 or 2, got ${typeof t === "string" ? JSON.stringify(t) : String(t)}`);
  const size = g.size;
  if (typeof size !== "number" || !Number.isInteger(size) || size < 1 || size > 0xffff) {
    throw new NetError("BAD_ARGUMENT", `${method}: option gso.size must be an integer in 1..65535 (the MSS), got ${typeof size === "number" ? size : typeof size}`);
  }
  return { type, size };
}

/** Largest GSO frame each way: a TX request's size is a u16; an RX packet may add its Ethernet header. */
export const GSO_MAX_TX = MAX_PACKET_SIZE;
export const GSO_MAX_RX = MAX_PACKET_SIZE + 14;

export type GsoPlan =
  /** One packet with a GSO extra: queue the frame with `meta`; `partial`: write the pseudo-header sum into its TCP checksum. */
  | { wire: true; meta: number; partial: boolean }
  /** Segments, each a complete TCP packet with a valid checksum, sent with `meta`. */
  | { wire: false; segments: Uint8Array[]; meta: number };

export interface GsoPeer {
  /** The peer takes GSO of this type now (it offered it, and the session does scatter-gather). */
  takes: boolean;
  /** Netfront sends on TX (its flags), Netback on RX. */
  dir: "tx" | "rx";
  /** Largest non-GSO frame now (maxFrameSize). */
  maxFrame: number;
}

/**
 * How to send `frame` with `gso`: whole, flagged csum_blank|data_validated (a CHECKSUM_PARTIAL
 * packet, as Linux sends one) when the peer takes it; else in segments, flagged
 * data_validated (each checksum complete). Throws NetError naming what is wrong.
 */
export function planGso(frame: Uint8Array, gso: CheckedGso, csumBlank: boolean, peer: GsoPeer, method: string): GsoPlan {
  const max = peer.dir === "tx" ? GSO_MAX_TX : GSO_MAX_RX;
  if (frame.byteLength > max) throw new NetError("FRAME_TOO_LONG", `${method}: a GSO frame may have at most ${max} bytes, got ${frame.byteLength}`);
  const blank = peer.dir === "tx" ? NETTXF.csumBlank : NETRXF.csumBlank;
  const valid = peer.dir === "tx" ? NETTXF.dataValidated : NETRXF.dataValidated;
  if (peer.takes) {
    const f = parseTcpFrame(frame, 0, frame.byteLength, gso.type);
    if (f instanceof SegmentError) throw notTcp(method, f);
    return { wire: true, meta: blank | valid | packGso(gso.type, gso.size), partial: !csumBlank };
  }
  const segments = segmentTcp(frame, gso.size, gso.type);
  if (segments instanceof SegmentError) throw notTcp(method, segments);
  const largest = segments[0]!.byteLength;
  if (largest > peer.maxFrame) {
    throw new NetError("FRAME_TOO_LONG", `${method}: the peer takes no GSO of this type, and gso.size ${gso.size} makes segments of ${largest} bytes, more than its maxFrameSize ${peer.maxFrame}`);
  }
  return { wire: false, segments, meta: valid };
}

/** Turn a frame queued for the wire into a CHECKSUM_PARTIAL one (its checksum field the pseudo-header sum). */
export function makePartial(dst: Uint8Array, off: number, len: number): void {
  setPartialTcpChecksum(dst, off, len);
}

function notTcp(method: string, e: SegmentError): NetError {
  return new NetError("BAD_ARGUMENT", `${method}: option gso needs a TCP frame of its type: ${e.message}`, { cause: e });
}
