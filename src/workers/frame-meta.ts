/**
 * The u32 that travels with each frame in a queue: the direction's wire checksum flags in the
 * low byte, and what a GSO extra-info slot said (type, segment size) above them.
 */
import type { ExtraInfo } from "../protocol/extra-info.ts";
import { EXTRA_TYPE } from "../protocol/netif.ts";

const GSO_TYPE_SHIFT = 8;
const GSO_SIZE_SHIFT = 16;

export function packMeta(flags: number, extras: readonly ExtraInfo[]): number {
  let meta = flags & 0xff;
  for (const e of extras) {
    if (e.type === EXTRA_TYPE.gso) meta |= ((e.gsoType & 0xff) << GSO_TYPE_SHIFT) | ((e.size & 0xffff) << GSO_SIZE_SHIFT);
  }
  return meta >>> 0;
}

export function metaFlags(meta: number): number {
  return meta & 0xff;
}

/** The GSO extra's type (1 tcpv4, 2 tcpv6) and segment size, or null. */
export function metaGso(meta: number): { type: number; size: number } | null {
  const type = (meta >>> GSO_TYPE_SHIFT) & 0xff;
  return type === 0 ? null : { type, size: meta >>> GSO_SIZE_SHIFT };
}
