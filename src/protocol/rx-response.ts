/** netif_rx_response: 8 bytes, the back end's "id now holds status bytes at offset" slot. */

export const RX_RESPONSE_SIZE = 8;
export const RX_RESPONSE = { id: 0, offset: 2, flags: 4, status: 6 } as const;

export interface RxResponse {
  id: number;
  offset: number;
  flags: number;
  /** Bytes in this fragment when >= 0; a NETIF_RSP error when < 0. */
  status: number;
}

export function encodeRxResponse(v: DataView, off: number, r: RxResponse): void {
  v.setUint16(off + RX_RESPONSE.id, r.id, true);
  v.setUint16(off + RX_RESPONSE.offset, r.offset, true);
  v.setUint16(off + RX_RESPONSE.flags, r.flags, true);
  v.setInt16(off + RX_RESPONSE.status, r.status, true);
}

export function decodeRxResponse(v: DataView, off: number, into: RxResponse = emptyRxResponse()): RxResponse {
  into.id = v.getUint16(off + RX_RESPONSE.id, true);
  into.offset = v.getUint16(off + RX_RESPONSE.offset, true);
  into.flags = v.getUint16(off + RX_RESPONSE.flags, true);
  into.status = v.getInt16(off + RX_RESPONSE.status, true);
  return into;
}

export function emptyRxResponse(): RxResponse {
  return { id: 0, offset: 0, flags: 0, status: 0 };
}
