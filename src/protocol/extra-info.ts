/**
 * netif_extra_info: 8 bytes that overlay a request or response slot, after a slot flagged
 * extra_info. type u8 @0, flags u8 @1 (MORE: another extra follows), a union @2.
 */
import { ProtocolError } from "./errors.ts";
import { EXTRA_FLAG_MORE, EXTRA_TYPE, EXTRA_TYPE_MAX, GSO_TYPE } from "./netif.ts";

export const EXTRA_INFO_SIZE = 8;
export const EXTRA_INFO = {
  type: 0,
  flags: 1,
  gso: { size: 2, type: 4, pad: 5, features: 6 },
  mcast: { addr: 2 },
  hash: { type: 2, alg: 3, value: 4 },
} as const;

export interface GsoExtra {
  type: typeof EXTRA_TYPE.gso;
  /** Maximum segment size. */
  size: number;
  gsoType: number;
  features: number;
}
export interface McastExtra {
  type: typeof EXTRA_TYPE.mcastAdd | typeof EXTRA_TYPE.mcastDel;
  addr: Uint8Array; // 6 bytes, copied out of the slot
}
export interface HashExtra {
  type: typeof EXTRA_TYPE.hash;
  hashType: number;
  alg: number;
  value: number; // u32, little-endian on the wire as the four bytes of value[4]
}
export type ExtraInfo = GsoExtra | McastExtra | HashExtra;

/** Write one extra-info slot; `more` sets the MORE flag. */
export function encodeExtraInfo(v: DataView, off: number, e: ExtraInfo, more: boolean): void {
  for (let i = 0; i < EXTRA_INFO_SIZE; i++) v.setUint8(off + i, 0);
  v.setUint8(off + EXTRA_INFO.type, e.type);
  v.setUint8(off + EXTRA_INFO.flags, more ? EXTRA_FLAG_MORE : 0);
  switch (e.type) {
    case EXTRA_TYPE.gso:
      v.setUint16(off + EXTRA_INFO.gso.size, e.size, true);
      v.setUint8(off + EXTRA_INFO.gso.type, e.gsoType);
      v.setUint16(off + EXTRA_INFO.gso.features, e.features, true);
      break;
    case EXTRA_TYPE.mcastAdd:
    case EXTRA_TYPE.mcastDel:
      for (let i = 0; i < 6; i++) v.setUint8(off + EXTRA_INFO.mcast.addr + i, e.addr[i] ?? 0);
      break;
    case EXTRA_TYPE.hash:
      v.setUint8(off + EXTRA_INFO.hash.type, e.hashType);
      v.setUint8(off + EXTRA_INFO.hash.alg, e.alg);
      v.setUint32(off + EXTRA_INFO.hash.value, e.value, true);
      break;
  }
}

export interface DecodedExtra {
  extra: ExtraInfo;
  more: boolean;
}

/** Decode and check one extra-info slot: an unknown type or a malformed GSO is a typed error. */
export function decodeExtraInfo(v: DataView, off: number, field = "extra_info"): DecodedExtra | ProtocolError {
  const type = v.getUint8(off + EXTRA_INFO.type);
  const flags = v.getUint8(off + EXTRA_INFO.flags);
  const more = (flags & EXTRA_FLAG_MORE) !== 0;
  switch (type) {
    case EXTRA_TYPE.gso: {
      const size = v.getUint16(off + EXTRA_INFO.gso.size, true);
      const gsoType = v.getUint8(off + EXTRA_INFO.gso.type);
      if (gsoType !== GSO_TYPE.tcpv4 && gsoType !== GSO_TYPE.tcpv6) {
        return new ProtocolError("BAD_GSO", `${field}.gso.type`, gsoType, "expected 1 (tcpv4) or 2 (tcpv6)");
      }
      if (size === 0) {
        return new ProtocolError("BAD_GSO", `${field}.gso.size`, size, "a GSO segment size must be at least 1");
      }
      const features = v.getUint16(off + EXTRA_INFO.gso.features, true);
      return { extra: { type, size, gsoType, features }, more };
    }
    case EXTRA_TYPE.mcastAdd:
    case EXTRA_TYPE.mcastDel: {
      const addr = new Uint8Array(6);
      for (let i = 0; i < 6; i++) addr[i] = v.getUint8(off + EXTRA_INFO.mcast.addr + i);
      return { extra: { type, addr }, more };
    }
    case EXTRA_TYPE.hash: {
      const hashType = v.getUint8(off + EXTRA_INFO.hash.type);
      const alg = v.getUint8(off + EXTRA_INFO.hash.alg);
      const value = v.getUint32(off + EXTRA_INFO.hash.value, true);
      return { extra: { type, hashType, alg, value }, more };
    }
    default:
      return new ProtocolError(
        "BAD_EXTRA_TYPE",
        `${field}.type`,
        type,
        `expected 1..${EXTRA_TYPE_MAX - 1} (gso, mcast_add, mcast_del, hash)`,
      );
  }
}
