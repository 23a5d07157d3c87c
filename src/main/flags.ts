/** Checksum flags per direction: TX and RX give the same two facts different bits. */
import { NETRXF, NETTXF } from "../protocol/netif.ts";
import type { FlagCodec } from "./device.ts";

export const txFlags: FlagCodec = {
  encode: (o) => (o?.csumBlank ? NETTXF.csumBlank : 0) | (o?.dataValidated ? NETTXF.dataValidated : 0),
  decode: (f) => ({ csumBlank: (f & NETTXF.csumBlank) !== 0, dataValidated: (f & NETTXF.dataValidated) !== 0 }),
};

export const rxFlags: FlagCodec = {
  encode: (o) => (o?.csumBlank ? NETRXF.csumBlank : 0) | (o?.dataValidated ? NETRXF.dataValidated : 0),
  decode: (f) => ({ csumBlank: (f & NETRXF.csumBlank) !== 0, dataValidated: (f & NETRXF.dataValidated) !== 0 }),
};
