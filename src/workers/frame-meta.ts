/**
 * The u32 that travels with each frame in a queue: the direction's wire checksum flags in the
 * low byte, and what a GSO extra-info slot said (type, segment size) above them.
 */
import type { ExtraInfo } from "../protocol/extra-info.ts";
import { EXTRA_TYPE } from "../protocol/netif.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { parseTcpFrame, SegmentError } from "../protocol/tcp-segment.ts";

const GSO_TYPE_SHIFT = 8;
const GSO_SIZE_SHIFT = 16;

export function packMeta(flags: number, extras: readonly ExtraInfo[]): number {
  let meta = flags & 0xff;
  for (const e of extras) {
    if (e.type === EXTRA_TYPE.gso) meta |= ((e.gsoType & 0xff) << GSO_TYPE_SHIFT) | ((e.size & 0xffff) << GSO_SIZE_SHIFT);
  }
  return meta >>> 0;
}

/** The GSO bits of a meta word for a frame to send as one GSO packet (type 1 or 2, MSS 1..65535). */
export function packGso(type: number, size: number): number {
  return (((type & 0xff) << GSO_TYPE_SHIFT) | ((size & 0xffff) << GSO_SIZE_SHIFT)) >>> 0;
}

export function metaFlags(meta: number): number {
  return meta & 0xff;
}

/** The GSO extra's type (1 tcpv4, 2 tcpv6) and segment size, or null. */
export function metaGso(meta: number): { type: number; size: number } | null {
  const type = (meta >>> GSO_TYPE_SHIFT) & 0xff;
  return type === 0 ? null : { type, size: meta >>> GSO_SIZE_SHIFT };
}

/**
 * A frame the peer sent with a GSO extra must be the TCP packet of that type, or no stack can
 * segment it (Linux drops it when its checksum setup fails): the reason, or null when it is.
 */
export function badGsoFrame(data: Uint8Array, off: number, len: number, meta: number, field: string): ProtocolError | null {
  const type = (meta >>> GSO_TYPE_SHIFT) & 0xff;
  if (type === 0) return null;
  const f = parseTcpFrame(data, off, len, type);
  return f instanceof SegmentError ? new ProtocolError("BAD_GSO", field, f.code, `a GSO frame that is not TCP of its type: ${f.message}`) : null;
}
