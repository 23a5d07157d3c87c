/**
 * Frame info per direction: TX and RX give the same checksum facts different bits.
 *
 * Decoding runs once per received frame. Without GSO the info is one of four values, so those
 * are made once and frozen, and handed out again and again (a listener may keep one: it never
 * changes); only a frame with GSO gets an object of its own.
 */
import { NETRXF, NETTXF } from "../protocol/netif.ts";
import type { FlagCodec, FrameInfo } from "./device.ts";
import { metaGso } from "../workers/frame-meta.ts";

function codec(csumBlank: number, dataValidated: number): FlagCodec {
  const plain: FrameInfo[] = [0, 1, 2, 3].map((i) => Object.freeze({ csumBlank: (i & 1) !== 0, dataValidated: (i & 2) !== 0, gso: null }));
  return {
    encode: (o) => (o?.csumBlank ? csumBlank : 0) | (o?.dataValidated ? dataValidated : 0),
    decode: (m) => {
      const gso = metaGso(m);
      const b = (m & csumBlank) !== 0;
      const v = (m & dataValidated) !== 0;
      return gso === null ? plain[(b ? 1 : 0) | (v ? 2 : 0)]! : { csumBlank: b, dataValidated: v, gso };
    },
  };
}

export const txFlags: FlagCodec = codec(NETTXF.csumBlank, NETTXF.dataValidated);
export const rxFlags: FlagCodec = codec(NETRXF.csumBlank, NETRXF.dataValidated);
