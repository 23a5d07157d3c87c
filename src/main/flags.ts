/** Frame info per direction: TX and RX give the same checksum facts different bits. */
import { NETRXF, NETTXF } from "../protocol/netif.ts";
import type { FlagCodec } from "./device.ts";
import { metaGso } from "../workers/frame-meta.ts";

export const txFlags: FlagCodec = {
  encode: (o) => (o?.csumBlank ? NETTXF.csumBlank : 0) | (o?.dataValidated ? NETTXF.dataValidated : 0),
  decode: (m) => ({ csumBlank: (m & NETTXF.csumBlank) !== 0, dataValidated: (m & NETTXF.dataValidated) !== 0, gso: metaGso(m) }),
};

export const rxFlags: FlagCodec = {
  encode: (o) => (o?.csumBlank ? NETRXF.csumBlank : 0) | (o?.dataValidated ? NETRXF.dataValidated : 0),
  decode: (m) => ({ csumBlank: (m & NETRXF.csumBlank) !== 0, dataValidated: (m & NETRXF.dataValidated) !== 0, gso: metaGso(m) }),
};
