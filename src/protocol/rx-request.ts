/** netif_rx_request: 8 bytes, the front end's "here is an empty page, id" slot. */

export const RX_REQUEST_SIZE = 8;
export const RX_REQUEST = { id: 0, gref: 4 } as const;

export interface RxRequest {
  id: number;
  gref: number;
}

export function encodeRxRequest(v: DataView, off: number, r: RxRequest): void {
  v.setUint16(off + RX_REQUEST.id, r.id, true);
  v.setUint16(off + 2, 0, true); // pad
  v.setUint32(off + RX_REQUEST.gref, r.gref, true);
}

export function decodeRxRequest(v: DataView, off: number, into: RxRequest = { id: 0, gref: 0 }): RxRequest {
  into.id = v.getUint16(off + RX_REQUEST.id, true);
  into.gref = v.getUint32(off + RX_REQUEST.gref, true);
  return into;
}
