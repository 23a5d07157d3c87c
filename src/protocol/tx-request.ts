/** netif_tx_request: 12 bytes, the front end's "send this fragment" slot. */

export const TX_REQUEST_SIZE = 12;
export const TX_REQUEST = { gref: 0, offset: 4, flags: 6, id: 8, size: 10 } as const;

export interface TxRequest {
  gref: number;
  offset: number;
  flags: number;
  id: number;
  /** First request of a packet: the whole packet's size; later ones: their fragment's. */
  size: number;
}

export function encodeTxRequest(v: DataView, off: number, r: TxRequest): void {
  v.setUint32(off + TX_REQUEST.gref, r.gref, true);
  v.setUint16(off + TX_REQUEST.offset, r.offset, true);
  v.setUint16(off + TX_REQUEST.flags, r.flags, true);
  v.setUint16(off + TX_REQUEST.id, r.id, true);
  v.setUint16(off + TX_REQUEST.size, r.size, true);
}

/** Copy a slot out of shared memory; validate the copy, never the slot (the peer may rewrite it). */
export function decodeTxRequest(v: DataView, off: number, into: TxRequest = emptyTxRequest()): TxRequest {
  into.gref = v.getUint32(off + TX_REQUEST.gref, true);
  into.offset = v.getUint16(off + TX_REQUEST.offset, true);
  into.flags = v.getUint16(off + TX_REQUEST.flags, true);
  into.id = v.getUint16(off + TX_REQUEST.id, true);
  into.size = v.getUint16(off + TX_REQUEST.size, true);
  return into;
}

export function emptyTxRequest(): TxRequest {
  return { gref: 0, offset: 0, flags: 0, id: 0, size: 0 };
}
